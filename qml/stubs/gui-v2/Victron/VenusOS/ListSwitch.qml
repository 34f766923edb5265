// CanBridge test stub of gui-v2's ListSwitch.
import QtQuick

StubListRow {
	id: root

	readonly property alias dataItem: stubData
	property var valueTrue: 1
	property var valueFalse: 0
	property bool invertSourceValue
	property bool checked: invertSourceValue ? stubData.value === valueFalse : stubData.value === valueTrue
	property bool updateDataOnClick: true

	signal clicked()

	function _stubTap() {
		if (updateDataOnClick)
			stubData.setValue(checked ? valueFalse : valueTrue)
		root.clicked()
	}

	_stubValueText: stubData.value === undefined ? "--" : (checked ? "[ ON ]" : "[ OFF ]")

	VeQuickItem {
		id: stubData
	}
}
