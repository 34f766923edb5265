// CanBridge test stub of gui-v2's Global singleton (names from qml/stubs/pinned_api.json).
pragma Singleton
import QtQuick

QtObject {
	property SystemSettings systemSettings: SystemSettings {}
	readonly property int int32Max: 2147483647
	readonly property int int32Min: -2147483648
	property var pageManager: PageManager {}
	property var venusPlatform: VenusPlatform {}
	property var system: null
	// Stub only: the Python object that backs every VeQuickItem (see tests/qml/stubdata.py).
	property var _stubBackend: null
}
