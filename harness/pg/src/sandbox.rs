//! Shared memory that cannot outlive the embedded server.
//!
//! PostgreSQL keeps its dynamic shared memory in POSIX segments (`/dev/shm/PostgreSQL.<n>`)
//! and a small System V segment. A process that is killed (`SIGKILL`, or `initdb` ended by an
//! interrupt halfway through its bootstrap) never removes them, and nothing names the cluster
//! they belonged to, so no later run could tell them from another server's. They used to pile
//! up, a few per run of the test suite.
//!
//! So, when racelab runs as root (and only then: it needs `CAP_SYS_ADMIN`), `initdb` and the
//! server start in a mount and IPC namespace of their own, with a fresh `tmpfs` on
//! `/dev/shm`. Both namespaces, and everything in them, are freed by the kernel when their last
//! process exits, however it exits. Nothing else changes: the same pids, the same file system
//! (the new mount is private, so it does not propagate back), the same socket.
//!
//! Where the kernel refuses (a container without `CAP_SYS_ADMIN`), the program runs as before,
//! in racelab's namespaces; [`is_private`] tells which happened.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Make `cmd` start in private namespaces (if the kernel lets it) and then run as user `uid`,
/// group `gid`.
///
/// Replaces [`Command::uid`] and [`Command::gid`]: the standard library drops privileges
/// before it runs `pre_exec` hooks, and the namespaces need them. Call this before any other
/// `pre_exec` hook that must run as that user (a parent-death signal is cleared when the
/// credentials change).
pub(crate) fn privately_as(cmd: &mut Command, uid: u32, gid: u32) {
    let (none, root, tmpfs, shm, options) = (c"none", c"/", c"tmpfs", c"/dev/shm", c"mode=1777");
    // SAFETY: only async-signal-safe system calls between fork and exec, on static strings.
    unsafe {
        cmd.pre_exec(move || {
            // Each step may be refused; the program then runs less private, never not at all.
            if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWIPC) == 0 {
                // Mounts made from here on stay in this namespace; without that, no mount.
                let private = libc::mount(
                    none.as_ptr(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                );
                if private == 0 {
                    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                    libc::mount(tmpfs.as_ptr(), shm.as_ptr(), tmpfs.as_ptr(), flags, options.as_ptr().cast());
                }
            }
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Is process `pid`'s shared memory private to it: another IPC namespace than racelab's, and
/// another file system on `/dev/shm`? `None` when `/proc` cannot tell (the process is gone).
pub fn is_private(pid: u32) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let ipc = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/ipc")).ok();
    let shm = |pid: &str| std::fs::metadata(format!("/proc/{pid}/root/dev/shm")).ok().map(|m| m.dev());
    let pid = pid.to_string();
    Some(ipc(&pid)? != ipc("self")? && shm(&pid)? != shm("self")?)
}
