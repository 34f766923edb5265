// CanBridge test stub of the classic gui's MbEditBox.
import QtQuick
import com.victron.velib 1.0

StubMbRow {
	property string description
	_stubLabel: description
	property VBusItem item: VBusItem {}
	property int maximumLength
	_stubValueText: item.value === undefined ? "--" : String(item.value)
}
