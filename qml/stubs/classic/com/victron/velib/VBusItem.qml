// CanBridge test stub of velib's VBusItem ("bind" is "<service>/<path>").
import QtQuick

QtObject {
	id: item

	property string bind
	property var value
	readonly property bool valid: value !== undefined
	property string text: value === undefined ? "" : String(value)
	property string unit
	property int decimals
	property real step: 1
	property real min: NaN
	property real max: NaN

	function setValue(newValue) {
		if (StubBus._stubBackend)
			return StubBus._stubBackend.setValue("dbus/" + bind, newValue)
		value = newValue
		return 0
	}

	function _stubAttach() {
		if (StubBus._stubBackend && bind.length > 0)
			StubBus._stubBackend.attach(item)
	}

	onBindChanged: _stubAttach()
	Component.onCompleted: _stubAttach()
}
