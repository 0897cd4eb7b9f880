//! A private directory and one worker process per actor, behind [`RealFiles`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use racelab_harness::op::{ActorId, Applied, ErrorCode, Outcome, Value};
use racelab_harness::sim::fs::{FsOp, Image, RealFiles};

use crate::cleanup::{remove_stale_dirs, scratch_base, with_live, DIR_PREFIX};
use crate::protocol::{reply, request};
use crate::worker::Worker;

/// How long an op the simulator expects to complete may take before the run fails.
const REPLY_MS: i32 = 5_000;
/// How long an op the simulator expects to block is watched before it counts as blocked. A
/// `flock` that the kernel grants replies within microseconds; a loaded machine needs margin.
const BLOCK_MS: i32 = 50;
/// Most files a directory listing returns.
const MAX_LISTING: usize = 256;

/// A real directory driven as the simulator's files are.
pub struct RealDir {
    path: PathBuf,
    workers: Vec<Option<Worker>>,
    /// An actor's op that did not return yet.
    waiting: Vec<bool>,
    /// The last number `mkstemp` used, as in the simulator.
    temp_last: u16,
    failure: Option<String>,
}

impl RealDir {
    /// A fresh private directory. Directories that dead racelab processes left are removed first.
    pub fn new() -> Result<RealDir, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = scratch_base();
        remove_stale_dirs(&base);
        let path = base.join(format!("{DIR_PREFIX}{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        with_live(|l| l.dirs.push(path.clone()));
        Ok(RealDir { path, workers: Vec::new(), waiting: Vec::new(), temp_last: 0, failure: None })
    }

    /// The private directory.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The worker processes' pids, for tests that check nothing is left behind.
    pub fn worker_pids(&self) -> Vec<i32> {
        self.workers.iter().flatten().map(|w| w.pid).collect()
    }

    fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            self.failure = Some(why);
        }
    }

    fn kill_all(&mut self) {
        for w in self.workers.iter_mut().filter_map(Option::take) {
            w.kill();
        }
        self.waiting.iter_mut().for_each(|w| *w = false);
    }

    fn respawn(&mut self, actor: ActorId) {
        if let Some(w) = self.workers[actor].take() {
            w.kill();
        }
        self.waiting[actor] = false;
        match Worker::spawn(&self.path) {
            Ok(w) => self.workers[actor] = Some(w),
            Err(e) => self.fail(e),
        }
    }

    /// Empty the directory and write `image` into it.
    fn rebuild(&mut self, image: &Image) {
        let result = (|| -> std::io::Result<()> {
            for entry in std::fs::read_dir(&self.path)?.take(MAX_LISTING) {
                std::fs::remove_file(entry?.path())?;
            }
            for (name, bytes) in image {
                std::fs::write(self.path.join(name), bytes)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.fail(format!("cannot rebuild {}: {e}", self.path.display()));
        }
        self.temp_last = 0;
    }

    fn worker(&mut self, actor: ActorId) -> Option<&mut Worker> {
        self.workers.get_mut(actor).and_then(Option::as_mut)
    }
}

impl RealFiles for RealDir {
    fn reset(&mut self, actors: usize, seed: &Image) {
        self.kill_all();
        self.rebuild(seed);
        self.workers = (0..actors).map(|_| None).collect();
        self.waiting = vec![false; actors];
        for a in 0..actors {
            self.respawn(a);
        }
    }

    fn apply(&mut self, actor: ActorId, op: &FsOp, expect_blocked: bool) -> Applied {
        let line = request(op, self.temp_last + 1);
        let wait = if expect_blocked { BLOCK_MS } else { REPLY_MS };
        let Some(w) = self.worker(actor) else {
            self.fail(format!("actor {actor} has no worker"));
            return Applied::Done(Outcome::Err(ErrorCode::EIO));
        };
        let got = w.send(&line).and_then(|()| w.recv(wait));
        match got {
            Ok(Some(text)) => match reply(&text) {
                Some(outcome) => {
                    if let (FsOp::Mkstemp { .. }, Outcome::Value(Value::Str(name))) = (op, &outcome) {
                        self.temp_last =
                            name.rsplit("tmp").next().and_then(|n| n.parse().ok()).unwrap_or(self.temp_last);
                    }
                    Applied::Done(outcome)
                }
                None => {
                    self.fail(format!("actor {actor}: unreadable reply {text:?}"));
                    Applied::Done(Outcome::Err(ErrorCode::EIO))
                }
            },
            Ok(None) => {
                if !expect_blocked {
                    self.fail(format!("actor {actor}: {op:?} did not return within {REPLY_MS} ms"));
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

    fn poll(&mut self, actor: ActorId, expect: bool) -> Option<Outcome> {
        if !self.waiting.get(actor).copied().unwrap_or(false) {
            return None;
        }
        let wait = if expect { REPLY_MS } else { BLOCK_MS };
        let got = self.worker(actor)?.recv(wait);
        match got {
            Ok(Some(text)) => {
                self.waiting[actor] = false;
                let outcome = reply(&text);
                if outcome.is_none() {
                    self.fail(format!("actor {actor}: unreadable reply {text:?}"));
                }
                outcome
            }
            Ok(None) => None,
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    fn cancel_wait(&mut self, actor: ActorId) -> Outcome {
        self.fail(format!("actor {actor}: timeouts of a waiting op are not run on real files"));
        Outcome::Err(ErrorCode::ETIMEDOUT)
    }

    fn crash(&mut self, dead: &[ActorId]) {
        for &a in dead {
            if a < self.workers.len() {
                // The restarted actor runs in a new process.
                self.respawn(a);
            }
        }
    }

    fn power_loss(&mut self, image: &Image) {
        let actors = self.workers.len();
        self.kill_all();
        self.rebuild(image);
        for a in 0..actors {
            self.respawn(a);
        }
    }

    fn listing(&mut self) -> Image {
        let mut out: Image = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.path) else { return out };
        for entry in entries.flatten().take(MAX_LISTING) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            out.push((racelab_harness::intern(name), bytes));
        }
        out.sort();
        out
    }

    fn report(&mut self, failure: String) {
        self.fail(failure);
    }

    fn failure(&self) -> Option<String> {
        self.failure.clone()
    }
}

impl Drop for RealDir {
    fn drop(&mut self) {
        self.kill_all();
        let _ = std::fs::remove_dir_all(&self.path);
        with_live(|l| l.dirs.retain(|d| d != &self.path));
    }
}
