//! Real processes for the simulator's OS ops (`daemon-spawn`): each started process is a worker
//! forked at reset (a hook); a spawn starts the `racelab-daemon` binary as a new process (the
//! controller runs the hook's `Popen` itself, so that it can drive the daemon step by step);
//! PID files are real files holding real pids; `kill(pid, 0)` and `flock` are real syscalls run
//! by the process of the actor that calls them; a crash is a `SIGKILL`.
//!
//! Pids in ops and outcomes are the simulator's: the controller maps each simulated pid to the
//! real process that stands for it, in both directions.

use std::path::PathBuf;

use racelab_harness::op::{ActorId, Applied, ErrorCode, OsOp, Outcome, Pid, Value};
use racelab_harness::sim::RealProcesses;

use crate::cleanup::{remove_stale_dirs, scratch_base, with_live, DIR_PREFIX};
use crate::protocol::{os_request, reply};
use crate::worker::Worker;

/// How long an op the simulator expects to complete may take.
const REPLY_MS: i32 = 5_000;
/// How long an op the simulator expects to block is watched before it counts as blocked.
const BLOCK_MS: i32 = 50;

/// The real processes of one exploration, in a private directory.
pub struct RealProcs {
    dir: PathBuf,
    /// The binary a spawn starts, or why there is none.
    daemon: Result<PathBuf, String>,
    daemon_env: Vec<(String, String)>,
    /// The process each actor runs in, while it lives.
    procs: Vec<Option<Worker>>,
    /// The simulated pid of each actor's process.
    sim_pid: Vec<Option<Pid>>,
    /// Simulated pid → real pid.
    pids: Vec<(Pid, libc::pid_t)>,
    /// An actor's `flock` that did not return yet.
    waiting: Vec<bool>,
    /// A dormant actor waits for its spawn.
    awaiting_spawn: Vec<bool>,
    failure: Option<String>,
}

impl RealProcs {
    /// A private directory; `daemon` is the binary a spawn starts (with `daemon_env` set).
    pub fn new(daemon: Result<PathBuf, String>, daemon_env: Vec<(String, String)>) -> Result<RealProcs, String> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = scratch_base();
        remove_stale_dirs(&base);
        let dir = base.join(format!("{DIR_PREFIX}{}-p{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        with_live(|l| l.dirs.push(dir.clone()));
        Ok(RealProcs {
            dir,
            daemon,
            daemon_env,
            procs: Vec::new(),
            sim_pid: Vec::new(),
            pids: Vec::new(),
            waiting: Vec::new(),
            awaiting_spawn: Vec::new(),
            failure: None,
        })
    }

    /// The worker processes' pids, for tests that check nothing is left behind.
    pub fn worker_pids(&self) -> Vec<i32> {
        self.procs.iter().flatten().map(|w| w.pid).collect()
    }

    fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            self.failure = Some(why);
        }
    }

    fn real_pid(&self, sim: Pid) -> Option<libc::pid_t> {
        self.pids.iter().find(|(s, _)| *s == sim).map(|(_, r)| *r)
    }

    fn sim_of(&self, real: i64) -> Option<Pid> {
        self.pids.iter().find(|(_, r)| i64::from(*r) == real).map(|(s, _)| *s)
    }

    fn kill_all(&mut self) {
        for w in self.procs.iter_mut().filter_map(Option::take) {
            w.kill();
        }
    }

    /// A file's content as the simulator holds it: a real pid read back as its simulated pid.
    fn value_of(&mut self, text: &str) -> Value {
        let text = text.trim();
        if text.is_empty() {
            return Value::Null;
        }
        match text.parse::<i64>() {
            Ok(real) => Value::Int(self.sim_of(real).map_or(real, i64::from)),
            Err(_) => Value::Str(racelab_harness::intern(text)),
        }
    }

    /// A value as written to a real file: a simulated pid as its real pid.
    fn text_of(&self, v: Value) -> String {
        match v {
            Value::Null => String::new(),
            Value::Int(i) => match Pid::try_from(i).ok().and_then(|p| self.real_pid(p)) {
                Some(real) => real.to_string(),
                None => i.to_string(),
            },
            Value::Str(s) => s.to_string(),
        }
    }

    fn ask(&mut self, actor: ActorId, line: &str, expect_blocked: bool) -> Applied {
        let wait = if expect_blocked { BLOCK_MS } else { REPLY_MS };
        let Some(w) = self.procs.get_mut(actor).and_then(Option::as_mut) else {
            self.fail(format!("actor {actor} runs in no live process"));
            return Applied::Done(Outcome::Err(ErrorCode::EIO));
        };
        match w.send(line).and_then(|()| w.recv(wait)) {
            Ok(Some(text)) => match reply(&text) {
                Some(o) => Applied::Done(o),
                None => {
                    self.fail(format!("actor {actor}: unreadable reply {text:?}"));
                    Applied::Done(Outcome::Err(ErrorCode::EIO))
                }
            },
            Ok(None) => {
                if !expect_blocked {
                    self.fail(format!("actor {actor}: `{line}` did not return within {REPLY_MS} ms"));
                }
                self.waiting[actor] = true;
                Applied::Blocked
            }
            Err(e) => {
                self.fail(e);
                Applied::Done(Outcome::Err(ErrorCode::EIO))
            }
        }
    }
}

impl RealProcesses for RealProcs {
    fn reset(&mut self, actors: usize, processes: &[(Pid, Vec<ActorId>)], files: &[(&'static str, Value)]) {
        self.kill_all();
        self.procs = (0..actors).map(|_| None).collect();
        self.sim_pid = vec![None; actors];
        self.waiting = vec![false; actors];
        self.awaiting_spawn = vec![false; actors];
        self.pids.clear();
        let wiped = (|| -> std::io::Result<()> {
            for entry in std::fs::read_dir(&self.dir)?.take(256) {
                std::fs::remove_file(entry?.path())?;
            }
            Ok(())
        })();
        if let Err(e) = wiped {
            self.fail(format!("cannot empty {}: {e}", self.dir.display()));
        }
        for (pid, members) in processes {
            if members.len() != 1 {
                self.fail("a process with several tasks is not run on real processes".into());
                continue;
            }
            match Worker::spawn(&self.dir) {
                Ok(w) => {
                    self.pids.push((*pid, w.pid));
                    self.sim_pid[members[0]] = Some(*pid);
                    self.procs[members[0]] = Some(w);
                }
                Err(e) => self.fail(e),
            }
        }
        for (path, v) in files {
            let text = self.text_of(*v);
            if let Err(e) = std::fs::write(self.dir.join(path), text) {
                self.fail(format!("cannot write {path}: {e}"));
            }
        }
    }

    fn apply(&mut self, actor: ActorId, op: &OsOp, sim: &Applied) -> Applied {
        let expect_blocked = *sim == Applied::Blocked;
        match *op {
            OsOp::AwaitSpawn => match self.sim_pid[actor] {
                Some(pid) if self.procs[actor].is_some() => Applied::Done(Outcome::Pid(pid)),
                _ => {
                    self.awaiting_spawn[actor] = true;
                    Applied::Blocked
                }
            },
            OsOp::SpawnProcess { actor: child } => {
                let Applied::Done(Outcome::Pid(pid)) = sim else {
                    self.fail(format!("the simulator's spawn returned {sim:?}"));
                    return sim.clone();
                };
                let env: Vec<(&str, &str)> = self.daemon_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let started = match &self.daemon {
                    Ok(binary) => Worker::exec(&self.dir, binary, &env),
                    Err(why) => Err(why.clone()),
                };
                match started {
                    Ok(w) => {
                        self.pids.push((*pid, w.pid));
                        self.sim_pid[child] = Some(*pid);
                        self.procs[child] = Some(w);
                        Applied::Done(Outcome::Pid(*pid))
                    }
                    Err(e) => {
                        self.fail(e);
                        Applied::Done(Outcome::Err(ErrorCode::EIO))
                    }
                }
            }
            OsOp::IsAlive { pid } => match self.real_pid(pid) {
                Some(real) => self.ask(actor, &format!("A {real}"), false),
                // A pid no process ever had is not alive.
                None => Applied::Done(Outcome::Bool(false)),
            },
            OsOp::Exit => match self.procs[actor].take() {
                Some(w) => {
                    if let Err(e) = w.send_exit() {
                        self.fail(e);
                    }
                    w.reap();
                    Applied::Done(Outcome::Ok)
                }
                None => {
                    self.fail(format!("actor {actor} exits but runs in no live process"));
                    Applied::Done(Outcome::Ok)
                }
            },
            OsOp::SpawnTask { .. } => {
                self.fail("spawning a task inside a process is not run on real processes".into());
                sim.clone()
            }
            OsOp::WriteFile { content, .. } => {
                let text = self.text_of(content);
                let line = os_request(op, &text).expect("a file op");
                self.ask(actor, &line, expect_blocked)
            }
            OsOp::ReadFile { .. } => {
                let line = os_request(op, "").expect("a file op");
                match self.ask(actor, &line, expect_blocked) {
                    Applied::Done(Outcome::Value(Value::Str(text))) => {
                        Applied::Done(Outcome::Value(self.value_of(text)))
                    }
                    other => other,
                }
            }
            OsOp::RemoveFile { .. } | OsOp::Flock { .. } | OsOp::Funlock { .. } => {
                let line = os_request(op, "").expect("a file op");
                self.ask(actor, &line, expect_blocked)
            }
        }
    }

    fn poll(&mut self, actor: ActorId, expect: bool) -> Option<Outcome> {
        if self.awaiting_spawn[actor] {
            if self.procs[actor].is_some() {
                self.awaiting_spawn[actor] = false;
                return self.sim_pid[actor].map(Outcome::Pid);
            }
            return None;
        }
        if !self.waiting[actor] {
            return None;
        }
        let wait = if expect { REPLY_MS } else { BLOCK_MS };
        let got = self.procs[actor].as_mut()?.recv(wait);
        match got {
            Ok(Some(text)) => {
                self.waiting[actor] = false;
                reply(&text)
            }
            Ok(None) => None,
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    fn crash(&mut self, dead: &[ActorId]) {
        for &a in dead {
            self.waiting[a] = false;
            self.awaiting_spawn[a] = false;
            if let Some(w) = self.procs[a].take() {
                w.kill();
            }
        }
    }

    fn report(&mut self, failure: String) {
        self.fail(failure);
    }

    fn failure(&self) -> Option<String> {
        self.failure.clone()
    }

    fn describe(&mut self) -> Vec<String> {
        let mut files: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .take(256)
                    .map(|e| {
                        let content = std::fs::read_to_string(e.path()).unwrap_or_default();
                        format!("{}={}", e.file_name().to_string_lossy(), content.trim())
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let live: Vec<String> = self
            .procs
            .iter()
            .zip(&self.sim_pid)
            .filter_map(|(w, s)| w.as_ref().and(*s))
            .map(|s| format!("{s} (real {})", self.real_pid(s).unwrap_or_default()))
            .collect();
        vec![format!("real files: {}", files.join(", ")), format!("real live processes: {}", live.join(", "))]
    }
}

impl Drop for RealProcs {
    fn drop(&mut self) {
        self.kill_all();
        let _ = std::fs::remove_dir_all(&self.dir);
        with_live(|l| l.dirs.retain(|d| d != &self.dir));
    }
}
