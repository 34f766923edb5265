// CanBridge test stub of gui-v2's PageManager: pushPage() records what would be pushed.
import QtQuick

QtObject {
	property string _stubLastUrl
	property var _stubLastProperties

	function pushPage(obj, properties) {
		_stubLastUrl = String(obj)
		_stubLastProperties = properties
	}
}
