import QtQuick 2
import com.victron.velib 1.0

MbPage {
	title: "CanBridge"
	model: VisibleItemModel {
		MbSpinBox {
			description: "Charge voltage"
			item { bind: "com.victronenergy.settings/Settings/CanBridge/Superb/ChargeVoltage"; unit: "V"; decimals: 1; step: 0.1 }
		}
	}
}
