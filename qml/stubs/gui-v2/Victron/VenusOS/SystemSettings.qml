// CanBridge test stub of gui-v2's SystemSettings.
import QtQuick

QtObject {
	// "dbus/com.victronenergy.settings" on a GX, "mqtt/settings/0" in a browser.
	property string serviceUid: "mock/com.victronenergy.settings"
	property int accessLevel: VenusOS.User_AccessType_Installer

	function canAccess(level) {
		return accessLevel >= level
	}
}
