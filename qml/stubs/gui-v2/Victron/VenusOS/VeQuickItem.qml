// CanBridge test stub of veutil's VeQuickItem: value, min and max come from the Python object in
// Global._stubBackend (an in-memory store, or the settings service on a private D-Bus).
import QtQuick

QtObject {
	id: item

	property string uid
	property var value
	property real min: NaN
	property real max: NaN
	property string text
	property string unit
	property int decimals
	property bool isSetting
	property bool seen

	function setValue(newValue) {
		const backend = Global._stubBackend
		if (backend)
			return backend.setValue(uid, newValue)
		value = newValue
		return 0
	}

	function _stubAttach() {
		if (Global._stubBackend && uid.length > 0)
			Global._stubBackend.attach(item)
	}

	onUidChanged: _stubAttach()
	Component.onCompleted: _stubAttach()
}
