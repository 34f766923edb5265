// CanBridge test stub of gui-v2's VenusPlatform (data/VenusPlatform.qml): the platform service.
import QtQuick

QtObject {
	readonly property string serviceUid: BackendConnection.serviceUidForType("platform")
}
