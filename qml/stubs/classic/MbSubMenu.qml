// CanBridge test stub of the classic gui's MbSubMenu.
import QtQuick

StubMbRow {
	property string description
	_stubLabel: description
	property Component subpage
	_stubValueText: ">"
}
