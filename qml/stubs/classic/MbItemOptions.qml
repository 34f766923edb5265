// CanBridge test stub of the classic gui's MbItemOptions.
import QtQuick
import com.victron.velib 1.0

StubMbRow {
	property string description
	_stubLabel: description
	id: root

	property string bind
	property list<MbOption> possibleValues

	_stubValueText: {
		for (let i = 0; i < possibleValues.length; ++i) {
			if (possibleValues[i].value === stubItem.value)
				return possibleValues[i].description
		}
		return "--"
	}

	property VBusItem _stubItem: VBusItem {
		id: stubItem
		bind: root.bind
	}
}
