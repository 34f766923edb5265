// CanBridge test stub of gui-v2's ListRadioButtonGroup: shows the label of the current option.
import QtQuick

StubListRow {
	id: root

	readonly property alias dataItem: stubData
	property var optionModel: []
	property int currentIndex: {
		for (let i = 0; i < optionModel.length; ++i) {
			if (optionModel[i].value === stubData.value)
				return i
		}
		return -1
	}
	readonly property var currentValue: currentIndex >= 0 ? optionModel[currentIndex].value : undefined
	property bool updateDataOnClick: true

	signal optionClicked(int index)
	signal clicked()

	function _stubChoose(index) {
		if (updateDataOnClick)
			stubData.setValue(optionModel[index].value)
		root.optionClicked(index)
	}

	_stubValueText: currentIndex >= 0 ? optionModel[currentIndex].display : "--"

	VeQuickItem {
		id: stubData
	}
}
