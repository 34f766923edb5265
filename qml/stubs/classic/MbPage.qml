// CanBridge test stub of the classic gui's MbPage.
import QtQuick

Item {
	id: page

	property string title
	property var model

	width: parent ? parent.width : 480
	height: parent ? parent.height : 272

	ListView {
		objectName: "stubListView"
		anchors.fill: parent
		model: page.model
	}
}
