//! What a restore-test found: the record, where the throwaway server ran,
//! how it ended; how a person reads it, and the exit code it means.

use crate::cmd::Failure;
use crate::ops::restore_test::RestoreTestReport;
use crate::snapshot::manifest::{RestoreTestRecord, RestoreTestResult};
use crate::transport::scratch::Memory;
use anyhow::anyhow;

/// What a restore-test found, as printed and as `-o json|yaml` shows it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Outcome {
    pub snapshot: String,
    #[serde(flatten)]
    pub record: RestoreTestRecord,
    /// Where the throwaway server listened, when one was started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<RestoreTestReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// The throwaway server was stopped and its folder removed (checked).
    pub server_removed: bool,
    /// The result was written into the manifest.
    pub recorded: bool,
    /// The test was refused before it could start (no room on the data
    /// volume, no seal configuration the throwaway server can take up): a
    /// precondition to fix, not a run to repeat.
    #[serde(skip)]
    pub refused: bool,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.record.result == RestoreTestResult::Passed
    }

    /// The outcome as a command result: passed is success; a snapshot that
    /// failed is a refusal (exit 1); a test that could not run, or a
    /// throwaway server that was not removed, is a failure (exit 2).
    pub fn into_result(self) -> Result<(), Failure> {
        let reason = self.record.reason.clone().unwrap_or_default();
        let object = self.snapshot.clone();
        match self.record.result {
            RestoreTestResult::Passed if self.server_removed => Ok(()),
            RestoreTestResult::Passed => Err(Failure::failed(anyhow!(
                "the restore-test of {object} passed, but its throwaway server was not confirmed removed; its watchdog kills it within the timeout"
            ))),
            RestoreTestResult::Failed => Err(Failure::refused(anyhow!(
                "the restore-test of {object} failed: {reason}; take a new snapshot (`kubectl vault snapshot save`) and test it"
            ))),
            RestoreTestResult::Error if self.refused => Err(Failure::refused(anyhow!(
                "the restore-test of {object} could not start: {reason}"
            ))),
            RestoreTestResult::Error => Err(Failure::failed(anyhow!(
                "the restore-test of {object} could not run: {reason}; re-run `kubectl vault snapshot verify --restore-test`"
            ))),
        }
    }

    /// The sentences a person reads.
    pub fn text(&self) -> String {
        let r = &self.record;
        let mut text = match r.result {
            RestoreTestResult::Passed => {
                let place = format!(
                    "restored into a throwaway server in pod {}{}",
                    r.pod,
                    self.server
                        .as_deref()
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default()
                );
                let through_seal = self
                    .report
                    .as_ref()
                    .and_then(|rp| Some((rp.seal.as_deref()?, rp.recovery_keys_verified)));
                let mut t = match through_seal {
                    Some((seal, recovery)) => format!(
                        "Restore-test of {} passed: {place}, opened by the live server's {seal} seal, and again by it after a restart; the stored root token {} of key generation {} {} the restored data's",
                        self.snapshot,
                        if recovery.is_some() {
                            "and recovery keys"
                        } else {
                            "(no recovery keys are stored)"
                        },
                        r.generation,
                        if recovery.is_some() { "are" } else { "is" }
                    ),
                    None => format!(
                        "Restore-test of {} passed: {place} and unsealed with key generation {}",
                        self.snapshot, r.generation
                    ),
                };
                if let Some(report) = self.report.as_ref().filter(|rp| rp.seal.is_none()) {
                    t.push_str(&format!(" ({} shares)", report.shares_submitted));
                    if report.root_token_valid {
                        t.push_str("; a stored root token is valid in it");
                    }
                }
                if let Some(path) = &r.sentinel {
                    t.push_str(&format!("; sentinel {path} read"));
                }
                t.push_str(".\n");
                t
            }
            result => format!(
                "Restore-test of {} {}: {}.\n",
                self.snapshot,
                result.name(),
                r.reason.as_deref().unwrap_or("no reason recorded")
            ),
        };
        if let Some(m) = &self.memory {
            text.push_str(&format!(
                "The throwaway server's peak memory: {} MiB.\n",
                m.peak_rss_bytes.div_ceil(1024 * 1024)
            ));
        }
        if self.server.is_some() {
            text.push_str(if self.server_removed {
                "The throwaway server was stopped and its folder removed.\n"
            } else {
                "The throwaway server was not confirmed removed; its watchdog kills it and removes its folder.\n"
            });
        }
        text.push_str(&format!(
            "Took {:.1} s; {}.\n",
            r.duration_ms as f64 / 1000.0,
            if self.recorded {
                "recorded in the manifest"
            } else {
                "NOT recorded in the manifest"
            }
        ));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::Exit;

    fn outcome(result: RestoreTestResult, refused: bool) -> Outcome {
        Outcome {
            snapshot: "s3://b/p/x.snap".into(),
            record: RestoreTestRecord {
                result,
                at: "2026-01-01T00:00:00Z".into(),
                generation: 1,
                pod: "openbao-1".into(),
                reason: Some(
                    "the data volume /openbao/data of pod openbao-1 has 1 MiB free".into(),
                ),
                peak_memory_bytes: None,
                sentinel: None,
                duration_ms: 5,
            },
            server: None,
            report: None,
            memory: None,
            server_removed: false,
            recorded: true,
            refused,
        }
    }

    #[test]
    fn a_pass_through_the_seal_says_what_opened_the_data_and_what_was_checked() {
        let mut passed = outcome(RestoreTestResult::Passed, false);
        passed.record.reason = None;
        passed.record.sentinel = Some("kv/sentinel".into());
        passed.server = Some("127.0.0.1:41234".into());
        passed.server_removed = true;
        passed.report = Some(RestoreTestReport {
            generation: 1,
            shares_submitted: 0,
            seal: Some("transit".into()),
            recovery_keys_verified: Some(true),
            root_token_valid: true,
            sentinel: Some("kv/sentinel".into()),
        });
        let text = passed.text();
        assert!(
            text.starts_with(
                "Restore-test of s3://b/p/x.snap passed: restored into a throwaway server in pod openbao-1 (127.0.0.1:41234), opened by the live server's transit seal, and again by it after a restart; the stored root token and recovery keys of key generation 1 are the restored data's; sentinel kv/sentinel read.\n"
            ),
            "{text}"
        );
        assert!(!text.contains("shares"), "no share opened it: {text}");
        // A generation stored without recovery keys had none to check.
        let mut without = passed;
        without.report.as_mut().unwrap().recovery_keys_verified = None;
        let text = without.text();
        assert!(
            text.contains("the stored root token (no recovery keys are stored) of key generation 1 is the restored data's"),
            "{text}"
        );
        assert!(without.into_result().is_ok());
    }

    #[test]
    fn no_room_is_a_refusal_and_a_test_that_could_not_run_a_failure() {
        let refused = outcome(RestoreTestResult::Error, true)
            .into_result()
            .unwrap_err();
        assert!(matches!(refused.exit, Exit::Refused));
        let text = format!("{:#}", refused.error);
        assert!(text.contains("could not start: the data volume"), "{text}");
        assert!(!text.contains("re-run `kubectl vault"), "{text}");
        let failed = outcome(RestoreTestResult::Error, false)
            .into_result()
            .unwrap_err();
        assert!(matches!(failed.exit, Exit::Failed));
        let failed_snapshot = outcome(RestoreTestResult::Failed, false)
            .into_result()
            .unwrap_err();
        assert!(matches!(failed_snapshot.exit, Exit::Refused));
    }
}
