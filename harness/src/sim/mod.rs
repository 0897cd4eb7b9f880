//! The simulated world: a PostgreSQL-like database, an operating system with processes,
//! files and `flock`, and an HTTP boundary. It is `Clone + Eq + Hash`, so that explorers can
//! fork it and remember which states they have seen.
//!
//! Each subsystem applies one op atomically. An op that must wait is queued inside its
//! subsystem the way the real system queues it; when the subsystem later grants it, the
//! outcome is parked until the explorer collects it with [`World::take_ready`].

pub mod database;
pub mod db;
pub mod firestore;
pub mod fs;
pub mod http;
pub mod notion;
pub mod os;
pub mod parts;
pub mod subsystem;

use std::hash::Hash;

use crate::explore::state::ByteSink;

use crate::op::{ActorId, Applied, ConnId, Footprint, Op, OpKind, Outcome};

pub use database::{Database, RealDb, SharedDb};
pub use db::{Db, Schema, TableDef, UniqueIndex};
pub use fs::{Fs, FsOp, RealFiles, SharedFiles};
pub use http::Http;
pub use os::{Os, RealProcesses, SharedProcesses};
pub use subsystem::{Part, PartId, PartOp, Parts, Subsystem, MAX_PARTS};

use subsystem::AnyOp;

use crate::symmetry::{Renaming, Renumbering};

/// Which subsystem holds an actor's waiting op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Where {
    Db,
    Os,
    Http,
    /// A model-defined part, by index.
    Part(u8),
}

/// Real systems that a stateless run attaches to each fresh world: a database server, a real
/// directory. Models never know.
#[derive(Clone, Default)]
pub struct Attached {
    pub db: Option<SharedDb>,
    pub files: Option<SharedFiles>,
    pub processes: Option<SharedProcesses>,
}

impl Attached {
    pub fn db(db: Option<&SharedDb>) -> Attached {
        Attached { db: db.cloned(), files: None, processes: None }
    }

    pub fn attach(&self, world: &mut World) {
        if let Some(db) = &self.db {
            world.attach_real_db(db.clone());
        }
        if let Some(files) = &self.files {
            world.attach_real_files(files.clone());
        }
        if let Some(processes) = &self.processes {
            if world.os.has_processes() {
                world.os.attach(processes.clone());
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct World {
    pub db: Database,
    pub os: Os,
    pub http: Http,
    /// The parts the model added, in order.
    parts: Parts,
    /// Where each actor's op waits, if it does.
    waits_in: Vec<Option<Where>>,
    /// What the transition being applied has touched. Not part of the state proper.
    touched: Footprint,
}

impl World {
    /// A world with the given schema, no rows, no connections and no processes, for `actors`
    /// actors.
    pub fn new(schema: Schema, actors: usize) -> World {
        assert!(actors <= crate::op::MAX_ACTORS, "at most {} actors", crate::op::MAX_ACTORS);
        World {
            db: Database::new(schema),
            os: Os::new(actors),
            http: Http::new(actors),
            parts: Parts::default(),
            waits_in: vec![None; actors],
            touched: Footprint::default(),
        }
    }

    /// Open a database connection owned by `actor`; it closes when the actor's process crashes.
    pub fn connect(&mut self, actor: ActorId) -> ConnId {
        assert!(actor < self.waits_in.len());
        self.db.connect(actor)
    }

    /// Add a subsystem of the model's own (a mutex, a cache, an API) next to the built-in ones.
    /// The handle builds its ops and reads its state.
    pub fn add_part<S: Subsystem>(&mut self, part: S) -> PartId<S> {
        assert!(self.parts.0.len() < MAX_PARTS, "at most {MAX_PARTS} parts");
        self.parts.0.push(Box::new(part));
        PartId::new((self.parts.0.len() - 1) as u8)
    }

    /// The state of a part the model added.
    pub fn part<S: Subsystem>(&self, id: PartId<S>) -> &S {
        self.parts.0[usize::from(id.index)].as_any().downcast_ref::<S>().expect("a part handle of this world")
    }

    /// Change a part during init (seed its data).
    pub fn part_mut<S: Subsystem>(&mut self, id: PartId<S>) -> &mut S {
        self.parts.0[usize::from(id.index)].as_any_mut().downcast_mut::<S>().expect("a part handle of this world")
    }

    /// Run the database part of this world on a real server from now on (stateless explorers only).
    pub fn attach_real_db(&mut self, real: SharedDb) {
        let sessions = self.db.connections();
        self.db.attach(real, sessions);
    }

    /// How many database connections the model opened.
    pub fn connections(&self) -> usize {
        self.db.connections()
    }

    pub fn actor_count(&self) -> usize {
        self.waits_in.len()
    }

    fn subsystem(&self, at: Where) -> &dyn Part {
        match at {
            Where::Db => &self.db,
            Where::Os => &self.os,
            Where::Http => &self.http,
            Where::Part(i) => &*self.parts.0[usize::from(i)],
        }
    }

    fn subsystem_mut(&mut self, at: Where) -> &mut dyn Part {
        match at {
            Where::Db => &mut self.db,
            Where::Os => &mut self.os,
            Where::Http => &mut self.http,
            Where::Part(i) => &mut *self.parts.0[usize::from(i)],
        }
    }

    /// Which subsystem runs `op`, and the op as that subsystem takes it.
    fn route(op: &Op) -> Option<(Where, &dyn AnyOp)> {
        match &op.kind {
            OpKind::Sql(o) => Some((Where::Db, o)),
            OpKind::Os(o) => Some((Where::Os, o)),
            OpKind::Http(o) => Some((Where::Http, o)),
            OpKind::Part(o) => Some((Where::Part(o.part), &*o.op)),
            OpKind::Local => None,
        }
    }

    /// Every subsystem, built-in ones first.
    fn all(&mut self) -> impl Iterator<Item = &mut dyn Part> {
        let builtin: [&mut dyn Part; 3] = [&mut self.db, &mut self.os, &mut self.http];
        builtin.into_iter().chain(self.parts.0.iter_mut().map(|p| &mut **p))
    }

    /// Apply `actor`'s op atomically.
    pub fn apply(&mut self, actor: ActorId, op: &Op) -> Applied {
        assert!(self.waits_in[actor].is_none(), "actor {actor} applies an op while waiting");
        let Some((at, inner)) = Self::route(op) else { return Applied::Done(Outcome::Ok) };
        let mut fp = std::mem::take(&mut self.touched);
        let applied = self.subsystem_mut(at).apply_dyn(actor, inner, &mut fp);
        self.touched = fp;
        if applied == Applied::Blocked {
            self.waits_in[actor] = Some(at);
        }
        applied
    }

    /// Is `actor`'s op queued (granted or not)?
    pub fn is_waiting(&self, actor: ActorId) -> bool {
        self.waits_in[actor].is_some()
    }

    /// Has `actor`'s queued op been granted, so that its outcome can be collected?
    pub fn is_ready(&self, actor: ActorId) -> bool {
        self.waits_in[actor].is_some_and(|at| self.subsystem(at).is_ready_dyn(actor))
    }

    /// Actors whose waits ended together and race to re-run; until one of them has moved, nothing
    /// else may (see `db.rs`, "Wake order"). Empty almost always.
    pub fn racing_actors(&self) -> Vec<ActorId> {
        self.db.racing_actors()
    }

    /// Is `actor` a not-yet-spawned process or task? Dormant actors never count as deadlocked.
    pub fn is_dormant(&self, actor: ActorId) -> bool {
        self.waits_in[actor] == Some(Where::Os) && self.os.is_dormant(actor)
    }

    /// Is `actor` not stuck even though it waits: not spawned yet, or idle in its subsystem (a
    /// server in `accept`)? Idle actors never count towards a deadlock.
    pub fn is_idle(&self, actor: ActorId) -> bool {
        self.is_dormant(actor) || self.waits_in[actor].is_some_and(|at| self.subsystem(at).is_idle_dyn(actor))
    }

    /// Collect the outcome of `actor`'s granted op.
    pub fn take_ready(&mut self, actor: ActorId) -> Option<Outcome> {
        let at = self.waits_in[actor]?;
        let mut fp = std::mem::take(&mut self.touched);
        let outcome = self.subsystem_mut(at).take_ready_dyn(actor, &mut fp);
        self.touched = fp;
        let outcome = outcome?;
        self.waits_in[actor] = None;
        Some(outcome)
    }

    /// A timeout fires on `actor`'s waiting op: it is dequeued and fails.
    pub fn cancel_wait(&mut self, actor: ActorId) -> Outcome {
        let at = self.waits_in[actor].take().expect("cancel_wait on an actor that does not wait");
        let mut fp = Footprint::GLOBAL;
        let outcome = self.subsystem_mut(at).cancel_wait_dyn(actor, &mut fp);
        self.touched = fp;
        assert!(outcome.is_err());
        outcome
    }

    /// `actor`'s op fails with an injected error instead of running. Errors inside a
    /// transaction abort it, as any PostgreSQL error does.
    pub fn inject_error(&mut self, actor: ActorId, op: &Op) -> Outcome {
        assert!(op.is_fallible());
        let (at, inner) = Self::route(op).expect("local ops are not fallible");
        let mut fp = Footprint::GLOBAL;
        let outcome = self.subsystem_mut(at).inject_error_dyn(actor, inner, &mut fp);
        self.touched = fp;
        outcome
    }

    /// `actor`'s op took effect with `outcome`, but the reply is lost: the actor sees what its
    /// subsystem says instead (a timeout, a cancelled statement), and the effect stays.
    pub fn lose_reply(&mut self, actor: ActorId, op: &Op, outcome: Outcome) -> Outcome {
        assert!(op.is_fallible());
        let (at, inner) = Self::route(op).expect("local ops are not fallible");
        let mut fp = Footprint::GLOBAL;
        let seen = self.subsystem_mut(at).lose_reply_dyn(actor, inner, outcome, &mut fp);
        self.touched = fp;
        assert!(seen.is_err(), "a lost reply is seen as an error");
        seen
    }

    /// `actor`'s process crashes. Returns every actor that dies with it (itself included): the
    /// other tasks of its process. Every subsystem then forgets their waits and releases what
    /// they held: connections close, locks and flocks are released, requests they served fail.
    pub fn crash(&mut self, actor: ActorId) -> Vec<ActorId> {
        let dead = self.os.process_mates(actor);
        assert!(dead.contains(&actor));
        // Everything is touched, but only the dead and whom the subsystems name hold anything else.
        let mut fp = Footprint { signatures: 0, ..Footprint::GLOBAL };
        dead.iter().for_each(|&a| fp.signature_changed(a));
        for &a in &dead {
            self.waits_in[a] = None;
        }
        for part in self.all() {
            part.on_crash_dyn(&dead, &mut fp);
        }
        self.touched = fp;
        dead
    }

    /// How many distinct durable states a power loss could leave now: the product over every
    /// subsystem's own count.
    pub fn power_loss_states(&self) -> usize {
        let builtin: [&dyn Part; 3] = [&self.db, &self.os, &self.http];
        let n = builtin
            .into_iter()
            .chain(self.parts.0.iter().map(|p| &**p))
            .map(|p| p.power_loss_states_dyn())
            .fold(1usize, |acc, n| acc.saturating_mul(n));
        assert!(
            n <= fs::MAX_CRASH_STATES,
            "a power loss here may leave {n} durable states, more than {}",
            fs::MAX_CRASH_STATES
        );
        n
    }

    /// Power fails: every process dies (as in [`World::crash`], for every actor), and each
    /// subsystem keeps its share of durable state `k` (mixed radix over the subsystems' counts).
    /// Returns the actors that died and what survived, for the timeline.
    pub fn power_loss(&mut self, k: usize) -> (Vec<ActorId>, String) {
        assert!(k < self.power_loss_states(), "power-loss state {k} does not exist here");
        // Actors not spawned yet have no process to lose; they can still be started afterwards.
        let dead: Vec<ActorId> = (0..self.waits_in.len()).filter(|&a| !self.is_dormant(a)).collect();
        let mut fp = Footprint::GLOBAL;
        for &a in &dead {
            self.waits_in[a] = None;
        }
        let mut survived = Vec::new();
        let mut rest = k;
        for part in self.all() {
            part.on_crash_dyn(&dead, &mut fp);
            let n = part.power_loss_states_dyn();
            let text = part.power_loss_dyn(rest % n, &mut fp);
            rest /= n;
            if !text.is_empty() {
                survived.push(text);
            }
        }
        self.touched = fp;
        (dead, survived.join("; "))
    }

    /// Run every file op of the model's [`Fs`] parts on `real` from now on (stateless explorers).
    pub fn attach_real_files(&mut self, real: SharedFiles) {
        for part in &mut self.parts.0 {
            if let Some(fs) = part.as_any_mut().downcast_mut::<Fs>() {
                fs.attach(real.clone());
            }
        }
    }

    /// Does the model keep files in this world?
    pub fn has_files(&self) -> bool {
        self.parts.0.iter().any(|p| p.as_any().is::<Fs>())
    }

    /// The first failure of an attached real directory, or disagreement with the simulator.
    pub fn files_failure(&self) -> Option<String> {
        self.parts.0.iter().filter_map(|p| p.as_any().downcast_ref::<Fs>()).find_map(Fs::failure)
    }

    /// Can every subsystem rename what it keeps about actors right now? See [`crate::symmetry`].
    pub fn renamable(&self) -> Result<(), String> {
        let builtin: [&dyn Part; 3] = [&self.db, &self.os, &self.http];
        builtin.into_iter().chain(self.parts.0.iter().map(|p| &**p)).try_for_each(|p| p.renamable_dyn())
    }

    /// What the world keeps about `actor`, independent of which of a group of identical actors
    /// it is (`abstracting` is [`Renaming::abstracting`] for it): for sorting the group.
    pub(crate) fn actor_signature(&self, actor: ActorId, abstracting: &Renaming, out: &mut ByteSink<'_>) {
        self.waits_in[actor].hash(out);
        self.db.actor_signature(actor, abstracting, out);
        self.os.actor_signature(actor, abstracting, out);
        for part in &self.parts.0 {
            part.actor_signature_dyn(actor, abstracting, out);
        }
    }

    /// Rename actors, their connections and their values in every subsystem. Only after
    /// [`World::renamable`] said yes. When the renaming lets the world renumber what it hands
    /// out in turn ([`crate::symmetry::Symmetry::renumbers`]), the world numbers the slots of its
    /// one connection pool and its processes in the order of the renamed actors holding them, and
    /// returns the renaming with those numbers, for the actors to rename what they remember.
    pub fn rename(&mut self, renaming: Renaming) -> Renaming {
        assert_eq!(renaming.len(), self.waits_in.len(), "a renaming of this world's actors");
        let renaming = self.numbered(renaming);
        renaming.permute(&mut self.waits_in);
        for part in self.all() {
            part.rename_dyn(&renaming);
        }
        renaming
    }

    /// Would [`World::rename`] by `renaming`, [`World::numbered`] already, leave this world as
    /// it is?
    pub(crate) fn fixed_by(&self, renaming: &Renaming) -> bool {
        debug_assert!(!renaming.follows_numbers());
        let waits_kept = (0..self.waits_in.len()).all(|a| self.waits_in[a] == self.waits_in[renaming.actor(a)]);
        let builtin: [&dyn Part; 3] = [&self.db, &self.os, &self.http];
        waits_kept && builtin.into_iter().chain(self.parts.0.iter().map(|p| &**p)).all(|p| p.fixed_by_dyn(renaming))
    }

    /// Are the pool's slots and the pids numbered as [`World::numbered`] numbers them for a
    /// renaming that keeps every actor in place? Asked of most states a search makes, so it
    /// builds no renaming.
    pub(crate) fn numbers_in_order(&self) -> bool {
        self.pool().is_none_or(parts::ConnectionPool::slots_in_order)
            && (!self.pids_follow_actors() || self.os.pids_in_order(|a| a))
    }

    /// `renaming` with the slots and pids it leaves to the world (see [`Renaming::follows_numbers`])
    /// numbered as [`World::rename`] numbers them: an identity when it would change nothing.
    pub(crate) fn numbered(&self, renaming: Renaming) -> Renaming {
        if !renaming.follows_numbers() {
            return renaming;
        }
        let slots = self.pool().map(|pool| pool.slot_renumbering(&renaming));
        self.with_pids(renaming, slots)
    }

    /// `renaming` once for every numbering of the pool's slots (pids as [`World::rename`]
    /// numbers them, which is exact: each process follows the actor it was started for). For
    /// the exact class key, which tries every renaming.
    pub(crate) fn every_slot_numbering(&self, renaming: &Renaming) -> Vec<Renaming> {
        if !renaming.follows_numbers() {
            return vec![renaming.clone()];
        }
        let Some(pool) = self.pool() else { return vec![self.with_pids(renaming.clone(), None)] };
        let slots = pool.slot_count();
        assert!(slots <= 6, "the exact class key tries every numbering of at most 6 pool slots");
        crate::symmetry::permutations(slots)
            .into_iter()
            .map(|order| {
                let to = order.iter().map(|&new| new as i64).collect();
                self.with_pids(renaming.clone(), Some(Renumbering { base: 0, to }))
            })
            .collect()
    }

    /// The world's one connection pool (two number their slots alike: then neither is
    /// renumbered).
    fn pool(&self) -> Option<&parts::ConnectionPool> {
        let mut pools = self.parts.0.iter().filter_map(|p| p.as_any().downcast_ref::<parts::ConnectionPool>());
        match (pools.next(), pools.next()) {
            (Some(pool), None) => Some(pool),
            _ => None,
        }
    }

    fn with_pids(&self, renaming: Renaming, slots: Option<Renumbering>) -> Renaming {
        let pids = self.pids_follow_actors().then(|| self.os.pid_renumbering(&renaming));
        renaming.with_numbers(slots, pids)
    }

    /// Only an OS whose model numbers processes by its actors renames pids.
    fn pids_follow_actors(&self) -> bool {
        self.os.has_processes() && self.os.numbered_by_actors()
    }

    /// What the transitions applied since the last call touched.
    pub fn take_footprint(&mut self) -> Footprint {
        std::mem::take(&mut self.touched)
    }
}

impl World {
    /// The parts of the state a reader of a counterexample needs: files, flocks and live
    /// processes, committed table contents, and what each model-defined part shows.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = self.os.describe_dyn();
        lines.extend(self.db.describe_dyn());
        lines.extend(self.http.describe_dyn());
        for part in &self.parts.0 {
            lines.extend(part.describe_dyn());
        }
        lines
    }
}
