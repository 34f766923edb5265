// CanBridge test stub of the classic gui's MbOption.
import QtQuick

QtObject {
	property string description
	property var value
}
