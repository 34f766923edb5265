// CanBridge test stub of gui-v2's VisibleItemModel (hidden items take no room, see StubListRow).
import QtQml.Models

ObjectModel {
}
