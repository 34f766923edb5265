// CanBridge test stub of gui-v2's ListSpinBox. The real one opens a number selector; the stub's
// _stubAccept(value) does what accepting that selector does: write the value, then signal it.
import QtQuick

StubListRow {
	id: root

	readonly property alias dataItem: stubData
	property real value: typeof stubData.value === "number" ? stubData.value : NaN
	property string suffix
	property int decimals
	property real from: !isNaN(stubData.min) ? stubData.min : 0
	property real to: !isNaN(stubData.max) ? stubData.max : Global.int32Max / Math.pow(10, decimals)
	property real stepSize: 1
	property var presets: []

	signal selectorAccepted(var newValue)

	function _stubAccept(newValue) {
		const bounded = Math.min(root.to, Math.max(root.from, newValue))
		stubData.setValue(bounded)
		root.selectorAccepted(bounded)
	}

	_stubValueText: isNaN(value) ? "--" : value.toFixed(decimals) + (suffix.length ? " " + suffix : "")

	VeQuickItem {
		id: stubData
	}
}
