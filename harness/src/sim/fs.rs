//! Files in one directory, with a page cache and a disk, in the manner of ALICE (Pillai et al.,
//! OSDI 2014) and LazyFS.
//!
//! What readers see (the page cache) and what survives a power loss (the disk) are kept apart.
//! Every data op on a file (a write, a truncation) and every directory op (a create, a rename, an
//! unlink) is applied to the cache at once and queued as *pending* until an `fsync` of the file,
//! or of the directory, makes it durable. The persistence model:
//!
//! - A **process crash** loses nothing the kernel accepted: the cache stays, the process's
//!   descriptors close and its `flock`s are released.
//! - A **power loss** keeps the disk plus, independently per file and for the directory, some
//!   prefix of the pending ops; the first op not kept whole may be **torn**: any proper subset of
//!   the [`BLOCK`]-sized blocks it covers reaches the disk. Directory ops are atomic (a rename is
//!   all or nothing) but may or may not have reached the disk; `fsync` of a file does not make
//!   its name durable, `fsync` of the directory does.
//!
//! [`Fs::crash_images`] enumerates every distinct durable state (an *image*: name → bytes) this
//! allows, in a fixed order, so that a power loss is an explored choice that replays.
//!
//! `flock` follows Linux: a lock belongs to an open file description. Each `open` makes a new
//! one, so two actors of one process that each open the file exclude each other; the lock goes
//! when its description closes (by `close`, exit or crash). Descriptors are per-actor slots the
//! actor names (`fd` 0..[`MAX_FDS`]), so that ops stay plain data. Not modelled: `dup`, `fork`
//! inheritance of descriptors, subdirectories, file positions (writes name their offset).
//!
//! Blocks are [`BLOCK`] bytes, far smaller than a real 4 KiB page, so that the few-byte records
//! of the models can tear as larger files tear on a real disk.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::op::{ActorId, Applied, ErrorCode, Footprint, Outcome, Resource, Value};

use super::subsystem::{PartOp, Subsystem};

/// Bytes per block: the unit in which an unsynced write may be torn by a power loss.
pub const BLOCK: usize = 4;
/// Descriptor slots per actor.
pub const MAX_FDS: u8 = 4;
/// Longest file the simulator holds; models write short records.
pub const MAX_FILE: usize = 256;
/// Most distinct durable states one power loss may choose among: two picks of 5 bits each.
pub const MAX_CRASH_STATES: usize = 1024;
/// Most combinations enumerated before deduplication: a guard against a model too large.
const MAX_COMBINATIONS: usize = 4096;
/// Most pending ops per file and for the directory.
const MAX_PENDING: usize = 16;
/// Most files (names plus unnamed open files) in the directory.
const MAX_INODES: usize = 32;

/// Who allocates inode numbers and temporary names, and the queue of unsynced directory changes.
const ALLOCATION: Resource = Resource::Custom(u64::MAX);

/// A descriptor slot of one actor.
pub type Fd = u8;

/// An operation on the directory's files.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FsOp {
    /// `open(path, O_RDWR | [O_CREAT] [| O_EXCL] [| O_TRUNC])` into slot `fd`. Returns `Ok`, or
    /// `ENOENT` / `EEXIST`.
    Open { fd: Fd, path: &'static str, create: bool, excl: bool, trunc: bool },
    /// `mkstemp(prefix.XXXXXX)` into slot `fd`: a new file under a name no one has used. Returns
    /// the name as `Value(Str)`.
    Mkstemp { fd: Fd, prefix: &'static str },
    /// `pwrite(fd, data, offset)`. Returns `Ok`.
    Write { fd: Fd, offset: u32, data: &'static str },
    /// `fsync(fd)`: the file's data reaches the disk (not its name). Returns `Ok`.
    Fsync { fd: Fd },
    /// `close(fd)`: releases the description's `flock`. Returns `Ok`.
    Close { fd: Fd },
    /// `flock(fd, LOCK_EX [| LOCK_NB])`. Waits, or fails with `EWOULDBLOCK` when non-blocking.
    Flock { fd: Fd, nonblocking: bool },
    /// `flock(fd, LOCK_UN)`. Returns `Ok`.
    Funlock { fd: Fd },
    /// Read the whole file at `path`. Returns `Value(Str(content))` or `ENOENT`.
    Read { path: &'static str },
    /// `rename(from, to)`, atomically replacing `to`. Returns `Ok` or `ENOENT`.
    Rename { from: &'static str, to: &'static str },
    /// `unlink(path)`. Returns `Ok` or `ENOENT`.
    Unlink { path: &'static str },
    /// `fsync` of the directory: every create, rename and unlink so far reaches the disk.
    FsyncDir,
}

impl PartOp for FsOp {
    /// Releasing a lock or closing never fails in the models; every other call can (EIO).
    fn is_fallible(&self) -> bool {
        !matches!(self, FsOp::Close { .. } | FsOp::Funlock { .. })
    }
}

impl fmt::Display for FsOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsOp::Open { fd, path, create, excl, trunc } => {
                let mut flags = String::new();
                for (on, name) in [(*create, "|O_CREAT"), (*excl, "|O_EXCL"), (*trunc, "|O_TRUNC")] {
                    if on {
                        flags.push_str(name);
                    }
                }
                write!(f, "({path}, O_RDWR{flags}) as fd{fd}")
            }
            FsOp::Mkstemp { fd, prefix } => write!(f, "({prefix}.XXXXXX) as fd{fd}"),
            FsOp::Write { fd, offset, data } => write!(f, "(fd{fd}, {}, @{offset})", show(data.as_bytes())),
            FsOp::Fsync { fd } | FsOp::Close { fd } | FsOp::Funlock { fd } => write!(f, "(fd{fd})"),
            FsOp::Flock { fd, nonblocking } => write!(f, "(fd{fd}{})", if *nonblocking { ", LOCK_NB" } else { "" }),
            FsOp::Read { path } | FsOp::Unlink { path } => write!(f, "({path})"),
            FsOp::Rename { from, to } => write!(f, "({from} → {to})"),
            FsOp::FsyncDir => f.write_str("(.)"),
        }
    }
}

/// File content as a reader of a timeline sees it: quoted, with NUL bytes as `∅`.
pub fn show(bytes: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(bytes).chars().map(|c| if c == '\0' { '∅' } else { c }).collect();
    format!("\"{text}\"")
}

/// Index of an inode in [`Fs::inodes`].
type Ino = u8;

/// An unsynced change to one file's data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum DataOp {
    Write { offset: u32, bytes: Vec<u8> },
    Truncate,
}

impl DataOp {
    fn apply(&self, data: &mut Vec<u8>) {
        match self {
            DataOp::Truncate => data.clear(),
            DataOp::Write { offset, bytes } => write_at(data, *offset as usize, bytes),
        }
    }

    /// The blocks this op covers, as byte ranges.
    fn blocks(&self) -> Vec<(usize, usize)> {
        match self {
            DataOp::Truncate => Vec::new(),
            DataOp::Write { offset, bytes } => {
                let (start, end) = (*offset as usize, *offset as usize + bytes.len());
                let mut out = Vec::new();
                let mut at = start;
                while at < end {
                    let next = ((at / BLOCK) + 1) * BLOCK;
                    out.push((at, next.min(end)));
                    at = next;
                }
                out
            }
        }
    }
}

fn write_at(data: &mut Vec<u8>, offset: usize, bytes: &[u8]) {
    let end = offset + bytes.len();
    assert!(end <= MAX_FILE, "files hold at most {MAX_FILE} bytes");
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset..end].copy_from_slice(bytes);
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Inode {
    /// What readers see.
    cache: Vec<u8>,
    /// What the disk holds.
    disk: Vec<u8>,
    /// Applied to the cache, not yet on the disk, oldest first.
    pending: Vec<DataOp>,
}

/// An unsynced change to the directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum DirOp {
    Link { name: &'static str, ino: Ino },
    Rename { from: &'static str, to: &'static str },
    Unlink { name: &'static str },
}

impl DirOp {
    fn apply(&self, names: &mut BTreeMap<&'static str, Ino>) {
        match *self {
            DirOp::Link { name, ino } => {
                names.insert(name, ino);
            }
            DirOp::Rename { from, to } => {
                if let Some(ino) = names.remove(from) {
                    names.insert(to, ino);
                }
            }
            DirOp::Unlink { name } => {
                names.remove(name);
            }
        }
    }
}

/// An open file description: whose slot holds it, and which file it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Description {
    actor: u8,
    fd: Fd,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Lock {
    holder: Description,
    /// Blocked `flock(LOCK_EX)` calls, oldest first.
    queue: Vec<Description>,
}

/// A durable state a power loss may leave: every name with its bytes, in name order.
pub type Image = Vec<(&'static str, Vec<u8>)>;

/// Real syscalls in a real directory, behind the same stepping API (see `racelab-real`).
pub trait RealFiles: Send {
    /// Start over with an empty private directory holding `seed`, for `actors` actors.
    fn reset(&mut self, actors: usize, seed: &Image);
    /// Run `actor`'s op. `Blocked` when it did not return (a `flock` that waits). The simulator
    /// says whether it expects the op to block, so that the backend knows how long to wait for
    /// a reply before it declares the op blocked.
    fn apply(&mut self, actor: ActorId, op: &FsOp, expect_blocked: bool) -> Applied;
    /// Has `actor`'s waiting op returned? Waits briefly for it when `expect` says it should.
    fn poll(&mut self, actor: ActorId, expect: bool) -> Option<Outcome>;
    /// The waiting op is interrupted (a timeout): its result.
    fn cancel_wait(&mut self, actor: ActorId) -> Outcome;
    /// The processes running `dead` are killed with `SIGKILL`.
    fn crash(&mut self, dead: &[ActorId]);
    /// Power fails: every process is killed and the directory is rebuilt as `image`.
    fn power_loss(&mut self, image: &Image);
    /// Every name in the directory and its bytes, read back for comparison.
    fn listing(&mut self) -> Image;
    /// Record a failure found outside the backend (the simulator disagreed with it). Failures
    /// stay until the backend is dropped: an exploration that met one has no verdict.
    fn report(&mut self, failure: String);
    /// The first failure, if any.
    fn failure(&self) -> Option<String>;
}

/// A real directory shared by the runs of one exploration.
pub type SharedFiles = Arc<Mutex<dyn RealFiles>>;

#[derive(Clone)]
struct Real(SharedFiles);

impl fmt::Debug for Real {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RealFiles")
    }
}

/// The simulated directory. With a real one attached, every op runs there and its outcome is
/// what the actor sees; the simulator keeps running alongside to know which durable states a
/// power loss may leave (the ALICE method: record the trace, build each crash state on disk,
/// run the real recovery on it). Any outcome on which the two disagree is reported as a failure.
#[derive(Clone, Debug)]
pub struct Fs {
    inodes: Vec<Option<Inode>>,
    /// The directory as readers see it.
    names: BTreeMap<&'static str, Ino>,
    /// The directory as the disk holds it.
    disk_names: BTreeMap<&'static str, Ino>,
    dir_pending: Vec<DirOp>,
    /// Open descriptors: (actor, slot) → file.
    open: BTreeMap<Description, Ino>,
    locks: BTreeMap<Ino, Lock>,
    /// Per actor: the outcome of its waiting `flock`, once granted.
    waits: Vec<Option<Option<Outcome>>>,
    /// Names `mkstemp` handed out, so that it never repeats one.
    temp_names: u16,
    real: Option<Real>,
    /// The first disagreement between the simulator and the real directory.
    mismatch: Option<String>,
}

impl PartialEq for Fs {
    fn eq(&self, other: &Self) -> bool {
        self.inodes == other.inodes
            && self.names == other.names
            && self.disk_names == other.disk_names
            && self.dir_pending == other.dir_pending
            && self.open == other.open
            && self.locks == other.locks
            && self.waits == other.waits
            && self.temp_names == other.temp_names
            && self.real.is_some() == other.real.is_some()
    }
}
impl Eq for Fs {}
impl std::hash::Hash for Fs {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inodes.hash(state);
        self.names.hash(state);
        self.disk_names.hash(state);
        self.dir_pending.hash(state);
        self.open.hash(state);
        self.locks.hash(state);
        self.waits.hash(state);
        self.temp_names.hash(state);
    }
}

impl Fs {
    pub fn new(actors: usize) -> Fs {
        assert!(actors <= crate::op::MAX_ACTORS);
        Fs {
            inodes: Vec::new(),
            names: BTreeMap::new(),
            disk_names: BTreeMap::new(),
            dir_pending: Vec::new(),
            open: BTreeMap::new(),
            locks: BTreeMap::new(),
            waits: vec![None; actors],
            temp_names: 0,
            real: None,
            mismatch: None,
        }
    }

    /// A durable file at init.
    pub fn seed_file(&mut self, path: &'static str, content: &str) {
        assert!(!self.names.contains_key(path), "{path} seeded twice");
        let bytes = content.as_bytes().to_vec();
        let ino = self.new_inode(Inode { cache: bytes.clone(), disk: bytes, pending: Vec::new() });
        self.names.insert(path, ino);
        self.disk_names.insert(path, ino);
    }

    /// What a reader sees at `path` now.
    pub fn content(&self, path: &str) -> Option<&[u8]> {
        self.names.get(path).map(|&ino| self.inode(ino).cache.as_slice())
    }

    /// Every name and its bytes as readers see them.
    pub fn listing(&self) -> Image {
        self.names.iter().map(|(&n, &ino)| (n, self.inode(ino).cache.clone())).collect()
    }

    /// Run every op from now on in `real` as well, starting from this directory's content.
    pub fn attach(&mut self, real: SharedFiles) {
        assert!(self.dir_pending.is_empty() && self.open.is_empty(), "attach right after init");
        real.lock().expect("real files lock").reset(self.waits.len(), &self.listing());
        self.real = Some(Real(real));
    }

    /// The first outcome on which the real directory and the simulator disagreed, or the real
    /// backend's own failure.
    pub fn failure(&self) -> Option<String> {
        self.mismatch.clone().or_else(|| self.real.as_ref().and_then(|r| r.0.lock().ok()?.failure()))
    }

    /// Which `flock` holder `actor` waits behind, if any.
    pub fn lock_holder_of(&self, path: &str) -> Option<ActorId> {
        let ino = self.names.get(path)?;
        self.locks.get(ino).map(|l| usize::from(l.holder.actor))
    }

    fn inode(&self, ino: Ino) -> &Inode {
        self.inodes[usize::from(ino)].as_ref().expect("a live inode")
    }

    fn inode_mut(&mut self, ino: Ino) -> &mut Inode {
        self.inodes[usize::from(ino)].as_mut().expect("a live inode")
    }

    fn new_inode(&mut self, inode: Inode) -> Ino {
        // Inode numbers and temporary names are handed out in order: two creates never commute.
        let slot = match self.inodes.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                assert!(self.inodes.len() < MAX_INODES, "at most {MAX_INODES} files");
                self.inodes.push(None);
                self.inodes.len() - 1
            }
        };
        self.inodes[slot] = Some(inode);
        slot as Ino
    }

    /// Forget files that no name (in the cache or on the disk, or pending) and no descriptor
    /// refers to, so that equal directories are equal states.
    fn collect_garbage(&mut self) {
        let mut live: BTreeSet<Ino> = self.names.values().chain(self.disk_names.values()).copied().collect();
        live.extend(self.open.values().copied());
        live.extend(self.dir_pending.iter().filter_map(|op| match op {
            DirOp::Link { ino, .. } => Some(*ino),
            _ => None,
        }));
        for (i, slot) in self.inodes.iter_mut().enumerate() {
            if !live.contains(&(i as Ino)) {
                *slot = None;
            }
        }
        while self.inodes.last().is_some_and(Option::is_none) {
            self.inodes.pop();
        }
    }

    fn data_op(&mut self, ino: Ino, op: DataOp) {
        let inode = self.inode_mut(ino);
        op.apply(&mut inode.cache);
        assert!(inode.pending.len() < MAX_PENDING, "more than {MAX_PENDING} unsynced writes to one file");
        inode.pending.push(op);
    }

    /// Every directory change joins one queue of unsynced changes, whose order decides what a
    /// power loss keeps: two changes of different names do not commute either, so each writes
    /// the directory (`ALLOCATION`).
    fn dir_op(&mut self, op: DirOp, fp: &mut Footprint) {
        fp.write(ALLOCATION);
        op.apply(&mut self.names);
        assert!(self.dir_pending.len() < MAX_PENDING, "more than {MAX_PENDING} unsynced directory changes");
        self.dir_pending.push(op);
    }

    fn descriptor(&self, actor: ActorId, fd: Fd) -> Option<Ino> {
        self.open.get(&Description { actor: actor as u8, fd }).copied()
    }

    /// The simulator's own semantics of `op`.
    fn apply_sim(&mut self, actor: ActorId, op: &FsOp, fp: &mut Footprint) -> Applied {
        let done = Applied::Done;
        let me = |fd: Fd| {
            assert!(fd < MAX_FDS, "descriptor slots are 0..{MAX_FDS}");
            Description { actor: actor as u8, fd }
        };
        let outcome = match *op {
            FsOp::Open { fd, path, create, excl, trunc } => {
                fp.write(Resource::File(path));
                assert!(!self.open.contains_key(&me(fd)), "actor {actor} opens into slot fd{fd}, which is open");
                match self.names.get(path).copied() {
                    Some(_) if create && excl => Outcome::Err(ErrorCode::EEXIST),
                    Some(ino) => {
                        if trunc && !self.inode(ino).cache.is_empty() {
                            self.data_op(ino, DataOp::Truncate);
                        }
                        self.open.insert(me(fd), ino);
                        Outcome::Ok
                    }
                    None if !create => Outcome::Err(ErrorCode::ENOENT),
                    None => {
                        fp.write(ALLOCATION);
                        let ino = self.new_inode(Inode { cache: Vec::new(), disk: Vec::new(), pending: Vec::new() });
                        self.dir_op(DirOp::Link { name: path, ino }, fp);
                        self.open.insert(me(fd), ino);
                        Outcome::Ok
                    }
                }
            }
            FsOp::Mkstemp { fd, prefix } => {
                assert!(!self.open.contains_key(&me(fd)), "actor {actor} opens into slot fd{fd}, which is open");
                let name = loop {
                    self.temp_names += 1;
                    assert!(self.temp_names < 1000, "mkstemp ran out of names");
                    let name = temp_name(prefix, self.temp_names);
                    if !self.names.contains_key(name) {
                        break name;
                    }
                };
                fp.write(Resource::File(name));
                fp.write(ALLOCATION);
                let ino = self.new_inode(Inode { cache: Vec::new(), disk: Vec::new(), pending: Vec::new() });
                self.dir_op(DirOp::Link { name, ino }, fp);
                self.open.insert(me(fd), ino);
                Outcome::Value(Value::Str(name))
            }
            FsOp::Write { fd, offset, data } => {
                let ino = self.descriptor(actor, fd).unwrap_or_else(|| panic!("actor {actor} writes to closed fd{fd}"));
                fp.write(Resource::Custom(u64::from(ino)));
                self.touch_names(ino, fp);
                self.data_op(ino, DataOp::Write { offset, bytes: data.as_bytes().to_vec() });
                Outcome::Ok
            }
            FsOp::Fsync { fd } => {
                let ino = self.descriptor(actor, fd).unwrap_or_else(|| panic!("actor {actor} fsyncs closed fd{fd}"));
                fp.write(Resource::Custom(u64::from(ino)));
                self.touch_names(ino, fp);
                let inode = self.inode_mut(ino);
                inode.disk = inode.cache.clone();
                inode.pending.clear();
                Outcome::Ok
            }
            FsOp::Close { fd } => {
                if let Some(ino) = self.open.remove(&me(fd)) {
                    fp.write(Resource::Custom(u64::from(ino)));
                    self.release(me(fd), ino);
                    self.collect_garbage();
                }
                Outcome::Ok
            }
            FsOp::Flock { fd, nonblocking } => {
                let ino = self.descriptor(actor, fd).unwrap_or_else(|| panic!("actor {actor} flocks closed fd{fd}"));
                fp.write(Resource::Custom(u64::from(ino)));
                match self.locks.get_mut(&ino) {
                    None => {
                        self.locks.insert(ino, Lock { holder: me(fd), queue: Vec::new() });
                        Outcome::Ok
                    }
                    Some(lock) if lock.holder == me(fd) => Outcome::Ok,
                    Some(_) if nonblocking => Outcome::Err(ErrorCode::EWOULDBLOCK),
                    Some(lock) => {
                        lock.queue.push(me(fd));
                        self.waits[actor] = Some(None);
                        return Applied::Blocked;
                    }
                }
            }
            FsOp::Funlock { fd } => {
                if let Some(ino) = self.descriptor(actor, fd) {
                    fp.write(Resource::Custom(u64::from(ino)));
                    self.release(me(fd), ino);
                }
                Outcome::Ok
            }
            FsOp::Read { path } => {
                fp.read(Resource::File(path));
                match self.names.get(path) {
                    None => Outcome::Err(ErrorCode::ENOENT),
                    Some(&ino) => {
                        fp.read(Resource::Custom(u64::from(ino)));
                        Outcome::Value(Value::Str(text(&self.inode(ino).cache)))
                    }
                }
            }
            FsOp::Rename { from, to } => {
                fp.write(Resource::File(from));
                fp.write(Resource::File(to));
                if self.names.contains_key(from) {
                    self.dir_op(DirOp::Rename { from, to }, fp);
                    self.collect_garbage();
                    Outcome::Ok
                } else {
                    Outcome::Err(ErrorCode::ENOENT)
                }
            }
            FsOp::Unlink { path } => {
                fp.write(Resource::File(path));
                if self.names.contains_key(path) {
                    self.dir_op(DirOp::Unlink { name: path }, fp);
                    self.collect_garbage();
                    Outcome::Ok
                } else {
                    Outcome::Err(ErrorCode::ENOENT)
                }
            }
            FsOp::FsyncDir => {
                // It decides which pending create or rename of any name becomes durable.
                fp.global();
                self.disk_names = self.names.clone();
                self.dir_pending.clear();
                self.collect_garbage();
                Outcome::Ok
            }
        };
        done(outcome)
    }

    /// A data op on a file also conflicts with reads of its names.
    fn touch_names(&self, ino: Ino, fp: &mut Footprint) {
        for (name, _) in self.names.iter().filter(|(_, &i)| i == ino) {
            fp.write(Resource::File(name));
        }
    }

    /// The description gives up its lock, if it holds it, or its place in the queue.
    fn release(&mut self, who: Description, ino: Ino) {
        let Some(lock) = self.locks.get_mut(&ino) else { return };
        if lock.holder != who {
            lock.queue.retain(|&d| d != who);
            return;
        }
        if lock.queue.is_empty() {
            self.locks.remove(&ino);
            return;
        }
        let next = lock.queue.remove(0);
        lock.holder = next;
        self.waits[usize::from(next.actor)] = Some(Some(Outcome::Ok));
    }

    fn with_real<T>(&self, f: impl FnOnce(&mut dyn RealFiles) -> T) -> Option<T> {
        self.real.as_ref().map(|r| f(&mut *r.0.lock().expect("real files lock")))
    }

    fn disagree(&mut self, what: String) {
        let what = format!("real files and the simulator disagree: {what}");
        self.with_real(|r| r.report(what.clone()));
        if self.mismatch.is_none() {
            self.mismatch = Some(what);
        }
    }
}

/// The `n`-th name `mkstemp` hands out for `prefix`.
pub fn temp_name(prefix: &str, n: u16) -> &'static str {
    crate::intern(temp_name_text(prefix, n))
}

/// [`temp_name`] without interning, for a real worker process.
pub fn temp_name_text(prefix: &str, n: u16) -> String {
    format!("{prefix}.tmp{n:06}")
}

fn text(bytes: &[u8]) -> &'static str {
    crate::intern(String::from_utf8_lossy(bytes))
}

impl Subsystem for Fs {
    type Op = FsOp;

    fn name(&self) -> &'static str {
        "fs"
    }

    fn apply(&mut self, actor: ActorId, op: &FsOp, fp: &mut Footprint) -> Applied {
        assert!(self.waits[actor].is_none(), "actor {actor} already waits");
        let sim = self.apply_sim(actor, op, fp);
        let expect_blocked = sim == Applied::Blocked;
        let Some(real) = self.with_real(|r| r.apply(actor, op, expect_blocked)) else { return sim };
        if real != sim {
            self.disagree(format!("actor {actor} {op:?}: real {real:?}, simulator {sim:?}"));
        }
        real
    }

    fn is_ready(&self, actor: ActorId) -> bool {
        matches!(self.waits[actor], Some(Some(_)))
    }

    fn take_ready(&mut self, actor: ActorId, fp: &mut Footprint) -> Option<Outcome> {
        fp.global();
        let expect = self.is_ready(actor);
        if let Some(real) = self.with_real(|r| r.poll(actor, expect)) {
            if real.is_some() != expect {
                self.disagree(format!("actor {actor}'s wait: real {real:?}, simulator granted: {expect}"));
            }
        }
        let outcome = self.waits[actor].take()?;
        if outcome.is_none() {
            self.waits[actor] = Some(None);
        }
        outcome
    }

    fn cancel_wait(&mut self, actor: ActorId, fp: &mut Footprint) -> Outcome {
        fp.global();
        self.waits[actor] = None;
        for lock in self.locks.values_mut() {
            lock.queue.retain(|d| usize::from(d.actor) != actor);
        }
        let sim = Outcome::Err(ErrorCode::ETIMEDOUT);
        self.with_real(|r| r.cancel_wait(actor)).unwrap_or(sim)
    }

    fn on_crash(&mut self, dead: &[ActorId], fp: &mut Footprint) {
        fp.global();
        for &actor in dead {
            self.waits[actor] = None;
            for lock in self.locks.values_mut() {
                lock.queue.retain(|d| usize::from(d.actor) != actor);
            }
            let mine: Vec<(Description, Ino)> =
                self.open.iter().filter(|(d, _)| usize::from(d.actor) == actor).map(|(d, i)| (*d, *i)).collect();
            for (d, ino) in mine {
                self.open.remove(&d);
                self.release(d, ino);
            }
        }
        self.collect_garbage();
        self.with_real(|r| r.crash(dead));
    }

    fn power_loss_states(&self) -> usize {
        self.crash_images().len()
    }

    fn power_loss(&mut self, k: usize, fp: &mut Footprint) -> String {
        fp.global();
        let images = self.crash_images();
        let image = images[k].clone();
        self.restore(&image);
        self.with_real(|r| r.power_loss(&image));
        Fs::describe_image(&image)
    }

    fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!("files: {}", Fs::describe_image(&self.listing()))];
        let disk: Image = self.disk_names.iter().map(|(&n, &ino)| (n, self.inode(ino).disk.clone())).collect();
        if disk != self.listing() {
            lines.push(format!("on disk: {}", Fs::describe_image(&disk)));
        }
        if let Some(listing) = self.with_real(|r| r.listing()) {
            lines.push(format!("real directory: {}", Fs::describe_image(&listing)));
        }
        if let Some(m) = &self.mismatch {
            lines.push(m.clone());
        }
        lines
    }
}

mod power_loss;

#[cfg(test)]
mod tests;
