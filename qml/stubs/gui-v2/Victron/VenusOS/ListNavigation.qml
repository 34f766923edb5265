// CanBridge test stub of gui-v2's ListNavigation (a tap emits clicked(); the page's handler
// calls Global.pageManager.pushPage, which the PageManager stub records).
import QtQuick

StubListRow {
	id: root

	signal clicked()

	function _stubTap() {
		root.clicked()
	}

	_stubValueText: secondaryText.length ? secondaryText + "  >" : ">"
	_stubValueColor: "#9e9e9e"
}
