//! A Firestore-like document store with optimistic transactions. A transaction's reads record
//! each document's version; its writes are buffered; its commit fails with `ABORTED` when a
//! document it read has changed since, and otherwise applies every write at once.
//!
//! The client library's retry (`@firestore.async_transactional` re-runs the whole transaction
//! function, up to `max_attempts` = 5 times) is the actor's loop, not the store's: everything
//! the function did besides its reads and writes (a Notion page it created) is not undone.

use std::collections::BTreeMap;
use std::fmt;

use crate::op::{ActorId, Applied, ErrorCode, Footprint, Outcome, Resource, Value};

use super::subsystem::{PartOp, Subsystem};

/// A commit that lost to a conflicting write (gRPC `ABORTED`).
pub const ABORTED: ErrorCode = ErrorCode("ABORTED");
/// A transactional op with no open transaction.
pub const NO_TRANSACTION: ErrorCode = ErrorCode("FAILED_PRECONDITION");

/// How many attempts the client library makes at one transaction function
/// (`google.cloud.firestore` `max_attempts` default).
pub const MAX_ATTEMPTS: u8 = 5;

/// Upper bound on documents, and on one transaction's reads or writes.
pub const MAX_DOCUMENTS: usize = 32;

/// Ops on [`Firestore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FirestoreOp {
    /// `firestore_client.transaction()`: opens this actor's transaction.
    Begin,
    /// `doc_ref.get(transaction=…)`: the document's value or `Value(Null)` when it does not exist.
    Get { doc: Value },
    /// `transaction.set(doc_ref, value)`: buffered until the commit.
    Set { doc: Value, value: Value },
    /// Commit: `Ok`, or `Err(ABORTED)` when a document read has changed since.
    Commit,
    /// Drop the transaction (the function raised).
    Rollback,
}

impl fmt::Display for FirestoreOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FirestoreOp::Begin | FirestoreOp::Commit | FirestoreOp::Rollback => Ok(()),
            FirestoreOp::Get { doc } => write!(f, "({doc})"),
            FirestoreOp::Set { doc, value } => write!(f, "({doc}, page_id={value})"),
        }
    }
}

impl PartOp for FirestoreOp {
    fn is_fallible(&self) -> bool {
        matches!(self, FirestoreOp::Get { .. } | FirestoreOp::Commit)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Transaction {
    /// Documents read, with the version seen (0: did not exist).
    reads: Vec<(Value, u32)>,
    writes: Vec<(Value, Value)>,
}

/// Documents by name, each with a version that every committed write bumps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Firestore {
    docs: BTreeMap<Value, (u32, Value)>,
    open: BTreeMap<ActorId, Transaction>,
}

impl Firestore {
    pub fn new() -> Firestore {
        Firestore::default()
    }

    /// A document's committed value.
    pub fn get(&self, doc: Value) -> Option<Value> {
        self.docs.get(&doc).map(|(_, v)| *v)
    }

    fn version(&self, doc: Value) -> u32 {
        self.docs.get(&doc).map_or(0, |(v, _)| *v)
    }
}

fn doc_resource(doc: Value) -> Resource {
    let key = match doc {
        Value::Str(s) => s.bytes().fold(11u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
        Value::Int(i) => i as u64,
        Value::Null => 0,
    };
    Resource::Custom(key.wrapping_mul(0x85eb_ca6b).wrapping_add(8))
}

impl Subsystem for Firestore {
    type Op = FirestoreOp;

    fn name(&self) -> &'static str {
        "firestore"
    }

    fn apply(&mut self, actor: ActorId, op: &FirestoreOp, fp: &mut Footprint) -> Applied {
        let outcome = match *op {
            FirestoreOp::Begin => {
                self.open.insert(actor, Transaction::default());
                Outcome::Ok
            }
            FirestoreOp::Get { doc } => {
                fp.read(doc_resource(doc));
                let version = self.version(doc);
                let value = self.get(doc).unwrap_or(Value::Null);
                match self.open.get_mut(&actor) {
                    Some(t) => {
                        assert!(t.reads.len() < MAX_DOCUMENTS, "too many reads in one transaction");
                        t.reads.push((doc, version));
                        Outcome::Value(value)
                    }
                    None => Outcome::Err(NO_TRANSACTION),
                }
            }
            FirestoreOp::Set { doc, value } => match self.open.get_mut(&actor) {
                Some(t) => {
                    assert!(t.writes.len() < MAX_DOCUMENTS, "too many writes in one transaction");
                    t.writes.push((doc, value));
                    Outcome::Ok
                }
                None => Outcome::Err(NO_TRANSACTION),
            },
            FirestoreOp::Commit => {
                let Some(t) = self.open.remove(&actor) else { return Applied::Done(Outcome::Err(NO_TRANSACTION)) };
                for &(doc, _) in &t.reads {
                    fp.read(doc_resource(doc));
                }
                if t.reads.iter().any(|&(doc, seen)| self.version(doc) != seen) {
                    Outcome::Err(ABORTED)
                } else {
                    for (doc, value) in t.writes {
                        fp.write(doc_resource(doc));
                        let version = self.version(doc) + 1;
                        assert!(self.docs.len() < MAX_DOCUMENTS || self.docs.contains_key(&doc), "too many documents");
                        self.docs.insert(doc, (version, value));
                    }
                    Outcome::Ok
                }
            }
            FirestoreOp::Rollback => {
                self.open.remove(&actor);
                Outcome::Ok
            }
        };
        Applied::Done(outcome)
    }

    /// A failed read or commit ends the transaction, as the client library's rollback does.
    fn inject_error(&mut self, actor: ActorId, _op: &FirestoreOp, _fp: &mut Footprint) -> Outcome {
        self.open.remove(&actor);
        Outcome::Err(ErrorCode("UNAVAILABLE"))
    }

    fn on_crash(&mut self, dead: &[ActorId], fp: &mut Footprint) {
        fp.global();
        self.open.retain(|a, _| !dead.contains(a));
    }

    fn describe(&self) -> Vec<String> {
        let docs: Vec<String> = self.docs.iter().map(|(d, (ver, v))| format!("{d}={v} (v{ver})")).collect();
        vec![format!("firestore: {}", if docs.is_empty() { "no documents".into() } else { docs.join(", ") })]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: Value = Value::Str("area_cache/HOME");

    fn run(s: &mut Firestore, actor: ActorId, op: FirestoreOp) -> Outcome {
        match s.apply(actor, &op, &mut Footprint::default()) {
            Applied::Done(o) => o,
            Applied::Blocked => panic!("optimistic transactions never wait"),
        }
    }

    #[test]
    fn the_second_of_two_transactions_that_read_a_missing_document_aborts() {
        let mut s = Firestore::new();
        for a in [0, 1] {
            assert_eq!(run(&mut s, a, FirestoreOp::Begin), Outcome::Ok);
            assert_eq!(run(&mut s, a, FirestoreOp::Get { doc: DOC }), Outcome::Value(Value::Null));
            assert_eq!(run(&mut s, a, FirestoreOp::Set { doc: DOC, value: Value::Int(a as i64 + 1) }), Outcome::Ok);
        }
        assert_eq!(s.get(DOC), None, "writes wait for the commit");
        assert_eq!(run(&mut s, 0, FirestoreOp::Commit), Outcome::Ok);
        assert_eq!(run(&mut s, 1, FirestoreOp::Commit), Outcome::Err(ABORTED));
        assert_eq!(s.get(DOC), Some(Value::Int(1)));
        // The retry reads the new version and commits.
        run(&mut s, 1, FirestoreOp::Begin);
        assert_eq!(run(&mut s, 1, FirestoreOp::Get { doc: DOC }), Outcome::Value(Value::Int(1)));
        assert_eq!(run(&mut s, 1, FirestoreOp::Commit), Outcome::Ok);
        assert_eq!(s.describe(), ["firestore: area_cache/HOME=1 (v1)"]);
    }

    #[test]
    fn a_write_without_a_read_never_conflicts_and_ops_need_a_transaction() {
        let mut s = Firestore::new();
        assert_eq!(run(&mut s, 0, FirestoreOp::Get { doc: DOC }), Outcome::Err(NO_TRANSACTION));
        run(&mut s, 0, FirestoreOp::Begin);
        run(&mut s, 1, FirestoreOp::Begin);
        run(&mut s, 0, FirestoreOp::Set { doc: DOC, value: Value::Int(1) });
        run(&mut s, 1, FirestoreOp::Set { doc: DOC, value: Value::Int(2) });
        assert_eq!(run(&mut s, 0, FirestoreOp::Commit), Outcome::Ok);
        assert_eq!(run(&mut s, 1, FirestoreOp::Commit), Outcome::Ok, "blind writes: last one wins");
        assert_eq!(s.get(DOC), Some(Value::Int(2)));
        assert_eq!(run(&mut s, 1, FirestoreOp::Commit), Outcome::Err(NO_TRANSACTION));
    }

    #[test]
    fn a_crash_or_an_injected_error_drops_the_open_transaction() {
        let mut s = Firestore::new();
        run(&mut s, 0, FirestoreOp::Begin);
        run(&mut s, 0, FirestoreOp::Set { doc: DOC, value: Value::Int(1) });
        s.on_crash(&[0], &mut Footprint::default());
        assert_eq!(run(&mut s, 0, FirestoreOp::Commit), Outcome::Err(NO_TRANSACTION));
        run(&mut s, 1, FirestoreOp::Begin);
        let seen = s.inject_error(1, &FirestoreOp::Get { doc: DOC }, &mut Footprint::default());
        assert!(seen.is_err());
        assert_eq!(run(&mut s, 1, FirestoreOp::Commit), Outcome::Err(NO_TRANSACTION));
        assert_eq!(s.get(DOC), None);
    }
}
