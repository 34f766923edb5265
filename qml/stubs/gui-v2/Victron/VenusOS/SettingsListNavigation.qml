// CanBridge test stub of gui-v2's SettingsListNavigation (the real one pushes pageSource).
import QtQuick

StubListRow {
	id: root

	property string pageSource
	property string iconSource
	property var pageProperties: ({ "title": root.text })

	signal clicked()

	function _stubTap() {
		root.clicked()
	}

	_stubValueText: secondaryText.length ? secondaryText + "  >" : ">"
	_stubValueColor: "#9e9e9e"
}
