// CanBridge test stub only (not a classic gui type): holds the Python object backing VBusItem.
pragma Singleton
import QtQuick

QtObject {
	property var _stubBackend: null
}
