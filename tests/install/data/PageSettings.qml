import QtQuick 2
import com.victron.velib 1.0
import "utils.js" as Utils

// A small stand-in for the classic gui's stock Settings page (written for the tests, with the
// shape of the real one: an MbPage whose model lists MbSubMenu entries).
MbPage {
	id: root
	title: qsTr("Settings")
	property string bindPrefix: "com.victronenergy.settings"

	model: VisibleItemModel {
		MbSubMenu {
			description: qsTr("General")
			subpage: Component { PageSettingsGeneral {} }
		}

		MbSubMenu {
			description: qsTr("Firmware")
			subpage: Component { PageSettingsFirmware {} }
		}

		MbSubMenu {
			description: qsTr("Services")
			subpage: Component { PageSettingsServices { title: qsTr("Services {and} more") } }
		}

		MbSubMenu {
			description: qsTr("Debug")
			show: user.accessLevel >= User.AccessService
			subpage: Component { PageDebug {} }
		}
	}
}
