//! [`AtomicCells`]: shared-memory integers by key; load, store, fetch-add, compare-exchange.

use std::collections::BTreeMap;
use std::fmt;

use crate::op::{ActorId, Applied, Footprint, Outcome, Value};
use crate::sim::subsystem::{PartOp, Subsystem};
use crate::symmetry::Renaming;

use super::resource;

/// Ops on [`AtomicCells`]. Every op returns the value before it (`Value`), as Rust's atomics do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AtomicOp {
    Load(i64),
    Store(i64, i64),
    FetchAdd(i64, i64),
    /// `compare_exchange(current, new)`: returns `Bool` (swapped or not).
    CompareExchange {
        key: i64,
        current: i64,
        new: i64,
    },
}

impl fmt::Display for AtomicOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AtomicOp::Load(k) => write!(f, "({k})"),
            AtomicOp::Store(k, v) | AtomicOp::FetchAdd(k, v) => write!(f, "({k}, {v})"),
            AtomicOp::CompareExchange { key, current, new } => write!(f, "({key}, {current} → {new})"),
        }
    }
}

impl PartOp for AtomicOp {
    fn is_fallible(&self) -> bool {
        false
    }
}

/// Shared-memory integers by key, each starting at 0. Sequentially consistent: every op is one
/// atomic step. Values survive crashes of single threads only when the cell outlives the
/// process, which is the model's choice (it is not cleared here).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AtomicCells {
    cells: BTreeMap<i64, i64>,
}

impl AtomicCells {
    pub fn new() -> AtomicCells {
        AtomicCells::default()
    }

    pub fn get(&self, key: i64) -> i64 {
        self.cells.get(&key).copied().unwrap_or(0)
    }

    pub fn set(&mut self, key: i64, value: i64) {
        self.cells.insert(key, value);
    }
}

impl Subsystem for AtomicCells {
    type Op = AtomicOp;

    fn name(&self) -> &'static str {
        "atomics"
    }

    fn renamable(&self) -> Result<(), String> {
        Ok(())
    }

    /// Keys and contents are renamed like any value: an owned value names its owner only.
    fn rename(&mut self, r: &Renaming) {
        self.cells = std::mem::take(&mut self.cells).into_iter().map(|(k, v)| (r.int(k), r.int(v))).collect();
    }

    fn apply(&mut self, _actor: ActorId, op: &AtomicOp, fp: &mut Footprint) -> Applied {
        let outcome = match *op {
            AtomicOp::Load(k) => {
                fp.read(resource(2, k));
                Outcome::Value(Value::Int(self.get(k)))
            }
            AtomicOp::Store(k, v) => {
                fp.write(resource(2, k));
                let old = self.get(k);
                self.set(k, v);
                Outcome::Value(Value::Int(old))
            }
            AtomicOp::FetchAdd(k, d) => {
                fp.write(resource(2, k));
                let old = self.get(k);
                self.set(k, old.wrapping_add(d));
                Outcome::Value(Value::Int(old))
            }
            AtomicOp::CompareExchange { key, current, new } => {
                fp.write(resource(2, key));
                let swapped = self.get(key) == current;
                if swapped {
                    self.set(key, new);
                }
                Outcome::Bool(swapped)
            }
        };
        Applied::Done(outcome)
    }

    fn describe(&self) -> Vec<String> {
        if self.cells.is_empty() {
            return Vec::new();
        }
        let cells: Vec<String> = self.cells.iter().map(|(k, v)| format!("{k}={v}")).collect();
        vec![format!("atomics: {}", cells.join(", "))]
    }
}
