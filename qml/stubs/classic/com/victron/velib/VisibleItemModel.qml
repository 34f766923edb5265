// CanBridge test stub of the classic gui's VisibleItemModel.
import QtQml.Models

ObjectModel {
}
