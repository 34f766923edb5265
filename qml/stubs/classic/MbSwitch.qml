// CanBridge test stub of the classic gui's MbSwitch.
import QtQuick
import com.victron.velib 1.0

StubMbRow {
	id: root

	property string name
	property string bind

	_stubLabel: name
	_stubValueText: stubItem.value === undefined ? "--" : (stubItem.value ? "[ ON ]" : "[ OFF ]")

	property VBusItem _stubItem: VBusItem {
		id: stubItem
		bind: root.bind
	}
}
