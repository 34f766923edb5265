// CanBridge test stub of gui-v2's DeviceListPluginPage.
import QtQuick

Page {
	required property Device device
}
