//! The exhaustive search's visited-state table: 24 bytes a slot, at most 48 a state.
//!
//! A standard hash map of 128-bit fingerprints to a sleep set and an execution count took 57 to
//! 111 bytes a state: 40-byte entries, a control byte, a heap-allocated sleep set, and a table
//! that doubles (so just after growing it is less than half full). This one packs a slot into
//! six 32-bit words and grows by half:
//!
//! - the fingerprint's low 96 bits (two distinct states of a billion-state search share them
//!   with probability about 10⁻¹¹);
//! - the sleep set as a bit mask over the state's enabled choices, in [`State::choices`] order
//!   (a state's enabled choices are a function of the state and the bounds, so the mask means
//!   the same on every visit). Choices from the 32nd on share the last bit: a set bit there says
//!   "perhaps asleep" for all of them, a superset, which is sound (a revisit explores more, and
//!   fewer siblings count as done);
//! - the complete executions through the state, or [`ON_PATH`].
//!
//! Open addressing with linear probing; an all-zero key marks an empty slot (a fingerprint
//! whose low 96 bits are zero is stored as 1). The table is at most 4/5 full and grows by half,
//! so it is at least 8/15 full after growing: 30 to 45 bytes a state once past its first few
//! slots.
//!
//! [`State::choices`]: super::State::choices

/// Marks a state on the current path. Execution counts saturate one below it.
pub const ON_PATH: u64 = u64::MAX;

/// Bits of a stored sleep set. The last one stands for every choice from it on.
const MASK_BITS: usize = 32;

/// The table holds at most `FULL_NUM / FULL_DEN` of its slots.
const FULL_NUM: usize = 4;
const FULL_DEN: usize = 5;

/// Slots of a new table.
const INITIAL_SLOTS: usize = 8;

type Slot = [u32; 6];

const EMPTY: Slot = [0; 6];

/// Fingerprint → (sleep set, complete executions). Allocates nothing until the first state: a
/// sharded search's top table may stay empty.
#[derive(Default)]
pub struct VisitedTable {
    slots: Vec<Slot>,
    len: usize,
}

/// The mask of the indices in `0..enabled` for which `asleep` holds.
pub fn sleep_mask(enabled: usize, asleep: impl Fn(usize) -> bool) -> u32 {
    let mut mask = 0u32;
    for i in (0..enabled).filter(|&i| asleep(i)) {
        mask |= 1 << i.min(MASK_BITS - 1);
    }
    mask
}

/// Is `enabled[index]` in the stored `mask`?
pub fn in_mask(mask: u32, index: usize) -> bool {
    mask & (1 << index.min(MASK_BITS - 1)) != 0
}

fn key_words(fingerprint: u128) -> [u32; 3] {
    let words = [fingerprint as u32, (fingerprint >> 32) as u32, (fingerprint >> 64) as u32];
    if words == [0; 3] {
        [1, 0, 0]
    } else {
        words
    }
}

impl VisitedTable {
    /// States stored.
    pub fn states(&self) -> usize {
        self.len
    }

    /// Bytes the table allocated.
    pub fn bytes(&self) -> u64 {
        (self.slots.capacity() * std::mem::size_of::<Slot>()) as u64
    }

    /// The slot of `key`, or the empty slot where it would go.
    fn find(&self, key: [u32; 3]) -> usize {
        let n = self.slots.len();
        // The fingerprint is uniformly distributed already: its top word, scaled to the table
        // (multiply and shift, for a table of any size), is the home slot.
        let mut at = ((u64::from(key[2]) * n as u64) >> 32) as usize;
        // The table is never full, so an empty slot ends every probe within `n` steps.
        for _ in 0..n {
            let slot = &self.slots[at];
            if slot[..3] == key || slot[..3] == [0; 3] {
                return at;
            }
            at += 1;
            if at == n {
                at = 0;
            }
        }
        unreachable!("a table at most 4/5 full has an empty slot");
    }

    /// The stored sleep mask and executions of `fingerprint`, if visited.
    pub fn get(&self, fingerprint: u128) -> Option<(u32, u64)> {
        if self.len == 0 {
            return None;
        }
        let key = key_words(fingerprint);
        let slot = &self.slots[self.find(key)];
        (slot[..3] == key).then(|| (slot[3], u64::from(slot[4]) | u64::from(slot[5]) << 32))
    }

    /// Store (or overwrite) what is known of `fingerprint`.
    pub fn set(&mut self, fingerprint: u128, sleep: u32, executions: u64) {
        let key = key_words(fingerprint);
        if self.slots.is_empty() {
            self.slots = vec![EMPTY; INITIAL_SLOTS];
        }
        let mut at = self.find(key);
        if self.slots[at][..3] != key {
            if (self.len + 1) * FULL_DEN > self.slots.len() * FULL_NUM {
                self.grow();
                at = self.find(key);
            }
            self.len += 1;
        }
        self.slots[at] = [key[0], key[1], key[2], sleep, executions as u32, (executions >> 32) as u32];
    }

    /// Overwrite the executions of `fingerprint`, if visited, keeping its sleep set.
    pub fn set_executions(&mut self, fingerprint: u128, executions: u64) {
        if self.len == 0 {
            return;
        }
        let key = key_words(fingerprint);
        let at = self.find(key);
        let slot = &mut self.slots[at];
        if slot[..3] == key {
            slot[4] = executions as u32;
            slot[5] = (executions >> 32) as u32;
        }
    }

    fn grow(&mut self) {
        let size = self.slots.len() + self.slots.len() / 2;
        let old = std::mem::take(&mut self.slots);
        self.slots.reserve_exact(size);
        self.slots.resize(size, EMPTY);
        for slot in old.into_iter().filter(|s| s[..3] != [0; 3]) {
            let at = self.find([slot[0], slot[1], slot[2]]);
            self.slots[at] = slot;
        }
    }
}

/// A set of fingerprints, for searches that keep no more about a state. Fingerprints are hashes
/// already, so the set's hasher takes their high half as it is (see [`FingerprintHasher`]).
pub type FingerprintSet = std::collections::HashSet<u128, std::hash::BuildHasherDefault<FingerprintHasher>>;

/// Hashes a fingerprint by its high 64 bits: uniformly spread already, and independent of the
/// low bits the parallel search stripes its set by. SipHash, the standard hasher, cost a tenth
/// of a parallel search. Anything else is folded in byte by byte (not used by the searches).
#[derive(Clone, Copy, Default)]
pub struct FingerprintHasher(u64);

impl std::hash::Hasher for FingerprintHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u128(&mut self, fingerprint: u128) {
        self.0 ^= (fingerprint >> 64) as u64;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explore::{Choice, ChoiceKind};

    #[test]
    fn stores_and_overwrites_many_keys_through_growth() {
        let mut table = VisitedTable::default();
        // Spread keys and clustered ones (same top word, the home slot) alike.
        let keys: Vec<u128> = (0..20_000u128)
            .map(|i| if i % 2 == 0 { i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834) } else { i << 8 })
            .collect();
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(table.get(k), None, "key {i} not yet stored");
            table.set(k, i as u32, ON_PATH);
        }
        assert_eq!(table.states(), keys.len());
        for (i, &k) in keys.iter().enumerate() {
            table.set(k, i as u32, (i as u64) << 33 | 5);
        }
        assert_eq!(table.states(), keys.len(), "overwriting adds nothing");
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(table.get(k), Some((i as u32, (i as u64) << 33 | 5)));
        }
        let per_state = table.bytes() as f64 / table.states() as f64;
        assert!(per_state <= 48.0, "{per_state} bytes a state");
    }

    #[test]
    fn setting_executions_keeps_the_sleep_set_and_adds_no_key() {
        let mut table = VisitedTable::default();
        table.set_executions(9, 1);
        assert_eq!(table.get(9), None, "nothing stored for an unvisited state");
        table.set(9, 0b101, ON_PATH);
        table.set_executions(9, 1 << 40);
        assert_eq!(table.get(9), Some((0b101, 1 << 40)));
        assert_eq!(table.states(), 1);
    }

    #[test]
    fn a_zero_fingerprint_is_a_key_like_any_other() {
        let mut table = VisitedTable::default();
        assert_eq!(table.get(0), None);
        table.set(0, 3, 7);
        assert_eq!(table.get(0), Some((3, 7)));
        assert_eq!(table.states(), 1);
    }

    #[test]
    fn masks_past_the_last_bit_are_a_superset() {
        let enabled: Vec<Choice> = (0..40).map(|a| Choice { actor: a, kind: ChoiceKind::Step }).collect();
        let mask = sleep_mask(enabled.len(), |i| enabled[i].actor == 3 || enabled[i].actor == 35);
        assert!(in_mask(mask, 3));
        assert!(!in_mask(mask, 4));
        // Everything from bit 31 on reads as asleep once one of them is.
        assert!(in_mask(mask, 31) && in_mask(mask, 35) && in_mask(mask, 39));
        assert!(!in_mask(sleep_mask(enabled.len(), |i| enabled[i].actor == 3), 35));
    }
}
