//! One point of an exploration: the world, the actors, and the fault budget spent so far,
//! plus the single function that moves it forward by one choice.

use std::hash::Hash;

use crate::model::{Actor, Model, Phase, Status, View, DEADLOCK};
use crate::op::{ActorId, Applied, Footprint, OpKind, OsOp, Outcome, MAX_ACTORS};
use crate::render;
use crate::sim::{Attached, SharedDb, World};
use crate::symmetry::{Canonicaliser, Renaming, Symmetry};

use super::{Bounds, Choice, ChoiceKind};

/// Faults spent on the path to a state. Part of the state: the same world with more budget
/// left can reach more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FaultsUsed {
    pub crashes: u8,
    pub errors: u8,
    pub timeouts: u8,
    pub lost_replies: u8,
    pub power_losses: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State<A> {
    pub world: World,
    pub actors: Vec<A>,
    pub status: Vec<Status>,
    pub faults: FaultsUsed,
    /// Only tracked under a preemption bound; otherwise always `None`/0 so that it does not
    /// split states that are otherwise equal.
    pub last: Option<u8>,
    pub preemptions: u8,
    /// Power has failed with more durable states than one choice can pick (32): the first pick
    /// chose this group of 32, and the next choice picks within it.
    pub power_group: Option<u8>,
}

/// The sort keys of a state's group members under a symmetry (see [`State::sort_keys`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortKeys {
    keys: Vec<u128>,
}

/// A 128-bit fingerprint of anything hashable, the same in every run.
pub(crate) fn fingerprint_of(value: &impl Hash) -> u128 {
    // Derived `Hash` impls make many tiny writes; a streaming hasher pays per write, so
    // gather the bytes first and hash them in one pass.
    thread_local! {
        static BYTES: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BYTES.with_borrow_mut(|bytes| {
        bytes.clear();
        value.hash(&mut CompactSink(bytes));
        xxhash_rust::xxh3::xxh3_128(bytes)
    })
}

/// Durable states one power-loss choice picks among (5 bits of a token byte); more take two.
const POWER_PICKS: usize = 32;

/// A property that failed, with a one-line explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: String,
    pub detail: String,
}

/// What one choice did, for timelines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub choice: Choice,
    /// The timeline cell: `find(tag=s1) → none`.
    pub text: String,
    /// Other actors that died with a crash.
    pub also_crashed: Vec<usize>,
    /// What the actor got back; `None` when its op now waits, and for a crash.
    pub outcome: Option<Outcome>,
}

impl<A: Actor> State<A> {
    pub fn initial<M: Model<Actor = A>>(model: &M) -> State<A> {
        State::initial_on(model, None)
    }

    /// The initial state, with the database on `real` when given.
    pub fn initial_on<M: Model<Actor = A>>(model: &M, real: Option<&SharedDb>) -> State<A> {
        State::initial_attached(model, &Attached::db(real))
    }

    /// The initial state, with the real systems in `attached` behind its world.
    pub fn initial_attached<M: Model<Actor = A>>(model: &M, attached: &Attached) -> State<A> {
        let (mut world, actors) = model.init();
        attached.attach(&mut world);
        assert!(!actors.is_empty() && actors.len() <= MAX_ACTORS, "a model has 1..={MAX_ACTORS} actors");
        assert_eq!(world.actor_count(), actors.len(), "World::new must be given the actor count");
        let status =
            actors.iter().map(|a| if a.next_op().is_some() { Status::Running } else { Status::Finished }).collect();
        let mut state = State {
            world,
            actors,
            status,
            faults: FaultsUsed::default(),
            last: None,
            preemptions: 0,
            power_group: None,
        };
        // A dormant actor is not running until someone spawns it, so its first op (waiting for
        // that) is issued with the initial state rather than as a step: a step that only says
        // "not yet" would double the states of every worker that has not spawned its child.
        for i in 0..state.actors.len() {
            let awaits = state.actors[i].next_op().is_some_and(|op| matches!(op.kind, OpKind::Os(OsOp::AwaitSpawn)));
            if awaits {
                state.apply(Choice { actor: i as u8, kind: ChoiceKind::Step }, &Bounds::default());
            }
        }
        state
    }

    /// A 128-bit fingerprint of the whole state. Collisions are astronomically unlikely, and
    /// the hasher is unkeyed, so fingerprints are the same in every run.
    pub fn fingerprint(&self) -> u128 {
        fingerprint_of(self)
    }

    /// The fingerprint of this state's class under `symmetry`: the fingerprint of the state
    /// with each group's actors sorted by what they hold, and everything they own renamed to
    /// match. Two states that differ only by such a renaming get the same key, unless two
    /// members tie on what they hold yet differ elsewhere (then the key may differ: a missed
    /// reduction, never a wrong one). The plain fingerprint when the world cannot rename.
    pub fn canonical_fingerprint(&self, symmetry: &Symmetry) -> u128 {
        self.canonical_fingerprint_with(&mut Canonicaliser::new(symmetry))
    }

    /// [`State::canonical_fingerprint`] with what renaming needs kept from state to state.
    pub fn canonical_fingerprint_with(&self, canon: &mut Canonicaliser) -> u128 {
        match self.canonical_renaming(canon, None) {
            None => self.fingerprint(),
            Some(renaming) => {
                let mut canonical = self.clone();
                canonical.rename(renaming);
                canonical.fingerprint()
            }
        }
    }

    /// Rename this state into its canonical form (the state [`State::canonical_fingerprint`]
    /// fingerprints). Returns the actor permutation applied (old index → new), or `None` when
    /// the state is canonical already or the world cannot rename.
    pub fn canonicalise(&mut self, canon: &mut Canonicaliser) -> Option<Vec<ActorId>> {
        let renaming = self.canonical_renaming(canon, None)?;
        let perm = renaming.actors().to_vec();
        self.rename(renaming);
        Some(perm)
    }

    /// [`State::canonicalise`] for a state just made by `choice`, with footprint `fp`, from a
    /// state whose [`State::sort_keys`] are `parent`: only the keys of the actors the choice
    /// changed (its actor, and those `fp.signatures` names) are made again. Returns the sort
    /// keys of the canonical state: a member's key does not depend on which member it is, so
    /// renaming moves the keys with their members.
    pub fn canonicalise_child(
        &mut self,
        canon: &mut Canonicaliser,
        parent: &SortKeys,
        choice: Choice,
        fp: &Footprint,
    ) -> Option<SortKeys> {
        let mover = choice.actor_index().map_or(u32::MAX, |a| 1 << a);
        let (mut keys, renaming) = self.sorted(canon, Some((parent, fp.signatures | mover)))?;
        if let Some(renaming) = renaming {
            renaming.permute(&mut keys);
            self.rename(renaming);
        }
        Some(SortKeys { keys })
    }

    /// Apply `choice`, then, under a symmetry, rename the result into its canonical form: from
    /// `parent`'s sort keys (this state's, before the choice) when given, else afresh. Returns the
    /// footprint and the canonical state's sort keys when they were made from the parent's.
    pub fn apply_canonical(
        &mut self,
        choice: Choice,
        bounds: &Bounds,
        canon: Option<&mut Canonicaliser>,
        parent: Option<&SortKeys>,
    ) -> (Footprint, Option<SortKeys>) {
        let fp = self.apply(choice, bounds);
        let keys = match (canon, parent) {
            (Some(canon), Some(parent)) => self.canonicalise_child(canon, parent, choice, &fp),
            (Some(canon), None) => {
                self.canonicalise(canon);
                None
            }
            (None, _) => None,
        };
        (fp, keys)
    }

    /// `carried` (from [`State::canonicalise_child`]), or this state's sort keys made afresh
    /// when there are none or the canonicaliser checks reused keys (then the two must agree).
    pub fn sort_keys_or(&self, canon: &mut Canonicaliser, carried: Option<SortKeys>) -> Option<SortKeys> {
        match carried {
            Some(keys) if !canon.checks_reused_keys() => Some(keys),
            carried => {
                let fresh = self.sort_keys(canon);
                if let (Some(carried), Some(fresh)) = (&carried, &fresh) {
                    assert_eq!(carried, fresh, "sort keys moved with their members differ from the keys made afresh");
                }
                fresh
            }
        }
    }

    /// The sort keys of this state's group members, to make its children's from; `None` when
    /// the world cannot rename.
    pub fn sort_keys(&self, canon: &mut Canonicaliser) -> Option<SortKeys> {
        self.world.renamable().ok()?;
        Some(SortKeys { keys: self.member_keys(canon, None) })
    }

    /// The renaming that sorts each symmetry group by what its members hold, unless it would
    /// change nothing or the world cannot rename.
    fn canonical_renaming(&self, canon: &mut Canonicaliser, parent: Option<(&SortKeys, u32)>) -> Option<Renaming> {
        self.sorted(canon, parent).and_then(|(_, renaming)| renaming)
    }

    /// The members' sort keys and [`State::canonical_renaming`]; `None` when the world cannot
    /// rename.
    fn sorted(
        &self,
        canon: &mut Canonicaliser,
        parent: Option<(&SortKeys, u32)>,
    ) -> Option<(Vec<u128>, Option<Renaming>)> {
        if self.world.renamable().is_err() {
            return None;
        }
        let n = self.actors.len();
        let keys = self.member_keys(canon, parent);
        let perm = canon.sorting_permutation(n, &keys);
        if perm.iter().enumerate().any(|(i, &p)| i != p) {
            return Some((keys, Some(canon.renaming(perm))));
        }
        if !canon.symmetry().renumbers || self.world.numbers_in_order() {
            debug_assert!(!canon.symmetry().renumbers || self.world.numbered(canon.renaming(perm)).is_identity());
            return Some((keys, None));
        }
        // A world that renumbers slots and pids to follow their holders may change even when
        // every actor keeps its place. Numbered here, the world need not number them again.
        let numbered = self.world.numbered(canon.renaming(perm));
        Some((keys, (!numbered.is_identity()).then_some(numbered)))
    }

    /// Each group member's sort key: its own state and what it holds in the world, both seen
    /// through its abstracting renaming (0 for actors outside every group). With `parent`, the
    /// keys of the state this one was made from by one choice, and the actors that choice changed
    /// (a bit each): the others' keys are taken from the parent's. Keys are a function of the
    /// state either way, which [`Canonicaliser::check_reused_keys`] checks.
    fn member_keys(&self, canon: &mut Canonicaliser, parent: Option<(&SortKeys, u32)>) -> Vec<u128> {
        // Connections change owners only at init: a refit means keys made before are stale.
        let refit = canon.for_owners(self.world.db.conn_owners());
        let parent = parent.filter(|_| !refit);
        let mut keys = match parent {
            Some((keys, _)) => keys.keys.clone(),
            None => vec![0u128; self.actors.len()],
        };
        // One buffer for every member, hashed once a member: no copy of what the world keeps
        // about a member is built on the way.
        let mut bytes = canon.take_scratch();
        for &a in canon.symmetry().groups.iter().flatten() {
            if parent.is_some_and(|(_, changed)| changed & (1 << a) == 0) {
                continue;
            }
            let abstracting = canon.abstracting(a);
            let mut seen = self.actors[a].clone();
            seen.rename(abstracting);
            bytes.clear();
            let mut sink = ByteSink(&mut bytes);
            (seen, self.status[a]).hash(&mut sink);
            self.world.actor_signature(a, abstracting, &mut sink);
            keys[a] = xxhash_rust::xxh3::xxh3_128(&bytes);
        }
        canon.put_scratch(bytes);
        if parent.is_some() && canon.checks_reused_keys() {
            let afresh = self.member_keys(canon, None);
            for (a, (reused, afresh)) in keys.iter().zip(&afresh).enumerate() {
                assert_eq!(reused, afresh, "actor {a}'s sort key changed, but the choice did not say so");
            }
        }
        keys
    }

    /// Group members whose choices mirror an earlier member's: `reps[b] = a` when a renaming
    /// that maps `a` to `b` (whole units, for coupled groups) leaves this state as it is, so
    /// that each choice of `b` leads where the same choice of `a` leads, up to that renaming.
    /// Only members with equal sort keys can be so mapped (in a canonical state they are
    /// neighbours), and every renaming is checked on the whole state: a key that ties members
    /// it should not costs a check, never a wrong skip. Only runs of tied members with a choice
    /// in `enabled` are tried. `None` when no member mirrors another.
    pub fn mirrors(&self, canon: &Canonicaliser, keys: &SortKeys, enabled: &[Choice]) -> Option<Vec<ActorId>> {
        let mut movers = [false; MAX_ACTORS];
        for a in enabled.iter().filter_map(Choice::actor_index) {
            movers[a] = true;
        }
        if movers.iter().filter(|&&m| m).count() < 2 || self.world.renamable().is_err() {
            return None;
        }
        let n = self.actors.len();
        // This state's own keys, not those canonicalising made: they were the keys of the state
        // before renaming, which depends on the path here, and this must depend on the state alone.
        let keys = &keys.keys;
        // Runs of neighbouring units (lanes of coupled groups together) with equal keys.
        let mut runs: Vec<(&[Vec<ActorId>], usize, usize)> = Vec::new();
        for lanes in canon.unit_lanes() {
            let tied = |k: usize| lanes.iter().all(|lane| keys[lane[k - 1]] == keys[lane[k]]);
            let mut first = 0;
            for k in 1..=lanes[0].len() {
                if k < lanes[0].len() && tied(k) {
                    continue;
                }
                let moves = (first..k).any(|j| lanes.iter().any(|lane| movers[lane[j]]));
                if k - first >= 2 && moves {
                    runs.push((lanes, first, k - 1));
                }
                first = k;
            }
        }
        if runs.is_empty() {
            return None;
        }
        // A rotation of a run that leaves the state as it is maps its first member onto every
        // other; rotating every run at once is one check for the usual case, where each holds.
        let fixed = |perm: Vec<ActorId>| {
            let fixed = self.fixed_by(canon.renaming(perm.clone()));
            if canon.checks_reused_keys() {
                let mut renamed = self.clone();
                renamed.rename(canon.renaming(perm));
                assert_eq!(fixed, renamed == *self, "fixed_by disagrees with renaming a copy");
            }
            fixed
        };
        let rotate = |perm: &mut Vec<ActorId>, (lanes, first, last): &(&[Vec<ActorId>], usize, usize)| {
            for lane in lanes.iter() {
                for k in *first..=*last {
                    perm[lane[k]] = lane[if k == *last { *first } else { k + 1 }];
                }
            }
        };
        let mut reps: Vec<ActorId> = (0..n).collect();
        let mut all = (0..n).collect();
        runs.iter().for_each(|run| rotate(&mut all, run));
        let every_run = fixed(all);
        let mut any = false;
        for run in &runs {
            let (lanes, first, last) = run;
            let mut rotation = (0..n).collect();
            rotate(&mut rotation, run);
            // With one run, its rotation is the one `every_run` already checked.
            if every_run || (runs.len() > 1 && fixed(rotation)) {
                for lane in lanes.iter() {
                    (first + 1..=*last).for_each(|k| reps[lane[k]] = lane[*first]);
                }
                any = true;
                continue;
            }
            // Some member of the run is told apart: neighbours that swap are still mirrors.
            for k in first + 1..=*last {
                let mut swap: Vec<ActorId> = (0..n).collect();
                lanes.iter().for_each(|lane| swap.swap(lane[k - 1], lane[k]));
                if fixed(swap) {
                    lanes.iter().for_each(|lane| reps[lane[k]] = reps[lane[k - 1]]);
                    any = true;
                }
            }
        }
        any.then_some(reps)
    }

    /// The least fingerprint over every renaming of the symmetry's groups: one key per class,
    /// exactly, at a factorial cost. For checking [`State::canonical_fingerprint`] on small
    /// models only (at most 6 actors a group).
    pub fn class_fingerprint(&self, symmetry: &Symmetry) -> u128 {
        if self.world.renamable().is_err() {
            return self.fingerprint();
        }
        let n = self.actors.len();
        let owners = self.world.db.conn_owners();
        assert!(
            symmetry.groups.iter().all(|g| g.len() <= 6),
            "class_fingerprint tries every renaming: at most 6 actors a group"
        );
        let perms = symmetry.all_permutations(n);
        perms
            .into_iter()
            .flat_map(|perm| self.world.every_slot_numbering(&Renaming::new(perm, owners, symmetry)))
            .map(|renaming| {
                let mut renamed = self.clone();
                renamed.rename(renaming);
                renamed.fingerprint()
            })
            .min()
            .expect("the identity at least")
    }

    /// Would [`State::rename`] by `renaming` leave this state as it is? Answered without a
    /// renamed copy.
    pub fn fixed_by(&self, renaming: Renaming) -> bool {
        // Actors rename the pids and slots they remember as the world numbers them.
        let renaming = self.world.numbered(renaming);
        let last_kept = self.last.is_none_or(|a| renaming.actor(usize::from(a)) == usize::from(a));
        let actors_kept = (0..self.actors.len()).all(|a| {
            let b = renaming.actor(a);
            self.status[a] == self.status[b] && {
                let mut renamed = self.actors[a].clone();
                renamed.rename(&renaming);
                renamed == self.actors[b]
            }
        });
        last_kept && actors_kept && self.world.fixed_by(&renaming)
    }

    /// Rename actors and what they own (see [`crate::symmetry`]).
    pub fn rename(&mut self, renaming: Renaming) {
        let renaming = self.world.rename(renaming);
        for actor in &mut self.actors {
            actor.rename(&renaming);
        }
        renaming.permute(&mut self.actors);
        renaming.permute(&mut self.status);
        self.last = self.last.map(|a| renaming.actor(usize::from(a)) as u8);
    }

    /// Can actor `i` take a plain step (run its op, or collect a granted wait)?
    fn can_step(&self, i: usize) -> bool {
        match self.status[i] {
            Status::Running => true,
            Status::Waiting => self.world.is_ready(i),
            Status::Finished | Status::Crashed => false,
        }
    }

    /// Every choice enabled here, in a fixed order: by actor, then step, error, lost reply,
    /// timeout, crash.
    pub fn choices(&self, bounds: &Bounds) -> Vec<Choice> {
        if let Some(group) = self.power_group {
            // Mid power loss: only the pick within the group.
            let states = self.world.power_loss_states();
            let within = (states - usize::from(group) * POWER_PICKS).min(POWER_PICKS);
            return (0..within).map(|k| Choice { actor: k as u8, kind: ChoiceKind::PowerLoss }).collect();
        }
        let mut out = Vec::with_capacity(self.actors.len() * 2);
        // Statements woken together race at once on a real server, and so do the deadlock
        // checks of a wait-for cycle's members: the explorer's only choice is which of them gets
        // there first (for a cycle, which one is the victim).
        let racing = self.world.racing_actors();
        if !racing.is_empty() {
            out.extend(racing.into_iter().map(|i| Choice { actor: i as u8, kind: ChoiceKind::Step }));
            return out;
        }
        for i in 0..self.actors.len() {
            let actor = i as u8;
            let step = self.can_step(i);
            if step && !self.preemption_exhausted(bounds, i) {
                out.push(Choice { actor, kind: ChoiceKind::Step });
            }
            match self.status[i] {
                Status::Running => {
                    // `next_op` allocates: ask only when an error could be chosen at all.
                    let may_err = self.faults.errors < bounds.errors;
                    let may_lose = self.faults.lost_replies < bounds.lost_replies;
                    if (may_err || may_lose) && self.actors[i].next_op().is_some_and(|op| op.is_fallible()) {
                        if may_err {
                            out.push(Choice { actor, kind: ChoiceKind::Error });
                        }
                        if may_lose {
                            out.push(Choice { actor, kind: ChoiceKind::LostReply });
                        }
                    }
                    if self.faults.crashes < bounds.crashes {
                        out.push(Choice { actor, kind: ChoiceKind::Crash });
                    }
                }
                Status::Waiting if !self.world.is_dormant(i) => {
                    if step
                        && self.faults.lost_replies < bounds.lost_replies
                        && self.actors[i].next_op().is_some_and(|op| op.is_fallible())
                    {
                        out.push(Choice { actor, kind: ChoiceKind::LostReply });
                    }
                    if !step && self.faults.timeouts < bounds.timeouts {
                        out.push(Choice { actor, kind: ChoiceKind::Timeout });
                    }
                    if self.faults.crashes < bounds.crashes {
                        out.push(Choice { actor, kind: ChoiceKind::Crash });
                    }
                }
                _ => {}
            }
        }
        // A power loss can strike while anyone can still move; each durable state it may
        // leave is its own choice.
        if self.faults.power_losses < bounds.power_losses && self.any_step() {
            let states = self.world.power_loss_states();
            let picks = if states > POWER_PICKS { states.div_ceil(POWER_PICKS) } else { states };
            out.extend((0..picks).map(|k| Choice { actor: k as u8, kind: ChoiceKind::PowerLoss }));
        }
        out
    }

    /// Would stepping actor `i` be a preemption beyond the bound?
    fn preemption_exhausted(&self, bounds: &Bounds, i: usize) -> bool {
        match (bounds.preemptions, self.last) {
            (Some(limit), Some(last)) => {
                let last = usize::from(last);
                last != i && self.can_step(last) && self.preemptions >= limit
            }
            _ => false,
        }
    }

    /// Is some actor able to take a plain step? If not, the state is final.
    pub fn any_step(&self) -> bool {
        (0..self.actors.len()).any(|i| self.can_step(i))
    }

    /// Apply one enabled choice. Returns what it touched.
    pub fn apply(&mut self, choice: Choice, bounds: &Bounds) -> Footprint {
        self.step(choice, bounds, false).1
    }

    /// Apply one enabled choice. Returns what happened, for a timeline, and what it touched.
    pub fn apply_described(&mut self, choice: Choice, bounds: &Bounds) -> (Event, Footprint) {
        let (event, footprint) = self.step(choice, bounds, true);
        (event.expect("described"), footprint)
    }

    /// Labels cost more than the step itself, so searches skip them (`describe = false`).
    fn step(&mut self, choice: Choice, bounds: &Bounds, describe: bool) -> (Option<Event>, Footprint) {
        let i = usize::from(choice.actor);
        debug_assert_eq!(self.world.take_footprint(), Footprint::default());
        if bounds.preemptions.is_some() && choice.kind != ChoiceKind::PowerLoss {
            if let Some(last) = self.last {
                let last = usize::from(last);
                if last != i && self.can_step(last) && choice.kind == ChoiceKind::Step {
                    self.preemptions += 1;
                }
            }
            self.last = Some(choice.actor);
        }
        let mut also_crashed = Vec::new();
        let mut delivered = None;
        let text = match choice.kind {
            ChoiceKind::Step if self.status[i] == Status::Waiting => {
                let label = if describe { self.label(i) } else { String::new() };
                match self.world.take_ready(i) {
                    Some(outcome) => {
                        self.status[i] = Status::Running;
                        self.deliver(i, &outcome);
                        let text = text(describe, || format!("{label} ⇐ {}", render::outcome(&outcome)));
                        delivered = Some(outcome);
                        text
                    }
                    // A woken statement re-ran and has to wait again.
                    None => text(describe, || format!("{label} … waits again")),
                }
            }
            ChoiceKind::Step => {
                let op = self.actors[i].next_op().expect("a running actor has an op");
                match self.world.apply(i, &op) {
                    Applied::Done(outcome) => {
                        self.deliver(i, &outcome);
                        let text = text(describe, || format!("{} → {}", op.label(), render::outcome(&outcome)));
                        delivered = Some(outcome);
                        text
                    }
                    Applied::Blocked => {
                        self.status[i] = Status::Waiting;
                        text(describe, || format!("{} … waits", op.label()))
                    }
                }
            }
            ChoiceKind::LostReply if self.status[i] == Status::Waiting => {
                let op = self.actors[i].next_op().expect("a waiting actor has an op");
                let outcome = self.world.take_ready(i).expect("a lost reply is chosen only for a granted wait");
                let seen = self.world.lose_reply(i, &op, outcome.clone());
                self.status[i] = Status::Running;
                self.faults.lost_replies += 1;
                self.deliver(i, &seen);
                let text = text(describe, || {
                    format!("{} ⇐ {} [reply lost: {}]", op.label(), render::outcome(&outcome), render::outcome(&seen))
                });
                delivered = Some(seen);
                text
            }
            ChoiceKind::LostReply => {
                let op = self.actors[i].next_op().expect("a running actor has an op");
                match self.world.apply(i, &op) {
                    Applied::Done(outcome) => {
                        let seen = self.world.lose_reply(i, &op, outcome.clone());
                        self.faults.lost_replies += 1;
                        self.deliver(i, &seen);
                        let text = text(describe, || {
                            format!(
                                "{} → {} [reply lost: {}]",
                                op.label(),
                                render::outcome(&outcome),
                                render::outcome(&seen)
                            )
                        });
                        delivered = Some(seen);
                        text
                    }
                    // The op waits: no reply yet to lose. The fault is not spent; it can strike
                    // when the wait is granted.
                    Applied::Blocked => {
                        self.status[i] = Status::Waiting;
                        text(describe, || format!("{} … waits", op.label()))
                    }
                }
            }
            ChoiceKind::Error => {
                let op = self.actors[i].next_op().expect("a running actor has an op");
                let outcome = self.world.inject_error(i, &op);
                self.faults.errors += 1;
                self.deliver(i, &outcome);
                let text = text(describe, || format!("{} → {} [injected]", op.label(), render::outcome(&outcome)));
                delivered = Some(outcome);
                text
            }
            ChoiceKind::Timeout => {
                let label = if describe { self.label(i) } else { String::new() };
                let outcome = self.world.cancel_wait(i);
                self.status[i] = Status::Running;
                self.faults.timeouts += 1;
                self.deliver(i, &outcome);
                let text = text(describe, || format!("{label} ⇐ {} [timeout]", render::outcome(&outcome)));
                delivered = Some(outcome);
                text
            }
            ChoiceKind::Crash => {
                self.faults.crashes += 1;
                for dead in self.world.crash(i) {
                    if dead != i {
                        also_crashed.push(dead);
                    }
                    match self.actors[dead].on_crash() {
                        Some(restarted) => {
                            self.actors[dead] = restarted;
                            self.status[dead] = Status::Running;
                            self.finish_if_done(dead);
                        }
                        None => self.status[dead] = Status::Crashed,
                    }
                }
                text(describe, || "✗ crash".to_string())
            }
            ChoiceKind::PowerLoss if self.power_group.is_none() && self.world.power_loss_states() > POWER_PICKS => {
                self.faults.power_losses += 1;
                self.power_group = Some(choice.actor);
                let states = self.world.power_loss_states();
                text(describe, || {
                    let first = usize::from(choice.actor) * POWER_PICKS;
                    let last = (first + POWER_PICKS).min(states) - 1;
                    format!("⚡ power fails (durable states {first}..={last} of {states})")
                })
            }
            ChoiceKind::PowerLoss => {
                let k = match self.power_group.take() {
                    Some(group) => usize::from(group) * POWER_PICKS + usize::from(choice.actor),
                    None => {
                        self.faults.power_losses += 1;
                        usize::from(choice.actor)
                    }
                };
                let (dead, survived) = self.world.power_loss(k);
                for dead in dead {
                    if matches!(self.status[dead], Status::Crashed) {
                        continue;
                    }
                    if dead != 0 {
                        also_crashed.push(dead);
                    }
                    // Every process dies, finished ones too: a daemon that restarts recovers.
                    match self.actors[dead].on_crash() {
                        Some(restarted) => {
                            self.actors[dead] = restarted;
                            self.status[dead] = Status::Running;
                            self.finish_if_done(dead);
                        }
                        None if self.status[dead] == Status::Finished => {}
                        None => self.status[dead] = Status::Crashed,
                    }
                }
                text(describe, || format!("⚡ power loss; on disk: {survived}"))
            }
        };
        let mut footprint = self.world.take_footprint();
        if choice.kind != ChoiceKind::Step {
            // A crash says whose share of the world it changed; other faults are not told apart.
            let signatures = if choice.kind == ChoiceKind::Crash { footprint.signatures } else { u32::MAX };
            footprint = Footprint { signatures, ..Footprint::GLOBAL };
        } else {
            // A step runs in its actor's process: a crash or power loss that kills the process
            // changes what the step is, even when the step itself touches nothing shared.
            footprint.read(crate::op::Resource::Processes);
        }
        (text.map(|text| Event { choice, text, also_crashed, outcome: delivered }), footprint)
    }

    fn label(&self, i: usize) -> String {
        self.actors[i].next_op().map(|op| op.label()).unwrap_or_default()
    }

    fn deliver(&mut self, i: usize, outcome: &Outcome) {
        self.actors[i].on_outcome(outcome);
        self.finish_if_done(i);
    }

    fn finish_if_done(&mut self, i: usize) {
        if self.status[i] == Status::Running && self.actors[i].next_op().is_none() {
            self.status[i] = Status::Finished;
        }
    }

    /// Check every property of `model` here. `final_state` selects the final-phase checks too.
    pub fn check<M: Model<Actor = A>>(&self, model: &M, props: &Properties<A>) -> Option<Violation> {
        self.check_with(model.deadlock_is_violation(), props)
    }

    /// [`State::check`] without the model: only whether a deadlock counts is needed from it.
    pub fn check_with(&self, deadlock_is_violation: bool, props: &Properties<A>) -> Option<Violation> {
        // A deadlocked state is also final; the deadlock is the better explanation.
        if deadlock_is_violation {
            if let Some(detail) = self.deadlock() {
                return Some(Violation { invariant: DEADLOCK.to_string(), detail });
            }
        }
        let final_state = !self.any_step();
        let phases: &[Phase] = if final_state { &[Phase::Step, Phase::Final] } else { &[Phase::Step] };
        for &phase in phases {
            let view = View { world: &self.world, actors: &self.actors, status: &self.status, phase };
            for inv in props.invariants.iter().filter(|inv| phase == Phase::Final || !inv.final_only) {
                if let Err(detail) = inv.check(&view) {
                    return Some(Violation { invariant: inv.name.to_string(), detail });
                }
            }
        }
        None
    }

    /// Every unfinished actor that is not idle waits, and no wait has been granted.
    fn deadlock(&self) -> Option<String> {
        let stuck: Vec<usize> = (0..self.actors.len())
            .filter(|&i| matches!(self.status[i], Status::Running | Status::Waiting) && !self.world.is_idle(i))
            .collect();
        let all_wait = stuck.iter().all(|&i| self.status[i] == Status::Waiting && !self.world.is_ready(i));
        (!stuck.is_empty() && all_wait).then(|| {
            let names: Vec<String> = stuck.iter().map(|i| format!("#{i}")).collect();
            format!("every unfinished actor waits ({}) and nothing can release them", names.join(", "))
        })
    }

    /// Bitmask of the model's targets reached in this state.
    pub fn targets_reached(&self, props: &Properties<A>) -> u64 {
        let view = View { world: &self.world, actors: &self.actors, status: &self.status, phase: Phase::Step };
        props.targets.iter().enumerate().filter(|(_, t)| t.reached(&view)).fold(0, |m, (k, _)| m | (1u64 << k))
    }
}

/// A model's properties, fetched once per exploration.
pub struct Properties<A> {
    pub invariants: Vec<crate::model::Invariant<A>>,
    pub targets: Vec<crate::model::Target<A>>,
}

impl<A: Actor> Properties<A> {
    pub fn of<M: Model<Actor = A>>(model: &M) -> Properties<A> {
        let targets = model.targets();
        assert!(targets.len() <= 64, "at most 64 targets");
        Properties { invariants: model.invariants(), targets }
    }
    pub fn all_targets(&self) -> u64 {
        if self.targets.len() == 64 {
            u64::MAX
        } else {
            (1u64 << self.targets.len()) - 1
        }
    }
}

fn text(describe: bool, f: impl FnOnce() -> String) -> Option<String> {
    describe.then(f)
}

/// A `Hasher` that only records the bytes it is fed, for hashing them in one pass: what
/// fingerprints and symmetry sort keys are made of ([`crate::sim::Subsystem::actor_signature`]).
pub struct ByteSink<'a>(pub(crate) &'a mut Vec<u8>);

/// Fixed-size writes get their own methods so that each compiles to one small store instead of
/// a call to a variable-length copy: derived `Hash` impls make a great many of them.
macro_rules! fixed_writes {
    ($($method:ident: $ty:ty),*) => {
        $(
            #[inline]
            fn $method(&mut self, value: $ty) {
                self.0.extend_from_slice(&value.to_le_bytes());
            }
        )*
    };
}

impl std::hash::Hasher for ByteSink<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
    fixed_writes!(
        write_u8: u8, write_u16: u16, write_u32: u32, write_u64: u64, write_u128: u128, write_usize: usize,
        write_i8: i8, write_i16: i16, write_i32: i32, write_i64: i64, write_i128: i128, write_isize: isize
    );
    fn finish(&self) -> u64 {
        unreachable!("fingerprints hash the recorded bytes")
    }
}

/// [`ByteSink`] with lengths and enum discriminants in one byte when they fit (most do), for
/// fingerprints, which only tell states apart: the encoding is still one-to-one, since a byte
/// of 255 announces the full eight.
struct CompactSink<'a>(&'a mut Vec<u8>);

impl CompactSink<'_> {
    #[inline]
    fn compact(&mut self, value: u64) {
        match u8::try_from(value) {
            Ok(small) if small < u8::MAX => self.0.push(small),
            _ => {
                self.0.push(u8::MAX);
                self.0.extend_from_slice(&value.to_le_bytes());
            }
        }
    }
}

impl std::hash::Hasher for CompactSink<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.compact(value as u64);
    }
    #[inline]
    fn write_isize(&mut self, value: isize) {
        self.compact(value as u64);
    }
    fixed_writes!(
        write_u8: u8, write_u16: u16, write_u32: u32, write_u64: u64, write_u128: u128,
        write_i8: i8, write_i16: i16, write_i32: i32, write_i64: i64, write_i128: i128
    );
    fn finish(&self) -> u64 {
        unreachable!("fingerprints hash the recorded bytes")
    }
}

/// A schedule of a walk over canonical states (see [`State::canonicalise`]) as a concrete
/// schedule: each choice's actor is the concrete
/// actor that the canonical state it left calls by that index. Panics if a translated choice is
/// not enabled, if the concrete state is ever not a renaming of the walked one, or if it does not
/// end with the walk's violation (the model's symmetry declaration would be wrong).
pub(crate) fn concrete_schedule<M: Model<Actor = A>, A: Actor>(
    model: &M,
    bounds: &Bounds,
    symmetry: &Symmetry,
    walk: &[Choice],
) -> Vec<Choice> {
    let mut canon = Canonicaliser::new(symmetry);
    let mut walked = State::initial(model);
    let mut concrete = walked.clone();
    // `as_concrete[a]`: the concrete actor the walked state numbers `a`.
    let mut as_concrete: Vec<usize> = (0..walked.actors.len()).collect();
    let follow = |perm: Option<Vec<usize>>, as_concrete: &mut Vec<usize>| {
        if let Some(perm) = perm {
            let before = as_concrete.clone();
            for (old, &new) in perm.iter().enumerate() {
                as_concrete[new] = before[old];
            }
        }
    };
    follow(walked.canonicalise(&mut canon), &mut as_concrete);
    let mut schedule = Vec::with_capacity(walk.len());
    for (step, &choice) in walk.iter().enumerate() {
        let real = match choice.actor_index() {
            Some(a) => Choice { actor: as_concrete[a] as u8, ..choice },
            None => choice,
        };
        assert!(
            concrete.choices(bounds).contains(&real),
            "step {step}: {real:?} is not enabled in the concrete state: the symmetry is unsound"
        );
        walked.apply(choice, bounds);
        concrete.apply(real, bounds);
        follow(walked.canonicalise(&mut canon), &mut as_concrete);
        schedule.push(real);
        // The concrete state, renamed as the walk numbers its actors, is the walked state.
        let mut to_walked = vec![0; as_concrete.len()];
        for (a, &c) in as_concrete.iter().enumerate() {
            to_walked[c] = a;
        }
        canon.for_owners(concrete.world.db.conn_owners());
        let renaming = canon.renaming(to_walked);
        // Pool slots the world renumbers follow their holders, but one holder's own slots keep
        // their old order, which the two paths may have left different: exact only without.
        if !renaming.follows_numbers() {
            let mut renamed = concrete.clone();
            renamed.rename(renaming);
            assert_eq!(
                renamed.fingerprint(),
                walked.fingerprint(),
                "after step {step} the concrete state is not a renaming of the walked one: the symmetry is unsound"
            );
        }
    }
    let props = Properties::of(model);
    let violated = |state: &State<A>| state.check(model, &props).map(|v| v.invariant);
    assert_eq!(violated(&concrete), violated(&walked), "the concrete schedule ends where the walk did");
    schedule
}
