// CanBridge test harness for classic pages: a title bar and a Loader (480x272 like the CCGX).
import QtQuick

Rectangle {
	id: harness

	readonly property string pageTitle: loader.item ? loader.item.title : ""

	width: 480
	height: 272
	color: "#ffffff"

	function loadPlain(url) {
		loader.setSource(url)
	}

	Rectangle {
		id: bar
		width: parent.width
		height: 32
		color: "#4790d0"
		Text {
			anchors.centerIn: parent
			text: harness.pageTitle
			color: "#ffffff"
			font.pixelSize: 16
		}
	}
	Loader {
		id: loader
		objectName: "loader"
		anchors.top: bar.bottom
		width: parent.width
		height: parent.height - bar.height
	}
}
