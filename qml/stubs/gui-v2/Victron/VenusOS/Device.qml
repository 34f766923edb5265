// CanBridge test stub of gui-v2's Device.
import QtQuick

QtObject {
	property string serviceUid
	property string serviceType
	property int deviceInstance: -1
	property int productId
	property string productName
	property string customName
	property string name
	property bool valid: serviceUid.length > 0
}
