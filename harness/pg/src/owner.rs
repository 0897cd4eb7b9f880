//! Who made a cluster directory or a scratch database, so that a later run can remove what a
//! killed run (`SIGKILL` cannot be caught) left behind, and only that.
//!
//! racelab marks what it makes with its *owner tag*: `racelab owner pid=<pid> start=<ticks>
//! boot=<boot id>`. The process start time (field 22 of `/proc/<pid>/stat`) tells a reused pid
//! from the original; the boot id tells this machine's current boot from any other machine or
//! boot, whose processes racelab cannot see. An item is *stale* only when its tag is
//! well-formed, names this boot, and no process with that pid and start time exists. Anything
//! without a tag (made by someone else, or by an older racelab) is never touched.
//!
//! - A cluster directory `racelab-pg-*` holds the tag in its file `racelab.owner`.
//! - A scratch database `racelab_<pid>_<n>` holds it as its comment (`COMMENT ON DATABASE`).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// The name of the owner file inside a cluster directory.
pub(crate) const OWNER_FILE: &str = "racelab.owner";
/// The prefix of cluster directories.
pub(crate) const DIR_PREFIX: &str = "racelab-pg-";
/// At most this many directory entries are looked at per scan: a bound, not a limit in
/// practice.
const SCAN_LIMIT: usize = 100_000;

/// A process as the owner tag names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub pid: i32,
    pub start: u64,
    pub boot: String,
}

impl Owner {
    /// This process.
    pub fn current() -> Option<Owner> {
        let pid = std::process::id() as i32;
        Some(Owner { pid, start: start_time(pid)?, boot: boot_id()? })
    }

    pub fn tag(&self) -> String {
        format!("racelab owner pid={} start={} boot={}", self.pid, self.start, self.boot)
    }

    /// Parse a tag; anything else is `None`.
    pub fn parse(tag: &str) -> Option<Owner> {
        let rest = tag.trim().strip_prefix("racelab owner ")?;
        let mut parts = rest.split(' ');
        let pid = parts.next()?.strip_prefix("pid=")?.parse().ok()?;
        let start = parts.next()?.strip_prefix("start=")?.parse().ok()?;
        let boot = parts.next()?.strip_prefix("boot=")?.to_string();
        if parts.next().is_some() || boot.is_empty() || pid <= 0 {
            return None;
        }
        Some(Owner { pid, start, boot })
    }

    /// The owner is known to be gone: same boot, and no process with its pid and start time.
    pub fn is_gone(&self) -> bool {
        match boot_id() {
            Some(boot) if boot == self.boot => start_time(self.pid) != Some(self.start),
            _ => false,
        }
    }
}

/// The start time of process `pid` in clock ticks since boot, `None` if there is none.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold blanks and parentheses; fields resume after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow; the start time is field 22, so the 20th here.
    after.split_whitespace().nth(19)?.parse().ok()
}

fn boot_id() -> Option<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty() && !id.contains(' ')).then(|| id.to_string())
}

/// Remove the cluster directories under `parent` that a racelab process now gone left behind.
/// A server (or `initdb`'s backend) still running in such a directory is stopped first: its
/// racelab is gone, and its `postmaster.pid` and working directory prove whose it is. Returns
/// the directories removed.
pub(crate) fn remove_stale_dirs(parent: &Path) -> Vec<std::path::PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(parent) else { return removed };
    for entry in entries.take(SCAN_LIMIT).flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        // Not following symbolic links: only a real directory of racelab's.
        if !fs::symlink_metadata(&dir).map(|m| m.is_dir()).unwrap_or(false) {
            continue;
        }
        let Some(owner) = fs::read_to_string(dir.join(OWNER_FILE)).ok().and_then(|t| Owner::parse(&t)) else {
            continue;
        };
        if !owner.is_gone() || !stop_server(&dir.join("data")) {
            continue;
        }
        if remove_dir(&dir) {
            removed.push(dir);
        }
    }
    removed
}

/// How long a stale server gets to end after `SIGQUIT`, and then after `SIGKILL`.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Stop the process that `data`'s `postmaster.pid` names, if it still runs there: a server, or
/// the single-user backend of an `initdb` that died halfway (which writes its pid negated).
/// The pid counts only if that process's working directory is `data` (PostgreSQL works in its
/// data directory), so a reused pid is never signalled. Returns whether nothing runs there now.
fn stop_server(data: &Path) -> bool {
    let Ok(text) = fs::read_to_string(data.join("postmaster.pid")) else { return true };
    let Some(pid) = text.lines().next().and_then(|l| l.trim().parse::<libc::pid_t>().ok()) else { return true };
    let pid = pid.abs();
    let Ok(data) = data.canonicalize() else { return true };
    let works_in_data = |pid: libc::pid_t| fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == data);
    if pid <= 0 || !works_in_data(pid) {
        return true;
    }
    for signal in [libc::SIGQUIT, libc::SIGKILL] {
        // SAFETY: a signal to a process shown above to be this stale cluster's.
        unsafe { libc::kill(pid, signal) };
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline {
            if !works_in_data(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    false
}

/// Remove a directory that a process ended a moment ago may still have been writing to.
fn remove_dir(dir: &Path) -> bool {
    for _ in 0..10 {
        if fs::remove_dir_all(dir).is_ok() || !dir.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_junk_is_not_a_tag() {
        let me = Owner::current().expect("/proc is readable");
        assert_eq!(Owner::parse(&me.tag()), Some(me.clone()));
        assert!(!me.is_gone());
        for junk in [
            "",
            "racelab owner",
            "racelab owner pid=1 start=x boot=y",
            "pid=1 start=2 boot=z",
            "racelab owner pid=0 start=1 boot=b",
        ] {
            assert_eq!(Owner::parse(junk), None, "{junk}");
        }
        // Same pid, another start time: a reused pid, so the owner is gone.
        let reused = Owner { start: me.start + 1, ..me.clone() };
        assert!(reused.is_gone());
        // Another boot (or machine): unknown, never gone.
        let elsewhere = Owner { boot: "another-boot".into(), start: me.start + 1, ..me };
        assert!(!elsewhere.is_gone());
    }

    #[test]
    fn only_stale_tagged_dirs_are_removed() {
        let parent = tempfile::tempdir().unwrap();
        let me = Owner::current().unwrap();
        let gone = Owner { start: me.start + 1, ..me.clone() };
        let make = |name: &str, tag: Option<&str>| {
            let d = parent.path().join(name);
            fs::create_dir(&d).unwrap();
            if let Some(t) = tag {
                fs::write(d.join(OWNER_FILE), t).unwrap();
            }
            d
        };
        let stale = make("racelab-pg-stale", Some(&gone.tag()));
        let live = make("racelab-pg-live", Some(&me.tag()));
        let untagged = make("racelab-pg-untagged", None);
        let foreign = make("other-stale", Some(&gone.tag()));
        let removed = remove_stale_dirs(parent.path());
        assert_eq!(removed, vec![stale.clone()]);
        assert!(!stale.exists() && live.exists() && untagged.exists() && foreign.exists());
    }

    /// A stale directory whose `postmaster.pid` names a process working in its data directory
    /// (a server that outlived its racelab) has that process stopped, then goes; a pid whose
    /// process works elsewhere (reused since) is never signalled.
    #[test]
    fn a_server_left_running_in_a_stale_dir_is_stopped_and_a_reused_pid_is_not() {
        let parent = tempfile::tempdir().unwrap();
        let me = Owner::current().unwrap();
        let gone = Owner { start: me.start + 1, ..me };
        let stale_dir = |name: &str| {
            let d = parent.path().join(name);
            fs::create_dir_all(d.join("data")).unwrap();
            fs::write(d.join(OWNER_FILE), gone.tag()).unwrap();
            d
        };
        let sleeper = |cwd: &Path| std::process::Command::new("sleep").arg("30").current_dir(cwd).spawn().unwrap();
        let alive = |child: &mut std::process::Child| child.try_wait().unwrap().is_none();

        let ours = stale_dir("racelab-pg-ours");
        let mut server = sleeper(&ours.join("data"));
        fs::write(ours.join("data/postmaster.pid"), format!("{}\n", server.id())).unwrap();
        let reused = stale_dir("racelab-pg-reused");
        let mut stranger = sleeper(parent.path());
        // A single-user backend writes its pid negated.
        fs::write(reused.join("data/postmaster.pid"), format!("-{}\n", stranger.id())).unwrap();

        let mut removed = remove_stale_dirs(parent.path());
        removed.sort();
        assert_eq!(removed, vec![ours, reused]);
        assert!(!alive(&mut server), "the stale server was stopped");
        assert!(alive(&mut stranger), "a process working elsewhere was signalled");
        stranger.kill().unwrap();
        stranger.wait().unwrap();
    }
}
