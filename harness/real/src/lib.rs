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
mod protocol;
mod worker;

use std::sync::{Arc, Mutex};

use racelab_harness::run::Backend;

pub use cleanup::{cleanup_all, install_interrupt_cleanup, remove_stale_dirs, scratch_base, DIR_PREFIX};
pub use dir::RealDir;

/// The `real` backend: a fresh private directory with its worker processes.
pub fn files_backend() -> Result<Backend, String> {
    install_interrupt_cleanup()?;
    let dir = RealDir::new()?;
    Ok(Backend::Files { name: "real", files: Arc::new(Mutex::new(dir)) })
}
