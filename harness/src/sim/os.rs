//! Processes, files and `flock`.
//!
//! A process runs one or more actors (its tasks). Dormant actors belong to no process until some
//! process spawns them, either as a new process or as a task of the spawner's own process.
//! Files hold one [`Value`] each. A `flock` is exclusive and belongs to an open file
//! description, as on Linux: each actor opens the lock file itself, so two tasks of one process
//! exclude each other, and a task's repeated `flock` is a no-op. It is released by `LOCK_UN`,
//! by `exit` and by a crash of the process (the kernel closes the file). Blocked `flock` calls
//! are granted in FIFO order. Not modelled: a description inherited across `fork`.
//!
//! Not modelled: `Exit` ends the process but does not kill its other tasks (the models exit only
//! from a process's last running task), and a crashed actor that restarts keeps its dead pid.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use crate::explore::state::ByteSink;

use crate::op::{ActorId, Applied, ErrorCode, Footprint, OsOp, Outcome, Pid, Resource, Value, MAX_ACTORS};

use super::subsystem::Subsystem;
use crate::symmetry::{Renaming, Renumbering};

/// The pid of the first process; later ones count up from it.
const FIRST_PID: Pid = 100;

fn pid_at(index: usize) -> i64 {
    i64::from(FIRST_PID) + index as i64
}

/// A path an actor owns (a per-worker file) is renamed as the value it is.
fn rename_path(r: &Renaming, path: &'static str) -> &'static str {
    match r.value(Value::Str(path)) {
        Value::Str(p) => p,
        other => panic!("path {path} renamed to {other}"),
    }
}

/// Rename a map keyed by path: each entry by `rename`, each key as [`rename_path`] says. Paths
/// rarely name an actor (a per-worker file), and then the map keeps its keys and its nodes.
fn rename_by_path<V>(map: &mut BTreeMap<&'static str, V>, r: &Renaming, rename: impl Fn(&mut V)) {
    if map.keys().all(|&path| rename_path(r, path) == path) {
        map.values_mut().for_each(rename);
        return;
    }
    *map = std::mem::take(map)
        .into_iter()
        .map(|(path, mut value)| {
            rename(&mut value);
            (rename_path(r, path), value)
        })
        .collect();
}

/// A file's content renamed: a number that is one of the `pids` processes' pid becomes the
/// new pid, anything else is renamed as a value.
fn renamed_content(r: &Renaming, pids: usize, content: Value) -> Value {
    match content {
        Value::Int(v) if (pid_at(0)..pid_at(pids)).contains(&v) => Value::Int(i64::from(r.pid(v as Pid))),
        other => r.value(other),
    }
}

/// Rename a pid or value in an outcome; always true (for use in expressions).
fn rename_outcome(r: &Renaming, outcome: &mut Outcome) -> bool {
    match outcome {
        Outcome::Pid(p) => *p = r.pid(*p),
        other => r.outcome(other),
    }
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Process {
    alive: bool,
    /// Every actor that ever ran in it, in the order they joined.
    actors: Tasks,
}

/// A process's actors, kept inline: a search forks the world at every step, and a list per
/// process on the heap made forking a world of many processes mostly allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Tasks {
    len: u8,
    /// The first `len` are the actors; the rest stay 0, so that equal lists compare and hash alike.
    ids: [u8; MAX_ACTORS],
}

impl Tasks {
    fn new(actors: &[ActorId]) -> Tasks {
        let mut tasks = Tasks { len: 0, ids: [0; MAX_ACTORS] };
        actors.iter().for_each(|&a| tasks.push(a));
        tasks
    }

    fn push(&mut self, actor: ActorId) {
        assert!(usize::from(self.len) < MAX_ACTORS && actor < MAX_ACTORS, "a process runs at most every actor");
        self.ids[usize::from(self.len)] = actor as u8;
        self.len += 1;
    }

    fn len(&self) -> usize {
        usize::from(self.len)
    }

    fn iter(&self) -> impl Iterator<Item = ActorId> + '_ {
        self.ids[..self.len()].iter().map(|&a| usize::from(a))
    }

    fn first(&self) -> Option<ActorId> {
        self.iter().next()
    }

    fn rename(&mut self, r: &Renaming) {
        let len = self.len();
        self.ids[..len].iter_mut().for_each(|a| *a = r.actor(usize::from(*a)) as u8);
    }
}

/// Only the actors: the unused rest of the array is always 0.
impl Hash for Tasks {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u8(self.len);
        state.write(&self.ids[..self.len()]);
    }
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// What an actor's queued op waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum WaitFor {
    Spawn,
    Flock(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Wait {
    on: WaitFor,
    /// Set once granted; collected by `take_ready`.
    outcome: Option<Outcome>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FlockState {
    /// The actor whose open file description holds it (each actor opens the lock file itself).
    holder: ActorId,
    /// Actors blocked in `flock(LOCK_EX)`, oldest first.
    queue: Vec<ActorId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Os {
    /// Indexed by `pid - FIRST_PID`.
    processes: Vec<Process>,
    /// The process each actor runs in; `None` for a dormant actor or one outside any process.
    process_of: Vec<Option<Pid>>,
    /// Declared dormant and not spawned yet.
    dormant: Vec<bool>,
    /// Crashed before anyone spawned it: a later spawn starts a process that dies at once.
    stillborn: Vec<bool>,
    waits: Vec<Option<Wait>>,
    files: BTreeMap<&'static str, Value>,
    flocks: BTreeMap<&'static str, FlockState>,
    /// The model's actors rename the pids they remember, so processes may be renumbered
    /// (see [`Os::number_by_actors`]).
    renumbered: bool,
    /// Real processes running the same ops, when a stateless explorer attached them.
    real: Option<RealOs>,
}

/// Every field, the small per-actor and per-process ones packed into a few writes: a search
/// fingerprints every state it reaches, and the OS was most of a fingerprint's writes.
impl Hash for Os {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Destructured, so that a new field cannot be left out of the fingerprint.
        let Os { processes, process_of, dormant, stillborn, waits, files, flocks, renumbered, real } = self;
        let mut packed = Packer::new(state);
        packed.push_len(processes.len());
        for process in processes {
            // The unused rest of `ids` is always 0: the whole array is as good as its actors.
            packed.push([u8::from(process.alive), process.actors.len]);
            packed.push(process.actors.ids);
        }
        packed.push_len(process_of.len());
        for a in 0..process_of.len() {
            // A pid as its offset from the first, plus one (0: none); u32 bytes past that.
            let pid = process_of[a].map_or(0, |p| u64::from(p) + 1 - u64::from(FIRST_PID));
            let flags = u8::from(dormant[a]) | u8::from(stillborn[a]) << 1 | u8::from(waits[a].is_some()) << 2;
            let [p0, p1, p2, p3, p4, ..] = pid.to_le_bytes();
            packed.push([flags, p0, p1, p2, p3, p4]);
        }
        packed.flush();
        assert!(dormant.len() == process_of.len() && stillborn.len() == process_of.len(), "one entry an actor");
        waits.iter().flatten().for_each(|w| w.hash(state));
        files.hash(state);
        flocks.hash(state);
        renumbered.hash(state);
        real.hash(state);
    }
}

/// Bytes gathered on the stack and handed to a hasher in one write per 256.
struct Packer<'h, H: std::hash::Hasher> {
    state: &'h mut H,
    bytes: [u8; 256],
    len: usize,
}

impl<'h, H: std::hash::Hasher> Packer<'h, H> {
    fn new(state: &'h mut H) -> Self {
        Packer { state, bytes: [0; 256], len: 0 }
    }

    /// Fixed-size, so that each push compiles to a few moves.
    #[inline]
    fn push<const N: usize>(&mut self, bytes: [u8; N]) {
        const { assert!(N <= 256) };
        if self.len + N > self.bytes.len() {
            self.flush();
        }
        self.bytes[self.len..self.len + N].copy_from_slice(&bytes);
        self.len += N;
    }

    fn push_len(&mut self, len: usize) {
        self.push((len as u64).to_le_bytes());
    }

    fn flush(&mut self) {
        self.state.write(&self.bytes[..self.len]);
        self.len = 0;
    }
}

/// Real processes, files and `flock`s behind the simulator's stepping API (see `racelab-real`).
/// Pids in ops and outcomes are the simulator's; the backend maps them to real ones.
pub trait RealProcesses: Send {
    /// Start over: an empty private directory holding `files`; one real process for each of
    /// `processes` (the simulator's pid and the actors it runs); `actors` actors in all.
    fn reset(&mut self, actors: usize, processes: &[(Pid, Vec<ActorId>)], files: &[(&'static str, Value)]);
    /// Run `actor`'s op, given what the simulator did with it (its pid for a spawn, and whether
    /// it expects the op to block).
    fn apply(&mut self, actor: ActorId, op: &OsOp, sim: &Applied) -> Applied;
    /// Has `actor`'s waiting op returned? Waits briefly for it when `expect` says it should.
    fn poll(&mut self, actor: ActorId, expect: bool) -> Option<Outcome>;
    /// The processes running `dead` are killed with `SIGKILL`.
    fn crash(&mut self, dead: &[ActorId]);
    /// Record a failure found outside the backend (the simulator disagreed with it).
    fn report(&mut self, failure: String);
    /// The first failure, if any.
    fn failure(&self) -> Option<String>;
    /// What a reader of a counterexample needs: the real files and live processes.
    fn describe(&mut self) -> Vec<String>;
}

/// Real processes shared by the runs of one exploration.
pub type SharedProcesses = Arc<Mutex<dyn RealProcesses>>;

/// A real backend is outside the state: worlds compare and hash as if it were not there.
#[derive(Clone)]
struct RealOs(SharedProcesses);

impl std::fmt::Debug for RealOs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RealProcesses")
    }
}
impl PartialEq for RealOs {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for RealOs {}
impl std::hash::Hash for RealOs {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl Os {
    pub fn new(actors: usize) -> Os {
        Os {
            processes: Vec::new(),
            process_of: vec![None; actors],
            dormant: vec![false; actors],
            stillborn: vec![false; actors],
            waits: vec![None; actors],
            files: BTreeMap::new(),
            flocks: BTreeMap::new(),
            renumbered: false,
            real: None,
        }
    }

    /// Declare that the model's actors rename every pid they remember with
    /// [`crate::symmetry::Renaming::pid`], and that every number in a file equal to a pid names
    /// that process: a symmetric search may then rename processes, files and flocks, numbering
    /// processes in the order of the actors they run (see [`crate::symmetry::Symmetry::renumbers`]).
    pub fn number_by_actors(&mut self) {
        self.renumbered = true;
    }

    /// Did the model declare [`Os::number_by_actors`]?
    pub fn numbered_by_actors(&self) -> bool {
        self.renumbered
    }

    /// Old pid → new pid: processes numbered in the order of the (renamed) actor each was
    /// started for, so that equal states up to renaming get equal pids.
    pub(crate) fn pid_renumbering(&self, r: &Renaming) -> Renumbering {
        let first = |i: usize| self.processes[i].actors.first().map(|a| r.actor(a));
        // Usually they are in that order already: most renamings come from states whose pids
        // were numbered so, and keep the actors' order.
        if self.pids_in_order(|a| r.actor(a)) {
            return Renumbering::kept(pid_at(0));
        }
        // Each process is started for one actor, so the renamed actors index the processes
        // without sorting; processes started for no actor come last.
        let mut started_for = [usize::MAX; MAX_ACTORS];
        let mut unique = true;
        for i in 0..self.processes.len() {
            if let Some(a) = first(i) {
                unique &= started_for[a] == usize::MAX;
                started_for[a] = i;
            }
        }
        if !unique {
            let mut order: Vec<(ActorId, usize)> =
                (0..self.processes.len()).map(|i| (first(i).unwrap_or(ActorId::MAX), i)).collect();
            order.sort_unstable();
            return Renumbering::in_order(pid_at(0), order.len(), order.into_iter().map(|(_, i)| i));
        }
        let mut to = vec![0; self.processes.len()];
        let mut next = pid_at(0);
        let unstarted = (0..self.processes.len()).filter(|&i| first(i).is_none());
        for i in started_for.into_iter().filter(|&i| i != usize::MAX).chain(unstarted) {
            to[i] = next;
            next += 1;
        }
        assert_eq!(next, pid_at(self.processes.len()), "every process renumbered");
        Renumbering { base: pid_at(0), to }
    }

    /// Are processes numbered in the order of the actor each was started for, once `rename`
    /// renames actors? Then [`Os::pid_renumbering`] keeps every pid.
    pub(crate) fn pids_in_order(&self, rename: impl Fn(ActorId) -> ActorId) -> bool {
        let key = |i: usize| self.processes[i].actors.first().map_or(ActorId::MAX, &rename);
        (1..self.processes.len()).all(|i| key(i - 1) <= key(i))
    }

    /// What the OS keeps about `actor`, with other members and every pid abstracted, for
    /// sorting a group of identical actors.
    pub(crate) fn signature(&self, actor: ActorId, r: &Renaming, out: &mut ByteSink<'_>) {
        let alive = self.process_of[actor].map(|p| self.is_alive(p));
        let wait = self.waits[actor].as_ref().map(|w| {
            let on = match w.on {
                WaitFor::Spawn => None,
                WaitFor::Flock(path) => Some(rename_path(r, path)),
            };
            (on, w.outcome.clone().map(|mut o| rename_outcome(r, &mut o).then_some(o)))
        });
        let mates = self.process_of[actor].and_then(|p| self.process(p)).map_or(0, |p| p.actors.len());
        (alive, mates, self.dormant[actor], self.stillborn[actor], wait).hash(out);
        // Each flock it holds or waits for, in the order of their renamed paths (so that the
        // signature does not depend on which member it is), then an end mark.
        let mine = |(&path, f): (&&'static str, &FlockState)| {
            let queued = f.queue.iter().position(|&a| a == actor);
            (f.holder == actor || queued.is_some()).then(|| (rename_path(r, path), f.holder == actor, queued))
        };
        if self.flocks.iter().filter_map(mine).nth(1).is_none() {
            self.flocks.iter().filter_map(mine).for_each(|entry| (true, entry).hash(out));
        } else {
            let mut entries: Vec<_> = self.flocks.iter().filter_map(mine).collect();
            entries.sort_unstable();
            entries.into_iter().for_each(|entry| (true, entry).hash(out));
        }
        false.hash(out);
    }

    /// Does this world start or spawn any process?
    pub fn has_processes(&self) -> bool {
        !self.processes.is_empty() || self.dormant.iter().any(|&d| d)
    }

    /// Run every op from now on on `real` as well, starting from this state (right after init).
    pub fn attach(&mut self, real: SharedProcesses) {
        let processes: Vec<(Pid, Vec<ActorId>)> = (0..self.processes.len())
            .map(|i| (FIRST_PID + i as Pid, self.processes[i].actors.iter().collect()))
            .collect();
        let files: Vec<(&'static str, Value)> = self.files.iter().map(|(p, v)| (*p, *v)).collect();
        real.lock().expect("real processes lock").reset(self.waits.len(), &processes, &files);
        self.real = Some(RealOs(real));
    }

    fn with_real<T>(&self, f: impl FnOnce(&mut dyn RealProcesses) -> T) -> Option<T> {
        self.real.as_ref().map(|r| f(&mut *r.0.lock().expect("real processes lock")))
    }

    fn disagree(&self, what: String) {
        self.with_real(|r| r.report(format!("real processes and the simulator disagree: {what}")));
    }

    /// Start a process at init that runs `actors` (all its tasks). Returns its pid.
    pub fn start_process(&mut self, actors: &[ActorId]) -> Pid {
        for &a in actors {
            assert!(self.process_of[a].is_none() && !self.dormant[a], "actor {a} already has a process or is dormant");
        }
        self.new_process(actors, true)
    }

    /// Declare `actor` dormant: it runs only once spawned (its first op is `AwaitSpawn`).
    pub fn add_dormant(&mut self, actor: ActorId) {
        assert!(self.process_of[actor].is_none(), "actor {actor} already runs in a process");
        self.dormant[actor] = true;
    }

    /// Create a file at init.
    pub fn seed_file(&mut self, path: &'static str, content: Value) {
        self.files.insert(path, content);
    }

    /// A file's content, or `None` when it does not exist.
    pub fn file(&self, path: &'static str) -> Option<Value> {
        self.files.get(path).copied()
    }

    /// The process `actor` runs in (dead or alive), if it has been started.
    pub fn pid_of(&self, actor: ActorId) -> Option<Pid> {
        self.process_of[actor]
    }

    /// Is `pid` a live process?
    pub fn is_alive(&self, pid: Pid) -> bool {
        self.process(pid).is_some_and(|p| p.alive)
    }

    /// The process holding the `flock` on `path`.
    pub fn flock_holder(&self, path: &'static str) -> Option<Pid> {
        self.flocks.get(path).and_then(|f| self.process_of[f.holder])
    }

    /// Files, flocks and live processes, for the final state of a counterexample.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.files.is_empty() {
            let files: Vec<String> = self.files.iter().map(|(p, v)| format!("{p}={v}")).collect();
            lines.push(format!("files: {}", files.join(", ")));
        }
        if !self.flocks.is_empty() {
            let locks: Vec<String> = self
                .flocks
                .iter()
                .map(|(p, f)| format!("{p} held by pid {}", self.process_of[f.holder].unwrap_or_default()))
                .collect();
            lines.push(format!("flocks: {}", locks.join(", ")));
        }
        if !self.processes.is_empty() {
            let alive: Vec<String> = (0..self.processes.len())
                .filter(|&i| self.processes[i].alive)
                .map(|i| (FIRST_PID + i as Pid).to_string())
                .collect();
            lines.push(format!("live processes: {}", if alive.is_empty() { "none".into() } else { alive.join(", ") }));
        }
        lines
    }
}

impl Os {
    /// The simulator's own semantics of `op`.
    fn apply_sim(&mut self, actor: ActorId, op: &OsOp, fp: &mut Footprint) -> Applied {
        assert!(self.waits[actor].is_none(), "actor {actor} already waits");
        let done = Applied::Done;
        match *op {
            OsOp::AwaitSpawn => {
                fp.read(Resource::Processes);
                if let Some(pid) = self.process_of[actor] {
                    // Spawned before it got to wait.
                    return done(Outcome::Pid(pid));
                }
                assert!(self.dormant[actor], "actor {actor} awaits a spawn but is not dormant");
                self.waits[actor] = Some(Wait { on: WaitFor::Spawn, outcome: None });
                Applied::Blocked
            }
            OsOp::SpawnProcess { actor: child } => {
                fp.write(Resource::Processes);
                self.take_dormant(child);
                let alive = !self.stillborn[child];
                let pid = self.new_process(&[child], alive);
                self.wake_spawned(child, pid);
                fp.signature_changed(child);
                done(Outcome::Pid(pid))
            }
            OsOp::SpawnTask { actor: child } => {
                fp.write(Resource::Processes);
                self.take_dormant(child);
                let pid = self.own_pid(actor);
                self.process_of[child] = Some(pid);
                self.process_mut(pid).actors.push(child);
                self.wake_spawned(child, pid);
                // Every task of the process has one more mate.
                self.process_mut(pid).actors.iter().for_each(|a| fp.signature_changed(a));
                done(Outcome::Ok)
            }
            OsOp::ReadFile { path } => {
                fp.read(Resource::File(path));
                done(self.files.get(path).map_or(Outcome::Err(ErrorCode::ENOENT), |v| Outcome::Value(*v)))
            }
            OsOp::WriteFile { path, content } => {
                fp.write(Resource::File(path));
                self.files.insert(path, content);
                done(Outcome::Ok)
            }
            OsOp::RemoveFile { path } => {
                fp.write(Resource::File(path));
                done(self.files.remove(path).map_or(Outcome::Err(ErrorCode::ENOENT), |_| Outcome::Ok))
            }
            OsOp::IsAlive { pid } => {
                fp.read(Resource::Processes);
                done(Outcome::Bool(self.is_alive(pid)))
            }
            OsOp::Flock { path, nonblocking } => {
                fp.write(Resource::Flock(path));
                self.own_pid(actor);
                match self.flocks.get_mut(path) {
                    None => {
                        self.flocks.insert(path, FlockState { holder: actor, queue: Vec::new() });
                        done(Outcome::Ok)
                    }
                    // The same open file description: a no-op, as on Linux. Another task of the
                    // same process opened its own description, so it waits like anyone else.
                    Some(f) if f.holder == actor => done(Outcome::Ok),
                    Some(_) if nonblocking => done(Outcome::Err(ErrorCode::EWOULDBLOCK)),
                    Some(f) => {
                        f.queue.push(actor);
                        self.waits[actor] = Some(Wait { on: WaitFor::Flock(path), outcome: None });
                        Applied::Blocked
                    }
                }
            }
            OsOp::Funlock { path } => {
                fp.write(Resource::Flock(path));
                if self.flocks.get(path).is_some_and(|f| f.holder == actor) {
                    self.release(path, fp);
                }
                done(Outcome::Ok)
            }
            OsOp::Exit => {
                fp.write(Resource::Processes);
                let pid = self.own_pid(actor);
                self.kill(pid, fp);
                done(Outcome::Ok)
            }
        }
    }

    fn take_ready_sim(&mut self, actor: ActorId, fp: &mut Footprint) -> Option<Outcome> {
        let wait = self.waits[actor].as_ref()?;
        let outcome = wait.outcome.clone()?;
        match wait.on {
            WaitFor::Spawn => fp.read(Resource::Processes),
            WaitFor::Flock(path) => fp.read(Resource::Flock(path)),
        }
        self.waits[actor] = None;
        Some(outcome)
    }
}

impl Subsystem for Os {
    type Op = OsOp;

    /// An operating system no actor has used yet: every actor's entry is the same then, so a
    /// renaming changes nothing. Once used, only when the model numbers processes by its actors
    /// ([`Os::number_by_actors`]): pids are then renumbered to follow them.
    fn renamable(&self) -> Result<(), String> {
        let untouched = self.processes.is_empty()
            && self.process_of.iter().all(Option::is_none)
            && !self.dormant.iter().any(|&d| d)
            && !self.stillborn.iter().any(|&d| d)
            && self.waits.iter().all(Option::is_none)
            && self.files.is_empty()
            && self.flocks.is_empty();
        match (&self.real, untouched || self.renumbered) {
            (None, true) => Ok(()),
            (Some(_), _) => Err("real processes cannot be renamed".to_string()),
            (None, false) => Err("processes, files and flocks are renamed only when the model numbers processes \
                                  by its actors"
                .to_string()),
        }
    }

    /// Processes move to their new pids and run the renamed actors; per-actor entries move with
    /// their actors; files and flocks keep their (renamed) paths, and a number in a file that is
    /// a pid becomes the new pid.
    fn rename(&mut self, r: &Renaming) {
        debug_assert!(self.renamable().is_ok());
        if !self.renumbered {
            return;
        }
        let pids = self.processes.len();
        for process in &mut self.processes {
            process.actors.rename(r);
        }
        crate::symmetry::permute_in_place(&mut self.processes, |i| (r.pid(pid_at(i) as Pid) - FIRST_PID) as usize);
        self.process_of.iter_mut().flatten().for_each(|p| *p = r.pid(*p));
        r.permute(&mut self.process_of);
        r.permute(&mut self.dormant);
        r.permute(&mut self.stillborn);
        for wait in self.waits.iter_mut().flatten() {
            if let WaitFor::Flock(path) = &mut wait.on {
                *path = rename_path(r, path);
            }
            if let Some(o) = &mut wait.outcome {
                rename_outcome(r, o);
            }
        }
        r.permute(&mut self.waits);
        let rename_content = |content: &mut Value| *content = renamed_content(r, pids, *content);
        let rename_flock = |f: &mut FlockState| {
            f.holder = r.actor(f.holder);
            f.queue.iter_mut().for_each(|a| *a = r.actor(*a));
        };
        rename_by_path(&mut self.files, r, rename_content);
        rename_by_path(&mut self.flocks, r, rename_flock);
    }

    /// [`Os::rename`]'s moves, checked in place: the search asks this of every state where
    /// identical actors tie, and a renamed copy cost more than the rest of the check.
    fn fixed_by(&self, r: &Renaming) -> bool {
        if !self.renumbered {
            return true;
        }
        let pids = self.processes.len();
        let processes_kept = self.processes.iter().enumerate().all(|(i, p)| {
            let q = &self.processes[(r.pid(pid_at(i) as Pid) - FIRST_PID) as usize];
            p.alive == q.alive
                && p.actors.len() == q.actors.len()
                && p.actors.iter().map(|a| r.actor(a)).eq(q.actors.iter())
        });
        let wait_kept = |a: ActorId, b: ActorId| match (&self.waits[a], &self.waits[b]) {
            (None, None) => true,
            (Some(w), Some(v)) => {
                let on = match w.on {
                    WaitFor::Flock(path) => WaitFor::Flock(rename_path(r, path)),
                    spawn => spawn,
                };
                let outcome = w.outcome.clone().map(|mut o| {
                    rename_outcome(r, &mut o);
                    o
                });
                on == v.on && outcome == v.outcome
            }
            _ => false,
        };
        let actors_kept = (0..self.process_of.len()).all(|a| {
            let b = r.actor(a);
            self.process_of[a].map(|p| r.pid(p)) == self.process_of[b]
                && self.dormant[a] == self.dormant[b]
                && self.stillborn[a] == self.stillborn[b]
                && wait_kept(a, b)
        });
        let files_kept = self
            .files
            .iter()
            .all(|(&path, &value)| self.files.get(rename_path(r, path)) == Some(&renamed_content(r, pids, value)));
        let flocks_kept = self.flocks.iter().all(|(&path, f)| {
            self.flocks.get(rename_path(r, path)).is_some_and(|g| {
                g.holder == r.actor(f.holder) && f.queue.iter().map(|&a| r.actor(a)).eq(g.queue.iter().copied())
            })
        });
        processes_kept && actors_kept && files_kept && flocks_kept
    }

    fn actor_signature(&self, actor: ActorId, abstracting: &Renaming, out: &mut ByteSink<'_>) {
        if self.renumbered {
            self.signature(actor, abstracting, out);
        }
    }

    fn name(&self) -> &'static str {
        "os"
    }

    fn reports_signature_changes(&self) -> bool {
        true
    }

    fn apply(&mut self, actor: ActorId, op: &OsOp, fp: &mut Footprint) -> Applied {
        let sim = self.apply_sim(actor, op, fp);
        let Some(real) = self.with_real(|r| r.apply(actor, op, &sim)) else { return sim };
        if real != sim {
            self.disagree(format!("actor {actor} {op:?}: real {real:?}, simulator {sim:?}"));
        }
        real
    }

    fn is_ready(&self, actor: ActorId) -> bool {
        self.waits[actor].as_ref().is_some_and(|w| w.outcome.is_some())
    }

    fn take_ready(&mut self, actor: ActorId, fp: &mut Footprint) -> Option<Outcome> {
        let expect = self.is_ready(actor);
        if let Some(real) = self.with_real(|r| r.poll(actor, expect)) {
            let sim = self.waits[actor].as_ref().and_then(|w| w.outcome.clone());
            if real != sim {
                self.disagree(format!("actor {actor}'s wait: real {real:?}, simulator {sim:?}"));
            }
        }
        self.take_ready_sim(actor, fp)
    }

    /// A timeout fires on `actor`'s wait. A `flock` not yet granted leaves the queue; one already
    /// granted stays held, as when the alarm fires just after the syscall returned.
    fn cancel_wait(&mut self, actor: ActorId, fp: &mut Footprint) -> Outcome {
        let wait = self.waits[actor].take().expect("cancel_wait on an actor that does not wait in the OS");
        match wait.on {
            WaitFor::Spawn => fp.read(Resource::Processes),
            WaitFor::Flock(path) => {
                fp.write(Resource::Flock(path));
                if let Some(f) = self.flocks.get_mut(path) {
                    f.queue.retain(|&a| a != actor);
                }
            }
        }
        Outcome::Err(ErrorCode::ETIMEDOUT)
    }

    /// The dead actors' process dies: its flocks are released and its tasks' queued waits
    /// dropped. An actor not spawned yet is stillborn: a later spawn starts a dead process.
    fn on_crash(&mut self, dead: &[ActorId], fp: &mut Footprint) {
        // Dead waiters leave their queues first, so that no flock is handed to them.
        for &a in dead {
            if self.process_of[a].is_none() && self.dormant[a] {
                self.stillborn[a] = true;
            }
            self.drop_wait(a, fp);
        }
        let mut pids: Vec<Pid> = dead.iter().filter_map(|&a| self.process_of[a]).collect();
        pids.dedup();
        for pid in pids {
            self.kill(pid, fp);
        }
        self.with_real(|r| r.crash(dead));
    }

    fn describe(&self) -> Vec<String> {
        let mut lines = Os::describe(self);
        if let Some(real) = self.with_real(|r| r.describe()) {
            lines.extend(real);
        }
        lines
    }
}

impl Os {
    /// Does `actor` wait for someone to spawn it?
    pub fn is_dormant(&self, actor: ActorId) -> bool {
        self.waits[actor].as_ref().is_some_and(|w| w.on == WaitFor::Spawn && w.outcome.is_none())
    }

    /// Everyone who dies when `actor`'s process crashes: the tasks of its process, or the actor
    /// alone when it runs in none.
    pub fn process_mates(&self, actor: ActorId) -> Vec<ActorId> {
        match self.process_of[actor] {
            Some(pid) => self.process(pid).expect("a started process").actors.iter().collect(),
            None => vec![actor],
        }
    }

    fn new_process(&mut self, actors: &[ActorId], alive: bool) -> Pid {
        let pid = FIRST_PID + Pid::try_from(self.processes.len()).expect("too many processes");
        self.processes.push(Process { alive, actors: Tasks::new(actors) });
        for &a in actors {
            self.process_of[a] = Some(pid);
        }
        pid
    }

    fn process(&self, pid: Pid) -> Option<&Process> {
        pid.checked_sub(FIRST_PID).and_then(|i| self.processes.get(i as usize))
    }

    fn process_mut(&mut self, pid: Pid) -> &mut Process {
        &mut self.processes[(pid - FIRST_PID) as usize]
    }

    fn own_pid(&self, actor: ActorId) -> Pid {
        self.process_of[actor].unwrap_or_else(|| panic!("actor {actor} runs in no process"))
    }

    fn take_dormant(&mut self, child: ActorId) {
        assert!(self.dormant[child], "actor {child} is not dormant: spawned twice, or never declared with add_dormant");
        self.dormant[child] = false;
    }

    /// The spawned child's `AwaitSpawn`, if it already waits, returns the child's pid.
    fn wake_spawned(&mut self, child: ActorId, pid: Pid) {
        if let Some(w) = self.waits[child].as_mut() {
            if w.on == WaitFor::Spawn {
                w.outcome = Some(Outcome::Pid(pid));
            }
        }
    }

    /// The process dies: not alive, and every flock it holds is released.
    fn kill(&mut self, pid: Pid, fp: &mut Footprint) {
        self.process_mut(pid).alive = false;
        self.process_mut(pid).actors.iter().for_each(|a| fp.signature_changed(a));
        let held: Vec<&'static str> =
            self.flocks.iter().filter(|(_, f)| self.process_of[f.holder] == Some(pid)).map(|(p, _)| *p).collect();
        for path in held {
            fp.write(Resource::Flock(path));
            self.release(path, fp);
        }
    }

    /// Hand the flock on `path` to the oldest waiter, or free it. Every waiter moves up the queue.
    fn release(&mut self, path: &'static str, fp: &mut Footprint) {
        let f = self.flocks.get_mut(path).expect("release of a flock nobody holds");
        if f.queue.is_empty() {
            self.flocks.remove(path);
            return;
        }
        f.queue.iter().for_each(|&a| fp.signature_changed(a));
        let next = f.queue.remove(0);
        f.holder = next;
        let wait = self.waits[next].as_mut().expect("a flock waiter waits");
        wait.outcome = Some(Outcome::Ok);
    }

    /// `actor` stops waiting; waiters behind it move up the queue (`fp`).
    fn drop_wait(&mut self, actor: ActorId, fp: &mut Footprint) {
        if let Some(Wait { on: WaitFor::Flock(path), .. }) = self.waits[actor].take() {
            if let Some(f) = self.flocks.get_mut(path) {
                f.queue.iter().for_each(|&a| fp.signature_changed(a));
                f.queue.retain(|&a| a != actor);
            }
        }
    }
}

#[cfg(test)]
mod tests;
