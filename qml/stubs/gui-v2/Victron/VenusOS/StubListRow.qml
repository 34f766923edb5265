// CanBridge test stub: the row every stub list item draws (not a gui-v2 type; internal).
// Only names that every list item using it has in gui-v2 (pinned_api.json) are declared here.
import QtQuick

Item {
	id: row

	property string text
	property string caption
	property string secondaryText
	property bool preferredVisible: true
	property int showAccessLevel: VenusOS.User_AccessType_User
	property int writeAccessLevel: VenusOS.User_AccessType_Installer
	readonly property bool userHasWriteAccess: Global.systemSettings.canAccess(writeAccessLevel)
	property bool interactive: true
	property string _stubValueText: secondaryText
	property color _stubValueColor: "#64b5f6"

	function _stubTap() {
	}

	visible: preferredVisible
	width: ListView.view ? ListView.view.width - ListView.view.leftMargin - ListView.view.rightMargin : 768
	height: visible ? Math.max(56, content.implicitHeight + 24) : 0

	Rectangle {
		anchors.fill: parent
		radius: 8
		color: "#1e1e1e"
	}
	Column {
		id: content
		x: 16
		y: 12
		width: row.width - 32
		spacing: 4
		Item {
			width: parent.width
			height: Math.max(label.implicitHeight, valueLabel.implicitHeight)
			Text {
				id: label
				width: parent.width - valueLabel.implicitWidth - 16
				text: row.text
				color: "#ffffff"
				font.pixelSize: 20
				wrapMode: Text.Wrap
			}
			Text {
				id: valueLabel
				anchors.right: parent.right
				text: row._stubValueText
				color: row._stubValueColor
				font.pixelSize: 20
			}
		}
		Text {
			width: parent.width
			visible: text.length > 0
			text: row.caption
			color: "#9e9e9e"
			font.pixelSize: 14
			wrapMode: Text.Wrap
		}
	}
	MouseArea {
		anchors.fill: parent
		enabled: row.interactive && row.userHasWriteAccess
		onClicked: row._stubTap()
	}
}
