//! What the error stream (channel 3) says at the end of a session.
//!
//! v4 and later carry a JSON metav1.Status: `Success`, or `Failure` with
//! reason `NonZeroExitCode` and the code as an `ExitCode` cause, which
//! client-go turns into the exit code kubectl exits with; any other failure
//! is an `InternalError`. Older protocols carry only the failure's message
//! as text, and nothing on success.

use serde_json::json;

use super::session::Outcome;

/// The error stream's payload; `None` means write nothing.
pub fn payload(outcome: &Outcome, json_status: bool) -> Option<Vec<u8>> {
    let (message, reason, cause, code) = match outcome {
        Outcome::ClientGone => return None,
        Outcome::Exited(0) | Outcome::Detached => {
            let success = json!({"metadata": {}, "status": "Success"});
            return json_status.then(|| success.to_string().into_bytes());
        }
        Outcome::Exited(code) => (
            format!("command terminated with non-zero exit code: exit status {code}"),
            "NonZeroExitCode",
            json!({"reason": "ExitCode", "message": code.to_string()}),
            None,
        ),
        Outcome::Failed(error) => (
            format!("Internal error occurred: {error}"),
            "InternalError",
            json!({"message": error}),
            Some(500),
        ),
    };
    if !json_status {
        return Some(message.into_bytes());
    }
    let mut status = json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"causes": [cause]},
    });
    if let Some(code) = code {
        status["code"] = json!(code);
    }
    Some(status.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(outcome: &Outcome) -> serde_json::Value {
        let bytes = payload(outcome, true).unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or_default()
    }

    #[test]
    fn v4_status_carries_the_exit_code_as_a_cause() {
        let s = parsed(&Outcome::Exited(3));
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(parsed(&Outcome::Exited(0))["status"], "Success");
        assert_eq!(parsed(&Outcome::Detached)["status"], "Success");
        let s = parsed(&Outcome::Failed("no such file".into()));
        assert_eq!(
            (s["reason"].as_str(), s["code"].as_i64()),
            (Some("InternalError"), Some(500))
        );
    }

    #[test]
    fn older_protocols_get_text_for_failures_only() {
        assert_eq!(payload(&Outcome::Exited(0), false), None);
        let text = payload(&Outcome::Exited(2), false).unwrap_or_default();
        assert!(String::from_utf8_lossy(&text).contains("exit status 2"));
        assert_eq!(payload(&Outcome::ClientGone, true), None);
    }
}
