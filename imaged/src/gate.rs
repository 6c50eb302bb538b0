//! The promotion gate's pure core: whether a generation meets a channel's policy, given the
//! evidence and approvals recorded for it. No IO; `gate_api.rs` is the HTTP side.
//!
//! A required test counts when the newest run of it (by the statement's time, then arrival)
//! signed by a key the policy lists as a tester passed: a failure after a pass takes the
//! pass back. Approvals count once per distinct key the policy lists as an approver. Every
//! signature is checked again here, so a record altered in the database counts for nothing.

use api::gate::{Approval, ChannelPolicy, Evidence, Missing, Signed};
use api::tuf::TufKey;
use format::{Classification, Digest, Manifest};
use trust::keys::PublicKey;

/// A channel's verdict on a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The channel may name it.
    Met,
    /// It lacks these tests and approvals.
    Missing(Missing),
}

impl Verdict {
    /// What is missing; empty when met.
    pub fn missing(self) -> Missing {
        match self {
            Verdict::Met => Missing::default(),
            Verdict::Missing(m) => m,
        }
    }
}

/// A key as the API carries it, checked.
pub fn public_key(key: &TufKey) -> Option<PublicKey> {
    PublicKey::from_value(&serde_json::to_value(key).ok()?).ok()
}

/// The signer of a statement if its signature verifies.
pub fn signer<S>(signed: &Signed<S>, message: &[u8]) -> Option<PublicKey> {
    let key = public_key(&signed.key)?;
    key.verifies(message, &signed.signature).then_some(key)
}

/// Whether `key` is one of `listed` (compared by key material, not by how it is spelled).
pub fn listed(key: &PublicKey, listed: &[TufKey]) -> bool {
    listed.iter().filter_map(public_key).any(|k| k == *key)
}

/// The classification a generation's manifest gives it: its change record's, else normal
/// (no change record, or one this server cannot read: the stricter rule applies).
pub fn classification(manifest: &Manifest) -> Classification {
    match manifest.change() {
        Some(Ok(change)) => change.classification,
        _ => Classification::Normal,
    }
}

/// Whether the generation `manifest` of class `class` meets `policy`.
pub fn evaluate(policy: &ChannelPolicy, class: Classification, manifest: &Digest, evidence: &[Evidence], approvals: &[Approval]) -> Verdict {
    let rule = policy.rule(class);
    let mut missing = Missing::default();
    for test in &rule.tests {
        let newest = evidence
            .iter()
            .enumerate()
            .filter(|(_, e)| e.statement.manifest == *manifest && e.statement.test == *test)
            .filter(|(_, e)| signer(e, &e.statement.signed_bytes()).is_some_and(|k| listed(&k, &policy.testers)))
            .max_by_key(|(i, e)| (e.statement.time, *i));
        if !newest.is_some_and(|(_, e)| e.statement.outcome.passed()) {
            missing.tests.push(test.clone());
        }
    }
    let mut approvers: Vec<PublicKey> = Vec::new();
    for a in approvals.iter().filter(|a| a.statement.manifest == *manifest) {
        if let Some(k) = signer(a, &a.statement.signed_bytes()).filter(|k| listed(k, &policy.approvers)) {
            if !approvers.contains(&k) {
                approvers.push(k);
            }
        }
    }
    missing.approvals = rule.approvals.saturating_sub(approvers.len() as u32);
    if missing.is_empty() {
        Verdict::Met
    } else {
        Verdict::Missing(missing)
    }
}
