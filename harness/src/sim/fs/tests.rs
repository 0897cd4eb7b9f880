//! The file system's rules: page cache and disk, renames, flock, crash and power-loss images.

use super::*;

fn fs() -> Fs {
    Fs::new(3)
}

fn done(fs: &mut Fs, actor: ActorId, op: FsOp) -> Outcome {
    match fs.apply(actor, &op, &mut Footprint::default()) {
        Applied::Done(o) => o,
        Applied::Blocked => panic!("actor {actor} blocked on {op:?}"),
    }
}

fn open(fd: Fd, path: &'static str) -> FsOp {
    FsOp::Open { fd, path, create: true, excl: false, trunc: false }
}

fn write(fd: Fd, data: &'static str) -> FsOp {
    FsOp::Write { fd, offset: 0, data }
}

fn images(fs: &Fs) -> Vec<String> {
    fs.crash_images().iter().map(Fs::describe_image).collect()
}

#[test]
fn reads_see_the_cache_and_a_crash_keeps_it() {
    let mut f = fs();
    done(&mut f, 0, open(0, "a"));
    done(&mut f, 0, write(0, "hello"));
    assert_eq!(done(&mut f, 1, FsOp::Read { path: "a" }), Outcome::Value(Value::Str("hello")));
    f.on_crash(&[0], &mut Footprint::default());
    assert_eq!(done(&mut f, 1, FsOp::Read { path: "a" }), Outcome::Value(Value::Str("hello")));
}

#[test]
fn an_unsynced_create_and_write_may_be_lost_or_torn() {
    let mut f = fs();
    done(&mut f, 0, open(0, "a"));
    done(&mut f, 0, write(0, "abcdef"));
    // The name may be missing; if present, the data is empty, torn in either block, or whole.
    assert_eq!(images(&f), vec!["no files", "a=\"\"", "a=\"abcd\"", "a=\"∅∅∅∅ef\"", "a=\"abcdef\""]);
    done(&mut f, 0, FsOp::Fsync { fd: 0 });
    assert_eq!(images(&f), vec!["no files", "a=\"abcdef\""], "fsync of the file does not make its name durable");
    done(&mut f, 0, FsOp::FsyncDir);
    assert_eq!(images(&f), vec!["a=\"abcdef\""]);
}

#[test]
fn truncate_then_write_can_leave_an_empty_file() {
    let mut f = fs();
    f.seed_file("s", "old1");
    done(&mut f, 0, FsOp::Open { fd: 0, path: "s", create: true, excl: false, trunc: true });
    done(&mut f, 0, write(0, "new2"));
    assert_eq!(images(&f), vec!["s=\"old1\"", "s=\"\"", "s=\"new2\""]);
}

#[test]
fn rename_is_atomic_but_not_durable_until_the_directory_is_synced() {
    let mut f = fs();
    f.seed_file("s", "old1");
    done(&mut f, 0, open(0, "s.tmp"));
    done(&mut f, 0, write(0, "new2"));
    done(&mut f, 0, FsOp::Fsync { fd: 0 });
    done(&mut f, 0, FsOp::Close { fd: 0 });
    done(&mut f, 0, FsOp::Rename { from: "s.tmp", to: "s" });
    assert_eq!(images(&f), vec!["s=\"old1\"", "s=\"old1\", s.tmp=\"new2\"", "s=\"new2\""]);
    done(&mut f, 0, FsOp::FsyncDir);
    assert_eq!(images(&f), vec!["s=\"new2\""]);
}

#[test]
fn o_excl_and_enoent() {
    let mut f = fs();
    done(&mut f, 0, open(0, "a"));
    let excl = FsOp::Open { fd: 1, path: "a", create: true, excl: true, trunc: false };
    assert_eq!(done(&mut f, 0, excl), Outcome::Err(ErrorCode::EEXIST));
    let plain = FsOp::Open { fd: 1, path: "b", create: false, excl: false, trunc: false };
    assert_eq!(done(&mut f, 0, plain), Outcome::Err(ErrorCode::ENOENT));
    assert_eq!(done(&mut f, 0, FsOp::Rename { from: "b", to: "c" }), Outcome::Err(ErrorCode::ENOENT));
    assert_eq!(done(&mut f, 0, FsOp::Unlink { path: "a" }), Outcome::Ok);
    assert_eq!(done(&mut f, 0, FsOp::Read { path: "a" }), Outcome::Err(ErrorCode::ENOENT));
}

#[test]
fn mkstemp_names_never_repeat() {
    let mut f = fs();
    let a = done(&mut f, 0, FsOp::Mkstemp { fd: 0, prefix: "g" });
    let b = done(&mut f, 1, FsOp::Mkstemp { fd: 0, prefix: "g" });
    assert_ne!(a, b);
    assert_eq!(a, Outcome::Value(Value::Str("g.tmp000001")));
}

#[test]
fn flock_belongs_to_the_open_file_description() {
    let mut f = fs();
    done(&mut f, 0, open(0, "lock"));
    done(&mut f, 0, open(1, "lock"));
    assert_eq!(done(&mut f, 0, FsOp::Flock { fd: 0, nonblocking: false }), Outcome::Ok);
    assert_eq!(done(&mut f, 0, FsOp::Flock { fd: 0, nonblocking: false }), Outcome::Ok, "re-lock is a no-op");
    // A second open of the same file by the same actor (process) is another description.
    assert_eq!(done(&mut f, 0, FsOp::Flock { fd: 1, nonblocking: true }), Outcome::Err(ErrorCode::EWOULDBLOCK));
    done(&mut f, 1, open(0, "lock"));
    assert_eq!(f.apply(1, &FsOp::Flock { fd: 0, nonblocking: false }, &mut Footprint::default()), Applied::Blocked);
    assert!(!f.is_ready(1));
    done(&mut f, 0, FsOp::Close { fd: 0 });
    assert!(f.is_ready(1));
    assert_eq!(f.take_ready(1, &mut Footprint::default()), Some(Outcome::Ok));
    assert_eq!(f.lock_holder_of("lock"), Some(1));
    // The holder's crash closes its descriptors and hands the lock on.
    done(&mut f, 2, open(0, "lock"));
    assert_eq!(f.apply(2, &FsOp::Flock { fd: 0, nonblocking: false }, &mut Footprint::default()), Applied::Blocked);
    f.on_crash(&[1], &mut Footprint::default());
    assert_eq!(f.take_ready(2, &mut Footprint::default()), Some(Outcome::Ok));
}

#[test]
fn a_power_loss_restores_an_image_and_closes_everything() {
    let mut f = fs();
    f.seed_file("s", "old1");
    done(&mut f, 0, FsOp::Open { fd: 0, path: "s", create: false, excl: false, trunc: true });
    done(&mut f, 0, FsOp::Flock { fd: 0, nonblocking: false });
    let n = f.power_loss_states();
    assert_eq!(n, 2);
    assert_eq!(f.power_loss(1, &mut Footprint::default()), "s=\"\"");
    assert_eq!(f.content("s"), Some(&b""[..]));
    assert_eq!(f.lock_holder_of("s"), None);
    assert_eq!(f.power_loss_states(), 1);
}

#[test]
fn equal_directories_are_equal_states() {
    let run = |order: bool| {
        let mut f = fs();
        let (x, y) = if order { ("x", "y") } else { ("y", "x") };
        done(&mut f, 0, open(0, x));
        done(&mut f, 0, FsOp::Close { fd: 0 });
        done(&mut f, 0, FsOp::Unlink { path: x });
        done(&mut f, 0, FsOp::FsyncDir);
        let _ = y;
        f
    };
    assert_eq!(run(true), run(false));
}
