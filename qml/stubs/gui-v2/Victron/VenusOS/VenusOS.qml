// CanBridge test stub of gui-v2's VenusOS enums (values named in qml/stubs/pinned_api.json).
pragma Singleton
import QtQuick

QtObject {
	enum AccessType {
		User_AccessType_User = 0,
		User_AccessType_Installer = 1,
		User_AccessType_SuperUser = 2,
		User_AccessType_Service = 3
	}
	enum InputValidationResult {
		InputValidation_Result_OK = 1,
		InputValidation_Result_Warning = 2,
		InputValidation_Result_Error = 3
	}
}
