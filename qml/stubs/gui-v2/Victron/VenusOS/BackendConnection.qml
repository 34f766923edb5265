// CanBridge test stub of gui-v2's BackendConnection singleton: service uids with the same
// prefix ("mock/", "dbus/") as Global.systemSettings.serviceUid.
pragma Singleton
import QtQuick

QtObject {
	function serviceUidForType(serviceType) {
		return serviceUidFromName("com.victronenergy." + serviceType, 0)
	}

	function serviceUidFromName(serviceName, deviceInstance) {
		const uid = Global.systemSettings.serviceUid
		const prefix = uid.indexOf("/") >= 0 ? uid.split("/")[0] : "mock"
		return prefix + "/" + serviceName
	}
}
