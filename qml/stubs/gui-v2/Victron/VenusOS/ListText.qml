// CanBridge test stub of gui-v2's ListText.
import QtQuick

StubListRow {
	readonly property alias dataItem: stubData
	_stubValueColor: "#9e9e9e"

	VeQuickItem {
		id: stubData
	}
}
