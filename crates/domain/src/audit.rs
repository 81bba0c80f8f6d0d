//! The tamper-evident audit log: each entry holds the hash of the one before it, so a changed, removed or
//! reordered entry breaks the chain at that point.

use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::identity::Role;
use crate::ids::UserId;

/// The hash before the first entry.
pub const GENESIS: Hash = Hash([0; 32]);

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Hash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Hash(out))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allowed,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "allowed" => Some(Outcome::Allowed),
            "denied" => Some(Outcome::Denied),
            _ => None,
        }
    }
}

/// One thing that happened, before it is given its place in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub actor: Option<UserId>,
    pub actor_role: Option<Role>,
    pub action: String,
    pub resource: String,
    pub subject_patient: Option<UserId>,
    pub outcome: Outcome,
    pub reason: String,
    pub request_id: String,
}

/// An event at its place in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainedEntry {
    pub seq: i64,
    pub event: AuditEvent,
    pub prev_hash: Hash,
    pub hash: Hash,
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    // Length-prefixed, so that moving text from one field to the next changes the hash.
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// The hash of an entry: its position, the previous hash and every field of the event.
pub fn entry_hash(seq: i64, prev: &Hash, e: &AuditEvent) -> Hash {
    let mut h = Sha256::new();
    h.update(b"confide-audit-v1");
    h.update(seq.to_be_bytes());
    h.update(prev.0);
    h.update(e.at_ms.to_be_bytes());
    field(
        &mut h,
        e.actor.map(|a| a.to_string()).unwrap_or_default().as_bytes(),
    );
    field(
        &mut h,
        e.actor_role.map(Role::as_str).unwrap_or_default().as_bytes(),
    );
    field(&mut h, e.action.as_bytes());
    field(&mut h, e.resource.as_bytes());
    field(
        &mut h,
        e.subject_patient
            .map(|a| a.to_string())
            .unwrap_or_default()
            .as_bytes(),
    );
    field(&mut h, e.outcome.as_str().as_bytes());
    field(&mut h, e.reason.as_bytes());
    field(&mut h, e.request_id.as_bytes());
    Hash(h.finalize().into())
}

/// Gives `event` the place after (`prev_seq`, `prev_hash`).
pub fn chain(prev_seq: i64, prev_hash: Hash, event: AuditEvent) -> ChainedEntry {
    let seq = prev_seq + 1;
    let hash = entry_hash(seq, &prev_hash, &event);
    ChainedEntry {
        seq,
        event,
        prev_hash,
        hash,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("entry {seq} was changed: its contents do not match its hash")]
    Changed { seq: i64 },
    #[error(
        "entry {expected} is missing (the next entry found is {found}): entries were removed or reordered"
    )]
    Missing { expected: i64, found: i64 },
    #[error("entry {seq} does not follow the entry before it: entries were removed or reordered")]
    Unlinked { seq: i64 },
    #[error(
        "the log ends at entry {last} but its recorded head is entry {head}: entries were removed from the end"
    )]
    Truncated { last: i64, head: i64 },
}

/// Checks a chain one entry at a time, so that a log of any length is verified in bounded memory.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev: Hash,
    count: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            expected_seq: 1,
            prev: GENESIS,
            count: 0,
        }
    }
}

impl ChainVerifier {
    /// Takes the next entry in stored order; the first break is named.
    pub fn push(&mut self, entry: &ChainedEntry) -> Result<(), ChainBreak> {
        if entry.seq != self.expected_seq {
            return Err(ChainBreak::Missing {
                expected: self.expected_seq,
                found: entry.seq,
            });
        }
        if entry.prev_hash != self.prev {
            return Err(ChainBreak::Unlinked { seq: entry.seq });
        }
        if entry_hash(entry.seq, &entry.prev_hash, &entry.event) != entry.hash {
            return Err(ChainBreak::Changed { seq: entry.seq });
        }
        self.prev = entry.hash;
        self.expected_seq += 1;
        self.count += 1;
        Ok(())
    }

    /// Compares the end of the chain with its separately recorded head, which catches a cut tail.
    pub fn finish(self, head: Option<(i64, Hash)>) -> Result<u64, ChainBreak> {
        let last = self.expected_seq - 1;
        match head {
            Some((head_seq, _)) if head_seq > last => Err(ChainBreak::Truncated { last, head: head_seq }),
            Some((head_seq, head_hash)) if head_seq == last && head_hash != self.prev => {
                Err(ChainBreak::Changed { seq: last })
            }
            _ => Ok(self.count),
        }
    }
}

/// Walks entries in stored order and names the first one that breaks the chain.
pub fn verify<I>(entries: I, head: Option<(i64, Hash)>) -> Result<u64, ChainBreak>
where
    I: IntoIterator<Item = ChainedEntry>,
{
    let mut verifier = ChainVerifier::default();
    for entry in entries {
        verifier.push(&entry)?;
    }
    verifier.finish(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: i64) -> AuditEvent {
        AuditEvent {
            at_ms: 1_700_000_000_000 + n,
            actor: None,
            actor_role: Some(Role::Clinician),
            action: "patient.record.read".into(),
            resource: format!("patient:{n}"),
            subject_patient: None,
            outcome: Outcome::Allowed,
            reason: "clinician_of_registered_practice".into(),
            request_id: format!("req-{n}"),
        }
    }

    fn log(n: i64) -> Vec<ChainedEntry> {
        let mut out: Vec<ChainedEntry> = Vec::new();
        for i in 0..n {
            let (seq, hash) = out.last().map_or((0, GENESIS), |e| (e.seq, e.hash));
            out.push(chain(seq, hash, event(i)));
        }
        out
    }

    fn head(entries: &[ChainedEntry]) -> Option<(i64, Hash)> {
        entries.last().map(|e| (e.seq, e.hash))
    }

    #[test]
    fn an_untouched_log_verifies() {
        let entries = log(5);
        assert_eq!(verify(entries.clone(), head(&entries)), Ok(5));
        assert_eq!(verify(Vec::new(), None), Ok(0));
    }

    #[test]
    fn an_edit_is_named() {
        let mut entries = log(5);
        let h = head(&entries);
        entries[2].event.reason = "patient_self".into();
        assert_eq!(verify(entries, h), Err(ChainBreak::Changed { seq: 3 }));
    }

    #[test]
    fn a_removal_is_named() {
        let mut entries = log(5);
        let h = head(&entries);
        entries.remove(1);
        assert_eq!(
            verify(entries, h),
            Err(ChainBreak::Missing {
                expected: 2,
                found: 3
            })
        );
    }

    #[test]
    fn a_swap_is_named_even_with_renumbering() {
        let mut entries = log(5);
        let h = head(&entries);
        entries.swap(1, 2);
        entries[1].seq = 2;
        entries[2].seq = 3;
        assert_eq!(verify(entries, h), Err(ChainBreak::Unlinked { seq: 2 }));
    }

    #[test]
    fn a_cut_tail_is_named() {
        let mut entries = log(5);
        let h = head(&entries);
        entries.truncate(3);
        assert_eq!(
            verify(entries, h),
            Err(ChainBreak::Truncated { last: 3, head: 5 })
        );
    }

    #[test]
    fn moving_text_between_fields_changes_the_hash() {
        let mut a = event(1);
        let mut b = event(1);
        a.action = "ab".into();
        a.resource = "c".into();
        b.action = "a".into();
        b.resource = "bc".into();
        assert_ne!(entry_hash(1, &GENESIS, &a), entry_hash(1, &GENESIS, &b));
    }
}
