//! `daemon-spawn`: hooks that start the observer daemon race on its PID file.
//!
//! Seed `000_9bdcb1381353509b.txt`, "Phase 3: Spawn Lock in `_spawn_daemon()`":
//!
//! > Two hooks calling `ensure_daemon_running()` simultaneously can both spawn daemons. The flock
//! > in `__main__.py` makes only one survive, but PID file points to wrong one temporarily.
//! > Solution: Add `fcntl.flock` around spawn operation in `_spawn_daemon()`.
//!
//! Every hook process calls `ensure_daemon_running()`: it reads the PID file, and if the pid
//! there is a live process it returns; otherwise `_spawn_daemon()` starts the daemon and writes
//! the child's pid to the PID file. The daemon's `__main__` takes a non-blocking singleton flock
//! and exits when another daemon holds it. Two hooks that both find no daemon both spawn one: the
//! singleton lock kills the second daemon, but the hook that spawned it may write its pid last,
//! so the PID file names a dead process while the survivor runs, and every later hook spawns a
//! daemon that dies at once.
//!
//! Variants:
//! - `unlocked`: as found.
//! - `flock-spawn`: the plan's fix. The hook holds a blocking `flock` on a spawn lock file around
//!   the check, the spawn and the PID write. The kernel also releases it when the hook dies.
//!   **It does not hold**: a hook that dies between `Popen` and `write_pid` frees the spawn lock
//!   with its daemon running and unnamed; the next hook finds no PID file, spawns a daemon that
//!   loses the singleton lock and exits, and writes that dead daemon's pid
//!   (`racelab explain daemon-spawn/flock-spawn`).
//! - `daemon-writes-pid`: a fix of ours. Only the daemon that holds the singleton lock writes the
//!   PID file, after taking the lock; hooks never write it. Whoever wins the lock names itself,
//!   so neither an overlapping spawn nor a hook crash can leave the file naming a loser. (A spawn
//!   lock on top would only save spawning daemons that are bound to exit.)
//!
//! Invariants: never two daemons running at once once every hook has returned; and, in a final
//! state, the PID file names the daemon that holds the singleton lock.
//!
//! Faults that matter: a hook that dies between the spawn and the PID write (the lock is
//! released, the daemon runs, the PID file does not name it), and a daemon that dies.

use racelab_harness::catalogue::{Params, RaceDef, VariantDef};
use racelab_harness::model::{Actor, Invariant, Model, Phase, Status, Target, View};
use racelab_harness::op::{ActorId, Op, OsOp, Outcome, Pid, Value};
use racelab_harness::sim::{Schema, World};
use racelab_harness::symmetry::{Renaming, Symmetry};

/// The PID file that `ensure_daemon_running()` reads and `_spawn_daemon()` writes.
pub const PID_FILE: &str = "observer.pid";
/// The file the plan's fix locks around check and spawn.
pub const SPAWN_LOCK: &str = "observer.spawn.lock";
/// The daemon's singleton lock in `__main__.py`.
pub const DAEMON_LOCK: &str = "observer.lock";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    Unlocked,
    FlockSpawn,
    DaemonWritesPid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum HookPc {
    LockSpawn,
    ReadPid,
    /// Is the process the PID file named alive?
    IsRunning(Pid),
    Spawn,
    /// Write the spawned daemon's pid.
    WritePid(Pid),
    UnlockSpawn,
    Returned,
}

/// One hook process running `ensure_daemon_running()`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Hook {
    variant: Variant,
    /// The dormant daemon actor this hook starts if it spawns.
    daemon: ActorId,
    /// A pid the hook read or spawned lives in `pc` only until the step that uses it: a hook
    /// that remembered it afterwards would tell apart states that differ in a dead value.
    pc: HookPc,
    /// It found the daemon the PID file named running (and so spawned none). Only that, not
    /// whether it found no PID file or a dead pid: the two lead to the same steps.
    found_running: bool,
}

impl Hook {
    fn new(variant: Variant, daemon: ActorId) -> Hook {
        let pc = match variant {
            Variant::Unlocked | Variant::DaemonWritesPid => HookPc::ReadPid,
            Variant::FlockSpawn => HookPc::LockSpawn,
        };
        Hook { variant, daemon, pc, found_running: false }
    }

    /// Where the hook goes once it is done: release the spawn lock if it took one.
    fn finish(&self) -> HookPc {
        match self.variant {
            Variant::Unlocked | Variant::DaemonWritesPid => HookPc::Returned,
            Variant::FlockSpawn => HookPc::UnlockSpawn,
        }
    }

    fn returned(&self) -> bool {
        self.pc == HookPc::Returned
    }
}

impl Actor for Hook {
    fn next_op(&self) -> Option<Op> {
        Some(match self.pc {
            HookPc::LockSpawn => Op::os("flock", OsOp::Flock { path: SPAWN_LOCK, nonblocking: false }),
            HookPc::ReadPid => Op::os("read_pid", OsOp::ReadFile { path: PID_FILE }),
            HookPc::IsRunning(pid) => Op::os("is_running", OsOp::IsAlive { pid }),
            HookPc::Spawn => Op::os("Popen", OsOp::SpawnProcess { actor: self.daemon }),
            HookPc::WritePid(pid) => {
                Op::os("write_pid", OsOp::WriteFile { path: PID_FILE, content: Value::Int(pid.into()) })
            }
            HookPc::UnlockSpawn => Op::os("unlock", OsOp::Funlock { path: SPAWN_LOCK }),
            HookPc::Returned => return None,
        })
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        self.pc = match (self.pc, outcome) {
            (HookPc::LockSpawn, Outcome::Ok) => HookPc::ReadPid,
            // The lock wait timed out: the hook raises without spawning.
            (HookPc::LockSpawn, _) => HookPc::Returned,
            (HookPc::ReadPid, Outcome::Value(Value::Int(pid))) => match Pid::try_from(*pid) {
                Ok(pid) => HookPc::IsRunning(pid),
                Err(_) => HookPc::Spawn,
            },
            // No PID file, or an unreadable one: no daemon known.
            (HookPc::ReadPid, _) => HookPc::Spawn,
            (HookPc::IsRunning(_), Outcome::Bool(alive)) => {
                self.found_running = *alive;
                if *alive {
                    self.finish()
                } else {
                    HookPc::Spawn
                }
            }
            (HookPc::Spawn, Outcome::Pid(pid)) => match self.variant {
                Variant::DaemonWritesPid => self.finish(),
                Variant::Unlocked | Variant::FlockSpawn => HookPc::WritePid(*pid),
            },
            // Popen failed: the hook logs it and returns.
            (HookPc::Spawn, _) => self.finish(),
            (HookPc::WritePid(_), _) => self.finish(),
            (HookPc::UnlockSpawn, _) => HookPc::Returned,
            (pc, o) => panic!("hook at {pc:?} got {o:?}"),
        };
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum DaemonPc {
    Start,
    LockSingleton,
    /// `daemon-writes-pid` only: name itself in the PID file once it holds the lock.
    WritePid,
    Exit,
    /// Holds the singleton lock and serves; the actor is done, its process lives on.
    Running,
    Exited,
}

/// The observer daemon's `__main__`, dormant until a hook spawns it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Daemon {
    pc: DaemonPc,
    pid: Option<Pid>,
    writes_pid: bool,
}

impl Daemon {
    fn new(variant: Variant) -> Daemon {
        Daemon { pc: DaemonPc::Start, pid: None, writes_pid: variant == Variant::DaemonWritesPid }
    }
}

impl Actor for Daemon {
    fn next_op(&self) -> Option<Op> {
        Some(match self.pc {
            DaemonPc::Start => Op::os("__main__", OsOp::AwaitSpawn),
            DaemonPc::LockSingleton => Op::os("flock_nb", OsOp::Flock { path: DAEMON_LOCK, nonblocking: true }),
            DaemonPc::WritePid => {
                Op::os("write_pid", OsOp::WriteFile { path: PID_FILE, content: Value::Int(self.pid?.into()) })
            }
            DaemonPc::Exit => Op::os("sys.exit", OsOp::Exit),
            DaemonPc::Running | DaemonPc::Exited => return None,
        })
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        self.pc = match (self.pc, outcome) {
            (DaemonPc::Start, Outcome::Pid(pid)) => {
                self.pid = Some(*pid);
                DaemonPc::LockSingleton
            }
            (DaemonPc::LockSingleton, Outcome::Ok) if self.writes_pid => DaemonPc::WritePid,
            (DaemonPc::LockSingleton, Outcome::Ok) => DaemonPc::Running,
            (DaemonPc::WritePid, Outcome::Ok) => DaemonPc::Running,
            // It could not name itself: serving unnamed would invite a second daemon, so it exits.
            (DaemonPc::WritePid, _) => DaemonPc::Exit,
            // Another daemon holds the singleton lock.
            (DaemonPc::LockSingleton, _) => DaemonPc::Exit,
            (DaemonPc::Exit, _) => DaemonPc::Exited,
            (pc, o) => panic!("daemon at {pc:?} got {o:?}"),
        };
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ObserverActor {
    Hook(Hook),
    Daemon(Daemon),
}

impl ObserverActor {
    fn hook(&self) -> Option<&Hook> {
        match self {
            ObserverActor::Hook(h) => Some(h),
            ObserverActor::Daemon(_) => None,
        }
    }

    fn daemon(&self) -> Option<&Daemon> {
        match self {
            ObserverActor::Daemon(d) => Some(d),
            ObserverActor::Hook(_) => None,
        }
    }
}

impl Actor for ObserverActor {
    /// A hook names its daemon actor and the pids it read and spawned; a daemon its own pid.
    fn rename(&mut self, r: &Renaming) {
        match self {
            ObserverActor::Hook(h) => {
                h.daemon = r.actor(h.daemon);
                if let HookPc::IsRunning(pid) | HookPc::WritePid(pid) = &mut h.pc {
                    *pid = r.pid(*pid);
                }
            }
            ObserverActor::Daemon(d) => d.pid = d.pid.map(|p| r.pid(p)),
        }
    }

    fn next_op(&self) -> Option<Op> {
        match self {
            ObserverActor::Hook(h) => h.next_op(),
            ObserverActor::Daemon(d) => d.next_op(),
        }
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        match self {
            ObserverActor::Hook(h) => h.on_outcome(outcome),
            ObserverActor::Daemon(d) => d.on_outcome(outcome),
        }
    }
}

/// `hooks` hook processes, and one dormant daemon per hook (each hook spawns at most once).
/// Actors `0..hooks` are the hooks; actor `hooks + i` is the daemon hook `i` would spawn.
pub struct DaemonSpawn {
    pub variant: Variant,
    pub hooks: usize,
}

impl Model for DaemonSpawn {
    type Actor = ObserverActor;

    fn init(&self) -> (World, Vec<ObserverActor>) {
        let mut world = World::new(Schema::default(), 2 * self.hooks);
        // Pids are compared only for equality: the actors rename those they remember.
        world.os.number_by_actors();
        let mut actors = Vec::with_capacity(2 * self.hooks);
        for hook in 0..self.hooks {
            world.os.start_process(&[hook]);
            actors.push(ObserverActor::Hook(Hook::new(self.variant, self.hooks + hook)));
        }
        for hook in 0..self.hooks {
            world.os.add_dormant(self.hooks + hook);
            actors.push(ObserverActor::Daemon(Daemon::new(self.variant)));
        }
        (world, actors)
    }

    fn actor_names(&self) -> Vec<String> {
        let letter = |i: usize| char::from(b'A' + i as u8);
        (0..self.hooks)
            .map(|i| format!("hook {}", letter(i)))
            .chain((0..self.hooks).map(|i| format!("daemon {}", letter(i))))
            .collect()
    }

    /// Hooks are identical, and so are their daemons: a renaming moves hook `i` and the daemon
    /// it spawns together, with the processes and the pids in the PID file.
    fn symmetry(&self) -> Option<Symmetry> {
        let units: Vec<Vec<ActorId>> = (0..self.hooks).map(|i| vec![i, self.hooks + i]).collect();
        (self.hooks >= 2).then(|| Symmetry::units(&units, Vec::new()).renumbering())
    }

    fn invariants(&self) -> Vec<Invariant<ObserverActor>> {
        vec![
            Invariant::new("one-daemon-after-hooks-return", one_daemon_after_hooks_return),
            Invariant::new("pid-file-names-running-daemon", pid_file_names_running_daemon),
        ]
    }

    fn targets(&self) -> Vec<Target<ObserverActor>> {
        let mut targets = vec![
            Target::new("a daemon was spawned", daemon_spawned),
            Target::new("a daemon holds the singleton lock", daemon_running),
            Target::new("every hook returned while a daemon runs", |v| hooks_returned(v) && daemon_running(v)),
        ];
        if self.hooks >= 2 {
            targets.push(Target::new("a hook found the daemon already running", hook_found_daemon));
            if self.variant == Variant::FlockSpawn {
                targets.push(Target::new("a hook waited for the spawn lock", hook_waits_for_spawn_lock));
            }
        }
        targets
    }
}

fn daemon_spawned(v: &View<'_, ObserverActor>) -> bool {
    v.actors.iter().filter_map(ObserverActor::daemon).any(|d| d.pid.is_some())
}

fn daemon_running(v: &View<'_, ObserverActor>) -> bool {
    v.world.os.flock_holder(DAEMON_LOCK).is_some()
}

fn hook_found_daemon(v: &View<'_, ObserverActor>) -> bool {
    v.actors.iter().filter_map(ObserverActor::hook).any(|h| h.found_running)
}

fn hook_waits_for_spawn_lock(v: &View<'_, ObserverActor>) -> bool {
    v.actors
        .iter()
        .zip(v.status)
        .any(|(a, s)| *s == Status::Waiting && a.hook().is_some_and(|h| h.pc == HookPc::LockSpawn))
}

/// Every hook has returned or died.
fn hooks_returned(v: &View<'_, ObserverActor>) -> bool {
    v.actors.iter().zip(v.status).all(|(a, s)| match a.hook() {
        Some(h) => h.returned() || *s == Status::Crashed,
        None => true,
    })
}

/// Daemons past their singleton lock whose process is alive.
fn running_daemons(v: &View<'_, ObserverActor>) -> Vec<Pid> {
    v.actors
        .iter()
        .filter_map(ObserverActor::daemon)
        .filter(|d| d.pc == DaemonPc::Running)
        .filter_map(|d| d.pid)
        .filter(|&pid| v.world.os.is_alive(pid))
        .collect()
}

fn one_daemon_after_hooks_return(v: &View<'_, ObserverActor>) -> Result<(), String> {
    let running = running_daemons(v);
    if hooks_returned(v) && running.len() > 1 {
        return Err(format!("every hook has returned and daemons {running:?} all run"));
    }
    Ok(())
}

fn pid_file_names_running_daemon(v: &View<'_, ObserverActor>) -> Result<(), String> {
    if v.phase != Phase::Final {
        return Ok(());
    }
    let Some(daemon) = v.world.os.flock_holder(DAEMON_LOCK) else {
        return Ok(()); // No daemon runs (one died): there is nothing the PID file should name.
    };
    match v.world.os.file(PID_FILE) {
        Some(Value::Int(pid)) if pid == i64::from(daemon) => Ok(()),
        Some(content) => Err(format!("the PID file says {content} but the running daemon is pid {daemon}")),
        None => Err(format!("there is no PID file but daemon pid {daemon} runs")),
    }
}

fn build(variant: Variant, params: &Params) -> Result<DaemonSpawn, String> {
    Ok(DaemonSpawn { variant, hooks: params.workers("hooks", 2, 1, racelab_harness::op::MAX_ACTORS / 2)? })
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "daemon-spawn",
        seed: "000_9bdcb1381353509b.txt",
        passage: "Phase 3: Two hooks calling `ensure_daemon_running()` simultaneously can both spawn daemons. The \
                  flock in `__main__.py` makes only one survive, but PID file points to wrong one temporarily. \
                  Solution: Add `fcntl.flock` around spawn operation in `_spawn_daemon()`.",
        invariant: "Once all hooks have returned, at most one daemon runs and the PID file names it.",
        variants: vec![
            VariantDef {
                id: "unlocked",
                summary: "as found: read the PID file, check the pid, spawn, write the PID file, with no lock",
                build: |p| Ok(Box::new(build(Variant::Unlocked, p)?)),
            },
            VariantDef {
                id: "flock-spawn",
                summary: "the plan's fix: a blocking flock on a spawn lock file held around check, spawn and PID write",
                build: |p| Ok(Box::new(build(Variant::FlockSpawn, p)?)),
            },
            VariantDef {
                id: "daemon-writes-pid",
                summary: "a fix of ours: only the daemon holding the singleton lock writes the PID file, naming itself",
                build: |p| Ok(Box::new(build(Variant::DaemonWritesPid, p)?)),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_harness::explore::shortest::replay;
    use racelab_harness::explore::state::Properties;
    use racelab_harness::explore::Bounds;
    use racelab_harness::testing::{crash, steps, texts};

    const HOOK_A: ActorId = 0;
    const HOOK_B: ActorId = 1;
    const DAEMON_A: ActorId = 2;
    const DAEMON_B: ActorId = 3;

    /// Hook A and hook B both find no PID file and both spawn; daemon B loses the singleton
    /// lock and exits; hook B writes its dead daemon's pid last.
    #[test]
    fn unlocked_two_spawns_leave_the_pid_file_naming_the_dead_daemon() {
        let model = DaemonSpawn { variant: Variant::Unlocked, hooks: 2 };
        let schedule = [
            // Both hooks find no PID file and spawn.
            steps(&[HOOK_A, HOOK_B, HOOK_A, HOOK_B]),
            // Daemon A takes the singleton lock; daemon B cannot and exits.
            steps(&[DAEMON_A, DAEMON_A, DAEMON_B, DAEMON_B, DAEMON_B]),
            // Both hooks write the PID file, hook B last.
            steps(&[HOOK_A, HOOK_B]),
        ]
        .concat();
        let r = replay(&model, &Bounds::default(), &schedule).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "read_pid(observer.pid) → ENOENT",
                "read_pid(observer.pid) → ENOENT",
                "Popen → pid 102",
                "Popen → pid 103",
                "__main__ ⇐ pid 102",
                "flock_nb(observer.lock) → ok", // daemon A takes the singleton lock
                "__main__ ⇐ pid 103",
                "flock_nb(observer.lock) → EWOULDBLOCK",
                "sys.exit → ok",
                "write_pid(observer.pid=102) → ok",
                "write_pid(observer.pid=103) → ok", // hook B writes last
            ]
        );
        assert!(r.state.status.iter().all(|s| *s == Status::Finished));
        assert_eq!(r.state.world.os.file(PID_FILE), Some(Value::Int(103)));
        assert_eq!(r.violation.unwrap().invariant, "pid-file-names-running-daemon");
    }

    /// The same start under the fix: hook B blocks on the spawn lock, then finds daemon A.
    #[test]
    fn flock_spawn_serialises_the_same_start() {
        let model = DaemonSpawn { variant: Variant::FlockSpawn, hooks: 2 };
        let schedule = [
            steps(&[HOOK_A, HOOK_B]),                 // hook B waits for the spawn lock
            steps(&[HOOK_A, HOOK_A, HOOK_A, HOOK_A]), // hook A spawns daemon A and names it
            steps(&[HOOK_B, HOOK_B, HOOK_B, HOOK_B]), // hook B finds daemon A running
            // Daemon B, never spawned, has no step: it waits from the start.
            steps(&[DAEMON_A, DAEMON_A]),
        ]
        .concat();
        let r = replay(&model, &Bounds::default(), &schedule).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "flock(observer.spawn.lock) → ok",
                "flock(observer.spawn.lock) … waits", // hook B waits for the spawn lock
                "read_pid(observer.pid) → ENOENT",
                "Popen → pid 102",
                "write_pid(observer.pid=102) → ok",
                "unlock(observer.spawn.lock) → ok",
                "flock(observer.spawn.lock) ⇐ ok", // hook B gets the spawn lock
                "read_pid(observer.pid) → 102",
                "is_running(102) → true",
                "unlock(observer.spawn.lock) → ok",
                "__main__ ⇐ pid 102",
                "flock_nb(observer.lock) → ok",
            ]
        );
        assert!(r.state.world.is_dormant(DAEMON_B));
        assert!(!r.state.any_step(), "a final state");
        assert_eq!(r.violation, None);
        let reached = r.state.targets_reached(&Properties::of(&model));
        assert_eq!(reached.count_ones() as usize, model.targets().len() - 1, "all but the lock-wait target");
    }

    /// Under the fix, hook A dies between Popen and write_pid: the kernel frees the spawn lock,
    /// hook B finds no PID file and spawns a daemon that loses the singleton lock.
    #[test]
    fn flock_spawn_with_a_hook_crash_before_write_pid_violates() {
        let model = DaemonSpawn { variant: Variant::FlockSpawn, hooks: 2 };
        let bounds = Bounds { crashes: 1, ..Bounds::default() };
        let schedule = [
            steps(&[HOOK_A, HOOK_A, HOOK_A]),
            vec![crash(HOOK_A)],
            steps(&[DAEMON_A, DAEMON_A, HOOK_B, HOOK_B, HOOK_B, DAEMON_B, DAEMON_B, DAEMON_B, HOOK_B, HOOK_B]),
        ]
        .concat();
        let r = replay(&model, &bounds, &schedule).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "flock(observer.spawn.lock) → ok",
                "read_pid(observer.pid) → ENOENT",
                "Popen → pid 102",
                "✗ crash",
                "__main__ ⇐ pid 102",
                "flock_nb(observer.lock) → ok",
                "flock(observer.spawn.lock) → ok",
                "read_pid(observer.pid) → ENOENT",
                "Popen → pid 103",
                "__main__ ⇐ pid 103",
                "flock_nb(observer.lock) → EWOULDBLOCK",
                "sys.exit → ok",
                "write_pid(observer.pid=103) → ok",
                "unlock(observer.spawn.lock) → ok",
            ]
        );
        assert_eq!(r.state.world.os.flock_holder(DAEMON_LOCK), Some(102));
        let violation = r.violation.unwrap();
        assert_eq!(violation.invariant, "pid-file-names-running-daemon");
        assert!(violation.detail.contains("running daemon is pid 102"), "{}", violation.detail);
    }

    #[test]
    fn params_are_bounded() {
        let params = |hooks| Params::new([("hooks".to_string(), racelab_harness::catalogue::Param::Int(hooks))].into());
        // Each hook comes with a dormant daemon: two actors per hook.
        assert!(build(Variant::Unlocked, &params(16)).is_ok());
        assert!(build(Variant::Unlocked, &params(0)).is_err());
        assert!(build(Variant::Unlocked, &params(17)).is_err());
        assert_eq!(race().variants.len(), 3);
    }
}
