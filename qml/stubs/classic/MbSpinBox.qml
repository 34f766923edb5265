// CanBridge test stub of the classic gui's MbSpinBox.
import QtQuick
import com.victron.velib 1.0

StubMbRow {
	property string description
	_stubLabel: description
	property VBusItem item: VBusItem {}
	_stubValueText: typeof item.value === "number"
		? item.value.toFixed(item.decimals) + (item.unit.length ? item.unit : "") : "--"
}
