//! What must not outlive racelab: private directories and worker processes.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Every private directory starts with this, then racelab's pid, then a counter.
pub const DIR_PREFIX: &str = "racelab-files-";

/// Where private directories go: tmpfs when there is one (fsync is the simulator's business,
/// not the disk's), else the system's temporary directory.
pub fn scratch_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && std::fs::metadata(shm).is_ok_and(|m| !m.permissions().readonly()) {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Remove the directories of racelab processes that no longer run (killed with SIGKILL, which
/// cannot be caught). Returns how many were removed.
pub fn remove_stale_dirs(base: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten().take(10_000) {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<libc::pid_t>().ok()) else { continue };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let gone =
            unsafe { libc::kill(pid, 0) } != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

pub(crate) struct Live {
    pub dirs: Vec<PathBuf>,
    pub pids: Vec<libc::pid_t>,
}

pub(crate) fn live() -> &'static Mutex<Live> {
    static LIVE: Mutex<Live> = Mutex::new(Live { dirs: Vec::new(), pids: Vec::new() });
    &LIVE
}

pub(crate) fn with_live<T>(f: impl FnOnce(&mut Live) -> T) -> T {
    f(&mut live().lock().unwrap_or_else(|p| p.into_inner()))
}

/// Kill every worker and remove every private directory of this process.
pub fn cleanup_all() {
    let (dirs, pids) = with_live(|l| (std::mem::take(&mut l.dirs), std::mem::take(&mut l.pids)));
    for pid in pids {
        // SAFETY: killing and reaping our own children.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// On SIGINT or SIGTERM: clean up, then exit with status 130. Installed once; if another part
/// of racelab installed its handler first (the PostgreSQL backend), that one stays, and the
/// workers still die through `PR_SET_PDEATHSIG` and the directory is removed at the next start.
pub fn install_interrupt_cleanup() -> Result<(), String> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = ctrlc::set_handler(|| {
            cleanup_all();
            std::process::exit(130);
        });
    });
    Ok(())
}
