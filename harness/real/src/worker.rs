//! A worker: a child process that runs one actor's file ops as real syscalls, one request line
//! at a time. Forked without `exec`, so it only calls the C library and allocates.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::Path;

use crate::protocol::{hex, unhex};

/// Descriptor slots per actor, as in the simulator.
const SLOTS: usize = racelab_harness::sim::fs::MAX_FDS as usize;
/// Longest request or reply line.
const MAX_LINE: usize = 8192;
/// Most names `mkstemp` tries.
const MAX_TEMP_TRIES: u16 = 1000;

/// The parent's handle on one worker.
pub struct Worker {
    pub pid: libc::pid_t,
    tx: RawFd,
    rx: RawFd,
    buf: Vec<u8>,
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

impl Worker {
    /// Fork a worker that runs in `dir`. It dies with this thread's process (`PR_SET_PDEATHSIG`).
    pub fn spawn(dir: &Path) -> Result<Worker, String> {
        let dir = CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        let mut req = [0; 2];
        let mut rep = [0; 2];
        // SAFETY: plain pipe creation into local arrays.
        unsafe {
            if libc::pipe2(req.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                return Err(format!("pipe: errno {}", last_errno()));
            }
            if libc::pipe2(rep.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                libc::close(req[0]);
                libc::close(req[1]);
                return Err(format!("pipe: errno {}", last_errno()));
            }
        }
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the child only makes C library calls and allocates (glibc's malloc is safe
        // after fork), and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: errno {}", last_errno()));
        }
        if pid == 0 {
            // SAFETY: see above; this branch never returns.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
                if libc::getppid() != parent {
                    libc::_exit(0);
                }
                libc::close(req[1]);
                libc::close(rep[0]);
                if libc::chdir(dir.as_ptr()) != 0 {
                    libc::_exit(3);
                }
                serve(req[0], rep[1]);
                libc::_exit(0);
            }
        }
        // SAFETY: closing the child's ends in the parent.
        unsafe {
            libc::close(req[0]);
            libc::close(rep[1]);
        }
        crate::cleanup::with_live(|l| l.pids.push(pid));
        Ok(Worker { pid, tx: req[1], rx: rep[0], buf: Vec::new() })
    }

    /// Start `binary` as a worker (it serves requests on standard input and output) in `dir`,
    /// with `env` set. It dies with this thread's process (`PR_SET_PDEATHSIG`).
    pub fn exec(dir: &Path, binary: &Path, env: &[(&str, &str)]) -> Result<Worker, String> {
        use std::os::fd::IntoRawFd;
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(binary);
        command.current_dir(dir).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
        command.stderr(std::process::Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let pid = child.id() as libc::pid_t;
        let tx = child.stdin.take().expect("piped").into_raw_fd();
        let rx = child.stdout.take().expect("piped").into_raw_fd();
        // The controller reaps it itself (`kill`, `reap`).
        drop(child);
        crate::cleanup::with_live(|l| l.pids.push(pid));
        Ok(Worker { pid, tx, rx, buf: Vec::new() })
    }

    /// The worker exits by itself (`sys.exit`): reap it.
    pub fn reap(self) {
        // SAFETY: reaping our own child, closing our own descriptors.
        unsafe {
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            libc::close(self.tx);
            libc::close(self.rx);
        }
        crate::cleanup::with_live(|l| l.pids.retain(|&p| p != self.pid));
    }

    /// Tell the worker to exit (`sys.exit`); it does not reply.
    pub fn send_exit(&self) -> Result<(), String> {
        write_all(self.tx, b"Z\n").map_err(|e| format!("worker {}: write: errno {e}", self.pid))
    }

    /// Send one request line.
    pub fn send(&mut self, line: &str) -> Result<(), String> {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        write_all(self.tx, &bytes).map_err(|e| format!("worker {}: write: errno {e}", self.pid))
    }

    /// The next reply line, if one arrives within `timeout_ms`.
    pub fn recv(&mut self, timeout_ms: i32) -> Result<Option<String>, String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms.max(0) as u64);
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..nl]).into_owned()));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now()).as_millis() as i32;
            let mut pfd = libc::pollfd { fd: self.rx, events: libc::POLLIN, revents: 0 };
            // SAFETY: polling one valid descriptor.
            let n = unsafe { libc::poll(&mut pfd, 1, left) };
            if n < 0 {
                if last_errno() == libc::EINTR {
                    continue;
                }
                return Err(format!("worker {}: poll: errno {}", self.pid, last_errno()));
            }
            if n == 0 {
                return Ok(None);
            }
            let mut chunk = [0u8; 4096];
            // SAFETY: reading into a local buffer of its length.
            let got = unsafe { libc::read(self.rx, chunk.as_mut_ptr().cast(), chunk.len()) };
            if got <= 0 {
                return Err(format!("worker {} hung up", self.pid));
            }
            self.buf.extend_from_slice(&chunk[..got as usize]);
            if self.buf.len() > MAX_LINE {
                return Err(format!("worker {}: reply longer than {MAX_LINE} bytes", self.pid));
            }
        }
    }

    /// `SIGKILL` the worker and reap it: once this returns, the kernel has closed its files and
    /// released its locks.
    pub fn kill(self) {
        // SAFETY: killing and reaping our own child, closing our own descriptors.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            libc::close(self.tx);
            libc::close(self.rx);
        }
        crate::cleanup::with_live(|l| l.pids.retain(|&p| p != self.pid));
    }
}

fn write_all(fd: RawFd, mut bytes: &[u8]) -> Result<(), i32> {
    while !bytes.is_empty() {
        // SAFETY: writing from a valid slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = last_errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// What a worker holds between requests: its descriptor slots, and the files it locked by path
/// (one open file description per path, so that its `flock`s belong to the process, as the
/// simulator's process-level `flock` says).
struct Local {
    fds: [RawFd; SLOTS],
    locks: Vec<(Vec<u8>, RawFd)>,
}

/// Most paths one worker locks.
const MAX_LOCKS: usize = 8;

/// Serve requests on standard input and output: the entry point of an `exec`ed worker, such
/// as the `racelab-daemon` binary.
pub fn serve_stdio() -> ! {
    serve(0, 1);
    // SAFETY: leaving the process.
    unsafe { libc::_exit(0) }
}

/// The worker's loop: read a request, run it, reply; until the pipe closes.
pub(crate) fn serve(rx: RawFd, tx: RawFd) {
    let mut local = Local { fds: [-1 as RawFd; SLOTS], locks: Vec::new() };
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let nl = loop {
            if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                break nl;
            }
            let mut chunk = [0u8; 4096];
            // SAFETY: reading into a local buffer of its length.
            let got = unsafe { libc::read(rx, chunk.as_mut_ptr().cast(), chunk.len()) };
            if got <= 0 || buf.len() > MAX_LINE {
                return;
            }
            buf.extend_from_slice(&chunk[..got as usize]);
        };
        let line: Vec<u8> = buf.drain(..=nl).collect();
        let line = String::from_utf8_lossy(&line[..nl]).into_owned();
        if line == "Z" {
            // `sys.exit()`: no reply; the controller reaps the process.
            // SAFETY: leaving the process.
            unsafe { libc::_exit(0) }
        }
        let reply = run(&line, &mut local);
        if write_all(tx, format!("{reply}\n").as_bytes()).is_err() {
            return;
        }
    }
}

fn cpath(hexed: &str) -> Option<CString> {
    CString::new(unhex(hexed)?).ok()
}

fn ok_or_errno(rc: libc::c_int) -> String {
    if rc < 0 {
        format!("E {}", last_errno())
    } else {
        "K".into()
    }
}

/// Run one request; the reply line.
fn run(line: &str, local: &mut Local) -> String {
    let fds = &mut local.fds;
    let f: Vec<&str> = line.split(' ').collect();
    let slot = |i: usize| f.get(i).and_then(|s| s.parse::<usize>().ok()).filter(|&s| s < SLOTS);
    let bad = || format!("E {}", libc::EINVAL);
    // SAFETY (every block below): C library calls on descriptors this worker owns and on
    // NUL-terminated paths.
    unsafe {
        match f.first().copied() {
            Some("O") => {
                let (Some(s), Some(path)) = (slot(1), f.get(2).and_then(|p| cpath(p))) else { return bad() };
                let mut flags = libc::O_RDWR | libc::O_CLOEXEC;
                for (k, flag) in [(3, libc::O_CREAT), (4, libc::O_EXCL), (5, libc::O_TRUNC)] {
                    if f.get(k) == Some(&"1") {
                        flags |= flag;
                    }
                }
                let fd = libc::open(path.as_ptr(), flags, 0o644 as libc::c_uint);
                if fd < 0 {
                    return format!("E {}", last_errno());
                }
                fds[s] = fd;
                "K".into()
            }
            Some("M") => {
                let (Some(s), Some(prefix), Some(start)) =
                    (slot(1), f.get(2).and_then(|p| unhex(p)), f.get(3).and_then(|n| n.parse::<u16>().ok()))
                else {
                    return bad();
                };
                let prefix = String::from_utf8_lossy(&prefix).into_owned();
                for n in start..start.saturating_add(MAX_TEMP_TRIES) {
                    let name = racelab_harness::sim::fs::temp_name_text(&prefix, n);
                    let Ok(c) = CString::new(name.clone()) else { return bad() };
                    let fd =
                        libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC, 0o600);
                    if fd >= 0 {
                        fds[s] = fd;
                        return format!("V {}", hex(name.as_bytes()));
                    }
                    if last_errno() != libc::EEXIST {
                        return format!("E {}", last_errno());
                    }
                }
                format!("E {}", libc::EEXIST)
            }
            Some("W") => {
                let (Some(s), Some(off), Some(data)) =
                    (slot(1), f.get(2).and_then(|o| o.parse::<i64>().ok()), f.get(3).and_then(|d| unhex(d)))
                else {
                    return bad();
                };
                let n = libc::pwrite(fds[s], data.as_ptr().cast(), data.len(), off);
                if n < 0 {
                    format!("E {}", last_errno())
                } else if n as usize != data.len() {
                    format!("E {}", libc::EIO)
                } else {
                    "K".into()
                }
            }
            Some("S") => slot(1).map_or_else(bad, |s| ok_or_errno(libc::fsync(fds[s]))),
            Some("C") => {
                let Some(s) = slot(1) else { return bad() };
                if fds[s] >= 0 {
                    libc::close(fds[s]);
                    fds[s] = -1;
                }
                "K".into()
            }
            Some("L") => {
                let Some(s) = slot(1) else { return bad() };
                let nb = if f.get(2) == Some(&"1") { libc::LOCK_NB } else { 0 };
                ok_or_errno(libc::flock(fds[s], libc::LOCK_EX | nb))
            }
            Some("U") => {
                let Some(s) = slot(1) else { return bad() };
                if fds[s] >= 0 {
                    libc::flock(fds[s], libc::LOCK_UN);
                }
                "K".into()
            }
            Some("R") => {
                let Some(path) = f.get(1).and_then(|p| cpath(p)) else { return bad() };
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return format!("E {}", last_errno());
                }
                let mut content = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    let n = libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len());
                    if n <= 0 || content.len() > MAX_LINE / 4 {
                        break;
                    }
                    content.extend_from_slice(&chunk[..n as usize]);
                }
                libc::close(fd);
                format!("V {}", hex(&content))
            }
            Some("N") => {
                let (Some(from), Some(to)) = (f.get(1).and_then(|p| cpath(p)), f.get(2).and_then(|p| cpath(p))) else {
                    return bad();
                };
                ok_or_errno(libc::rename(from.as_ptr(), to.as_ptr()))
            }
            Some("D") => {
                let Some(path) = f.get(1).and_then(|p| cpath(p)) else { return bad() };
                ok_or_errno(libc::unlink(path.as_ptr()))
            }
            Some("Y") => {
                let fd = libc::open(c".".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
                if fd < 0 {
                    return format!("E {}", last_errno());
                }
                let rc = libc::fsync(fd);
                libc::close(fd);
                ok_or_errno(rc)
            }
            // The simulator's OS ops: whole files holding one value, process-level flocks.
            Some("F") | Some("G") => {
                let Some(path) = f.get(1).and_then(|p| unhex(p)) else { return bad() };
                let fd = match local.locks.iter().find(|(p, _)| *p == path) {
                    Some(&(_, fd)) => fd,
                    None if f[0] == "G" => return "K".into(),
                    None => {
                        if local.locks.len() >= MAX_LOCKS {
                            return bad();
                        }
                        let Ok(c) = CString::new(path.clone()) else { return bad() };
                        let fd = libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC, 0o644);
                        if fd < 0 {
                            return format!("E {}", last_errno());
                        }
                        local.locks.push((path, fd));
                        fd
                    }
                };
                if f[0] == "G" {
                    libc::flock(fd, libc::LOCK_UN);
                    return "K".into();
                }
                let nb = if f.get(2) == Some(&"1") { libc::LOCK_NB } else { 0 };
                ok_or_errno(libc::flock(fd, libc::LOCK_EX | nb))
            }
            Some("Q") => {
                let (Some(path), Some(data)) = (f.get(1).and_then(|p| cpath(p)), f.get(2).and_then(|d| unhex(d)))
                else {
                    return bad();
                };
                let fd =
                    libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC, 0o644);
                if fd < 0 {
                    return format!("E {}", last_errno());
                }
                let n = libc::write(fd, data.as_ptr().cast(), data.len());
                libc::close(fd);
                if n as usize == data.len() {
                    "K".into()
                } else {
                    format!("E {}", libc::EIO)
                }
            }
            Some("A") => {
                let Some(pid) = f.get(1).and_then(|p| p.parse::<libc::pid_t>().ok()) else { return bad() };
                let alive = libc::kill(pid, 0) == 0;
                format!("B {}", u8::from(alive))
            }
            _ => bad(),
        }
    }
}
