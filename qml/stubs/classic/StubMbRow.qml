// CanBridge test stub: the row every classic stub item draws (not a classic gui type).
import QtQuick

Item {
	id: row

	property string _stubLabel
	property bool show: true
	property int writeAccessLevel: 1
	property string _stubValueText

	visible: show
	width: ListView.view ? ListView.view.width : 480
	height: visible ? 35 : 0

	Rectangle {
		anchors.fill: parent
		color: "#ffffff"
		border.color: "#dddddd"
	}
	Text {
		x: 8
		anchors.verticalCenter: parent.verticalCenter
		text: row._stubLabel
		font.pixelSize: 14
		color: "#000000"
	}
	Text {
		anchors.right: parent.right
		anchors.rightMargin: 8
		anchors.verticalCenter: parent.verticalCenter
		text: row._stubValueText
		font.pixelSize: 14
		color: "#2a6fb0"
	}
}
