// CanBridge test harness: a title bar and a Loader, as gui-v2 shows a page pushed on its stack.
import QtQuick
import Victron.VenusOS

Rectangle {
	id: harness

	property Device device: Device {}
	readonly property string pageTitle: loader.item ? loader.item.title : ""

	width: 800
	height: 480
	color: "#000000"

	function load(url) {
		loader.setSource(url, { "device": harness.device })
	}

	function loadPlain(url) {
		loader.setSource(url)
	}

	Rectangle {
		id: bar
		width: parent.width
		height: 48
		color: "#272622"
		Text {
			anchors.centerIn: parent
			text: harness.pageTitle
			color: "#ffffff"
			font.pixelSize: 22
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
