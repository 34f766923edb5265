// CanBridge test stub of gui-v2's Utils library (function names from pinned_api.json).
.pragma library

function validationResult(status, notificationText, adjustedText) {
	return { status: status, notificationText: notificationText || "", adjustedText: adjustedText }
}
