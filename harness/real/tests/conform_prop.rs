//! Conformance of the simulated files with the real operating system: random small programs of
//! open / mkstemp / write / fsync / close / flock / read / rename / unlink / directory fsync and
//! process kills, run by two actors on the simulator and, in lockstep, as real syscalls in two
//! worker processes. Every outcome must be equal (the simulator's `Fs` reports any difference),
//! a `flock` must block on both or on neither, and after every step the real directory must hold
//! exactly what the simulator's page cache holds: after a process crash (`SIGKILL`) nothing the
//! kernel accepted is lost, and the simulator's only possible state must be the real one.
//!
//! Power losses are not run here: a real directory cannot lose power, so the real backend builds
//! each crash state from the simulator's persistence model; comparing them would check nothing.

use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use racelab_harness::op::{Applied, Footprint};
use racelab_harness::sim::fs::{FsOp, RealFiles, SharedFiles};
use racelab_harness::sim::{Fs, Subsystem};
use racelab_real::RealDir;

const ACTORS: usize = 2;
const PATHS: [&str; 2] = ["a", "b"];
const DATA: [&str; 3] = ["xy", "hello", "0123456789"];

#[derive(Clone, Debug)]
enum Step {
    Op(usize, FsOp),
    Kill(usize),
}

fn op() -> impl Strategy<Value = FsOp> {
    let fd = 0u8..2;
    let path = prop::sample::select(PATHS.to_vec());
    // Weighted towards opens and locks, so that two descriptors of one file are common.
    prop_oneof![
        4 => (fd.clone(), path.clone(), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(fd, path, create, excl, trunc)| FsOp::Open { fd, path, create, excl, trunc }),
        1 => fd.clone().prop_map(|fd| FsOp::Mkstemp { fd, prefix: "a" }),
        2 => (fd.clone(), 0u32..6, prop::sample::select(DATA.to_vec()))
            .prop_map(|(fd, offset, data)| FsOp::Write { fd, offset, data }),
        1 => fd.clone().prop_map(|fd| FsOp::Fsync { fd }),
        1 => fd.clone().prop_map(|fd| FsOp::Close { fd }),
        4 => (fd.clone(), any::<bool>()).prop_map(|(fd, nonblocking)| FsOp::Flock { fd, nonblocking }),
        1 => fd.prop_map(|fd| FsOp::Funlock { fd }),
        2 => path.clone().prop_map(|path| FsOp::Read { path }),
        1 => (path.clone(), path.clone()).prop_map(|(from, to)| FsOp::Rename { from, to }),
        1 => path.prop_map(|path| FsOp::Unlink { path }),
        1 => Just(FsOp::FsyncDir),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (0..ACTORS, op()).prop_map(|(a, op)| Step::Op(a, op)),
        1 => (0..ACTORS).prop_map(Step::Kill),
    ]
}

/// Which descriptor slots the op needs open, or closed.
fn runnable(op: &FsOp, open: &[bool; 2]) -> bool {
    match *op {
        FsOp::Open { fd, .. } | FsOp::Mkstemp { fd, .. } => !open[usize::from(fd)],
        FsOp::Write { fd, .. } | FsOp::Fsync { fd } | FsOp::Flock { fd, .. } => open[usize::from(fd)],
        _ => true,
    }
}

/// Run `steps` on the simulator with `real` attached; the number of steps that compared.
fn run(real: &Arc<Mutex<RealDir>>, steps: &[Step]) -> Result<usize, TestCaseError> {
    let shared: SharedFiles = real.clone();
    let mut fs = Fs::new(ACTORS);
    fs.attach(shared);
    let mut open = [[false; 2]; ACTORS];
    let mut waiting = [false; ACTORS];
    let mut compared = 0;
    for step in steps {
        let mut fp = Footprint::default();
        match step {
            Step::Kill(a) => {
                fs.on_crash(&[*a], &mut fp);
                open[*a] = [false; 2];
                waiting[*a] = false;
            }
            Step::Op(a, op) => {
                let a = *a;
                if waiting[a] {
                    // Collect a granted flock first; an actor that still waits cannot move.
                    if !fs.is_ready(a) {
                        continue;
                    }
                    fs.take_ready(a, &mut fp);
                    waiting[a] = false;
                    continue;
                }
                if !runnable(op, &open[a]) {
                    continue;
                }
                let applied = fs.apply(a, op, &mut fp);
                match (op, &applied) {
                    (_, Applied::Blocked) => waiting[a] = true,
                    (FsOp::Open { fd, .. } | FsOp::Mkstemp { fd, .. }, Applied::Done(o)) if !o.is_err() => {
                        open[a][usize::from(*fd)] = true
                    }
                    (FsOp::Close { fd }, _) => open[a][usize::from(*fd)] = false,
                    _ => {}
                }
            }
        }
        prop_assert_eq!(fs.failure(), None, "after {:?}", step);
        let listing = real.lock().unwrap().listing();
        prop_assert_eq!(&listing, &fs.listing(), "directories differ after {:?}", step);
        compared += 1;
    }
    // Waits the simulator has not granted are not granted on the real system either.
    for (a, w) in waiting.iter().enumerate() {
        if *w && !fs.is_ready(a) {
            prop_assert_eq!(real.lock().unwrap().poll(a, false), None, "actor {}'s flock was granted for real", a);
        }
    }
    prop_assert_eq!(fs.failure(), None);
    Ok(compared)
}

#[test]
fn random_file_programs_observe_the_same_results_on_the_simulator_and_the_real_os() {
    let cases = std::env::var("RACELAB_FILE_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256);
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let compared = std::cell::Cell::new(0usize);
    runner
        .run(&prop::collection::vec(step(), 4..24), |steps| {
            // A fresh directory per case, so that a failure belongs to its case and shrinks.
            let real = Arc::new(Mutex::new(RealDir::new().expect("a private directory")));
            let path = real.lock().unwrap().path().to_path_buf();
            compared.set(compared.get() + run(&real, &steps)?);
            let pids = real.lock().unwrap().worker_pids();
            drop(real);
            prop_assert!(!path.exists(), "the private directory is removed");
            for pid in pids {
                // SAFETY: signal 0 only checks existence.
                prop_assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "worker {} is gone", pid);
            }
            Ok(())
        })
        .unwrap();
    assert!(compared.get() > cases as usize, "the programs ran steps: {}", compared.get());
}

#[test]
fn a_second_description_of_the_same_file_in_one_process_is_excluded() {
    use racelab_harness::op::Outcome;
    let real = Arc::new(Mutex::new(RealDir::new().expect("a private directory")));
    let open = |fd| FsOp::Open { fd, path: "lock", create: true, excl: false, trunc: false };
    let steps = vec![
        Step::Op(0, open(0)),
        Step::Op(0, open(1)),
        Step::Op(0, FsOp::Flock { fd: 0, nonblocking: false }),
        Step::Op(0, FsOp::Flock { fd: 1, nonblocking: true }),
        Step::Op(1, open(0)),
        Step::Op(1, FsOp::Flock { fd: 0, nonblocking: false }),
        Step::Op(0, FsOp::Close { fd: 0 }),
        Step::Op(1, FsOp::Funlock { fd: 0 }),
    ];
    run(&real, &steps).unwrap();
    // And the outcomes themselves, step by step, on a fresh directory.
    let shared: SharedFiles = real.clone();
    let mut fs = Fs::new(ACTORS);
    fs.attach(shared);
    let mut fp = Footprint::default();
    let mut apply = |a, op: FsOp| fs.apply(a, &op, &mut fp);
    assert_eq!(apply(0, open(0)), Applied::Done(Outcome::Ok));
    assert_eq!(apply(0, open(1)), Applied::Done(Outcome::Ok));
    assert_eq!(apply(0, FsOp::Flock { fd: 0, nonblocking: false }), Applied::Done(Outcome::Ok));
    assert_eq!(
        apply(0, FsOp::Flock { fd: 1, nonblocking: true }),
        Applied::Done(Outcome::Err(racelab_harness::op::ErrorCode::EWOULDBLOCK))
    );
    assert_eq!(fs.failure(), None);
}
