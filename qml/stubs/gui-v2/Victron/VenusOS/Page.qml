// CanBridge test stub of gui-v2's Page.
import QtQuick

FocusScope {
	property string title
	property color backgroundColor: "#000000"

	width: parent ? parent.width : 800
	height: parent ? parent.height : 432

	Rectangle {
		anchors.fill: parent
		color: parent.backgroundColor
	}
}
