// CanBridge test stub of gui-v2's GradientListView.
import QtQuick

ListView {
	objectName: "stubListView"
	width: parent ? parent.width : 0
	height: parent ? parent.height : 0
	leftMargin: 16
	rightMargin: 16
	topMargin: 8
	bottomMargin: 8
	spacing: 6
	clip: true
}
