//! The few ways the seeds' Python code writes a file, as steps a file race lists in order, so
//! that each race reads like its seed: `open(path, "w"); f.write(…)` is
//! `[OpenTrunc(PATH), WriteRecord, Close]`. Not a race; the races `state-save`, `guidance-write`
//! and `config-edit` run their programs through [`FileProgram`].

use racelab_harness::op::{Op, Outcome, Value};
use racelab_harness::sim::fs::{Fd, FsOp};
use racelab_harness::sim::{Fs, PartId};

/// The descriptor slot of the file being written.
const DATA: Fd = 0;
/// The descriptor slot of a lock file.
const LOCK: Fd = 1;

/// One step of a file-writing program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileStep {
    /// `open(path, "w")`: `O_WRONLY | O_CREAT | O_TRUNC`.
    OpenTrunc(&'static str),
    /// `tempfile.mkstemp(prefix=…)`: a new file under a name no one else uses.
    Mkstemp(&'static str),
    /// `f.write(record)` of the whole record at offset 0 (`json.dump`).
    WriteRecord,
    /// `os.fsync(f.fileno())`.
    Fsync,
    /// `f.close()`.
    Close,
    /// `os.rename(written, to)` / `os.replace`.
    RenameTo(&'static str),
    /// `os.fsync` of the directory's descriptor.
    FsyncDir,
    /// `open(lock, O_CREAT)` then `fcntl.flock(fd, LOCK_EX)`, blocking.
    Lock(&'static str),
    /// Closing the lock file, which releases the `flock`.
    Unlock,
    /// `open(path).read()`: the record the next write extends (read-modify-write).
    Read(&'static str),
}

/// Where a program stands, and what it has learnt: a small interpreter of [`FileStep`]s.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileProgram {
    fs: PartId<Fs>,
    steps: &'static [FileStep],
    pc: usize,
    /// What `WriteRecord` writes; a read-modify-write program sets it from what it read.
    pub record: &'static str,
    /// The path being written: the one opened, or the name `mkstemp` returned.
    written: Option<&'static str>,
    /// Half of the `open(lock)` + `flock` pair is done.
    lock_open: bool,
    /// Cleanup after a failed step: close what is open, then stop.
    failed: bool,
    data_open: bool,
    /// The content the last `Read` returned; `None` for a missing file.
    pub read: Option<&'static str>,
}

impl FileProgram {
    pub fn new(fs: PartId<Fs>, steps: &'static [FileStep], record: &'static str) -> FileProgram {
        FileProgram {
            fs,
            steps,
            pc: 0,
            record,
            written: None,
            lock_open: false,
            failed: false,
            data_open: false,
            read: None,
        }
    }

    /// The program has run to its end (or failed and cleaned up).
    pub fn done(&self) -> bool {
        self.next_op().is_none()
    }

    /// Did every step succeed? Meaningful once [`FileProgram::done`].
    pub fn succeeded(&self) -> bool {
        !self.failed && self.pc >= self.steps.len()
    }

    pub fn next_op(&self) -> Option<Op> {
        let fs = self.fs;
        if self.failed {
            // A `with` block closes its files on the way out of an exception.
            return if self.data_open {
                Some(fs.op("close", FsOp::Close { fd: DATA }))
            } else if self.lock_open {
                Some(fs.op("unlock", FsOp::Close { fd: LOCK }))
            } else {
                None
            };
        }
        let step = *self.steps.get(self.pc)?;
        Some(match step {
            FileStep::OpenTrunc(path) => {
                fs.op("open", FsOp::Open { fd: DATA, path, create: true, excl: false, trunc: true })
            }
            FileStep::Mkstemp(prefix) => fs.op("mkstemp", FsOp::Mkstemp { fd: DATA, prefix }),
            FileStep::WriteRecord => fs.op("write", FsOp::Write { fd: DATA, offset: 0, data: self.record }),
            FileStep::Fsync => fs.op("fsync", FsOp::Fsync { fd: DATA }),
            FileStep::Close => fs.op("close", FsOp::Close { fd: DATA }),
            FileStep::RenameTo(to) => fs.op("rename", FsOp::Rename { from: self.written?, to }),
            FileStep::FsyncDir => fs.op("fsync_dir", FsOp::FsyncDir),
            FileStep::Lock(path) if !self.lock_open => {
                fs.op("open", FsOp::Open { fd: LOCK, path, create: true, excl: false, trunc: false })
            }
            FileStep::Lock(_) => fs.op("flock", FsOp::Flock { fd: LOCK, nonblocking: false }),
            FileStep::Unlock => fs.op("unlock", FsOp::Close { fd: LOCK }),
            FileStep::Read(path) => fs.op("read", FsOp::Read { path }),
        })
    }

    pub fn on_outcome(&mut self, outcome: &Outcome) {
        if self.failed {
            if self.data_open {
                self.data_open = false;
            } else {
                self.lock_open = false;
            }
            return;
        }
        let step = self.steps[self.pc];
        let ok = !outcome.is_err();
        match (step, outcome) {
            (FileStep::OpenTrunc(path), Outcome::Ok) => {
                self.written = Some(path);
                self.data_open = true;
            }
            (FileStep::Mkstemp(_), Outcome::Value(Value::Str(name))) => {
                self.written = Some(name);
                self.data_open = true;
            }
            (FileStep::Close, _) => self.data_open = false,
            (FileStep::Lock(_), Outcome::Ok) if !self.lock_open => {
                self.lock_open = true;
                return; // The flock half comes next.
            }
            (FileStep::Unlock, _) => self.lock_open = false,
            (FileStep::Read(_), Outcome::Value(Value::Str(content))) => self.read = Some(content),
            // A missing file reads as nothing, as `FileNotFoundError` handled by a default.
            (FileStep::Read(_), Outcome::Err(_)) => {
                self.read = None;
                self.pc += 1;
                return;
            }
            _ => {}
        }
        if ok {
            self.pc += 1;
        } else {
            self.failed = true;
        }
    }
}
