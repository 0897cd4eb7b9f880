//! Owned names and values without const arrays: [`intern`] turns any string into a
//! `&'static str` that is cheap to copy, compare and hash, so that per-worker content, file
//! paths and op names can be built at run time (`intern(format!("summary-{i}"))`).
//!
//! Each distinct string is stored once for the life of the process. Hashing and ordering use
//! the text itself, never an address or an insertion index, so fingerprints and outputs are the
//! same in every run.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// Most distinct strings one process may intern: a guard against a model that interns in a loop.
pub const MAX_INTERNED: usize = 1_000_000;

static INTERNED: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

/// The one stored copy of `s`.
pub fn intern(s: impl AsRef<str>) -> &'static str {
    let s = s.as_ref();
    let mut set = INTERNED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(&stored) = set.get(s) {
        return stored;
    }
    assert!(set.len() < MAX_INTERNED, "more than {MAX_INTERNED} interned strings");
    let stored: &'static str = Box::leak(s.to_owned().into_boxed_str());
    set.insert(stored);
    stored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_text_gives_the_same_str() {
        let a = intern(format!("worker-{}", 3));
        let b = intern("worker-3");
        assert_eq!(a, b);
        assert!(std::ptr::eq(a, b));
        assert_ne!(intern("worker-4"), a);
    }
}
