// CanBridge test stub of gui-v2's ListTextField. _stubAccept(text) does what finishing an edit
// does in gui-v2: validateInput(), then saveInput() unless the result is an error.
import QtQuick

StubListRow {
	id: root

	readonly property alias dataItem: stubData
	property string placeholderText
	property string suffix
	property var validateInput
	property var saveInput: function() {
		if (stubData.uid)
			stubData.setValue(root.secondaryText)
	}

	function _stubAccept(newText) {
		root.secondaryText = newText
		const validate = root.validateInput
		const save = root.saveInput
		const result = validate ? validate() : Utils.validationResult(VenusOS.InputValidation_Result_OK)
		if (result.status !== VenusOS.InputValidation_Result_Error)
			save()
		return result.status
	}

	secondaryText: stubData.value === undefined ? "" : String(stubData.value)
	_stubValueText: secondaryText.length ? secondaryText + (suffix.length ? " " + suffix : "") : "--"

	VeQuickItem {
		id: stubData
	}
}
