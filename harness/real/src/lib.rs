//! racelab on the real operating system.
//!
//! [`RealDir`] runs the file ops of a model's [`racelab_harness::sim::Fs`] as real syscalls in a
//! private directory. Each actor's ops run in a child process of its own, forked for it and
//! driven one op at a time over a pipe, so that a process crash is a real `SIGKILL` at the
//! chosen step and a `flock` blocks in the kernel. A power loss cannot be pulled for real: as in
//! ALICE (Pillai et al., OSDI 2014) the simulator records the trace, and the directory is
//! rebuilt as the durable state the explorer picked before the real recovery code runs on it.
//!
//! Nothing is left behind: the directory is removed on drop and on SIGINT/SIGTERM, children die
//! with racelab through `PR_SET_PDEATHSIG`, and directories of dead racelab processes are
//! removed when the next one starts.

mod cleanup;
mod dir;
mod procs;
mod protocol;
mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use racelab_harness::run::Backend;

pub use cleanup::{cleanup_all, install_interrupt_cleanup, remove_stale_dirs, scratch_base, DIR_PREFIX};
pub use dir::RealDir;
pub use procs::RealProcs;
pub use worker::serve_stdio;

/// Set in the environment of a binary started as a worker.
const WORKER_ENV: &str = "RACELAB_REAL_WORKER";
/// Names the daemon binary explicitly.
pub const DAEMON_ENV: &str = "RACELAB_DAEMON";

static SELF_SERVES: AtomicBool = AtomicBool::new(false);

/// Call first thing in `main`: when this process was started as a worker, serve and exit;
/// otherwise remember that this binary can be started as one (so no separate daemon binary is
/// needed next to it).
pub fn serve_if_worker() {
    if std::env::var_os(WORKER_ENV).is_some() {
        serve_stdio();
    }
    SELF_SERVES.store(true, Ordering::Relaxed);
}

/// The binary a spawn starts, and the environment it needs: `$RACELAB_DAEMON`, else
/// `racelab-daemon` next to this executable (or one directory up, for test binaries), else this
/// executable itself when it called [`serve_if_worker`].
pub fn daemon_binary() -> Result<(PathBuf, Vec<(String, String)>), String> {
    if let Some(p) = std::env::var_os(DAEMON_ENV) {
        return Ok((PathBuf::from(p), Vec::new()));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    for candidate in [dir.join("racelab-daemon"), dir.join("../racelab-daemon")] {
        if candidate.is_file() {
            return Ok((candidate, Vec::new()));
        }
    }
    if SELF_SERVES.load(Ordering::Relaxed) {
        return Ok((exe, vec![(WORKER_ENV.to_string(), "1".to_string())]));
    }
    Err(format!("no daemon binary: build racelab-daemon (cargo build -p racelab-real) or set {DAEMON_ENV}"))
}

/// The `real` backend: a fresh private directory with its worker processes, for files, and one
/// for processes.
pub fn files_backend() -> Result<Backend, String> {
    install_interrupt_cleanup()?;
    let dir = RealDir::new()?;
    // A missing daemon binary only matters to a model that spawns one.
    let (daemon, env) = match daemon_binary() {
        Ok((binary, env)) => (Ok(binary), env),
        Err(why) => (Err(why), Vec::new()),
    };
    let procs = RealProcs::new(daemon, env)?;
    Ok(Backend::Files { name: "real", files: Arc::new(Mutex::new(dir)), processes: Arc::new(Mutex::new(procs)) })
}
