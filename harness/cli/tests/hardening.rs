//! Regression tests for defects found by probing racelab with malformed input, signals, a
//! failing standard output and a server that goes away: each exits 2 (or 0 for valid input)
//! with a message, never a panic, and leaves nothing behind.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn scenarios_dir() -> String {
    format!("{}/../../scenarios", env!("CARGO_MANIFEST_DIR"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A temporary directory that the unprivileged server user can enter (a cluster's parent).
fn open_tmp() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn racelab_in(tmp: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_racelab"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("DATABASE_URL")
        .env("TMPDIR", tmp)
        .output()
        .expect("racelab runs")
}

fn assert_no_panic(o: &Output) {
    assert_ne!(o.status.code(), Some(101), "panicked: {}", stderr(o));
    assert!(!stderr(o).contains("panicked"), "panicked: {}", stderr(o));
}

/// Nothing of a run is left under its temporary directory: no cluster directory, and no
/// process whose command line names it.
fn assert_nothing_left(tmp: &Path) {
    let left: Vec<_> = std::fs::read_dir(tmp).unwrap().collect();
    assert!(left.is_empty(), "left behind in {}: {left:?}", tmp.display());
    let out = Command::new("pgrep").args(["-f", tmp.to_str().unwrap()]).output().expect("pgrep runs");
    assert!(out.stdout.is_empty(), "processes left: {}", String::from_utf8_lossy(&out.stdout));
}

/// Defect 1: a scenario file may allow timeouts for `judge-persist`, whose server idles in
/// `accept`; a timed-out accept is retried, and the verdicts stay those of the shipped files.
#[test]
fn judge_persist_with_a_timeout_bound_gives_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    for (variant, expected) in [("await-persist", "holds"), ("fire-and-forget", "violated")] {
        let body = format!(
            "id = \"judge-persist/{variant}\"\ndescription = \"x\"\nexpected = \"{expected}\"\n\
             [bounds]\ncrashes = 1\nerrors = 1\ntimeouts = 1\n"
        );
        std::fs::write(dir.path().join(format!("{variant}.toml")), body).unwrap();
    }
    let tmp = open_tmp();
    let scenarios = dir.path().to_str().unwrap();
    for backend in ["sim", "postgres"] {
        let out = racelab_in(tmp.path(), &["check", "all", "--scenarios", scenarios, "--backend", backend]);
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(0), "{backend}: {}\n{}", stdout(&out), stderr(&out));
    }
    assert_nothing_left(tmp.path());
}

/// Defect 2: a standard output that cannot be written (a full disk) is an error with a
/// message and exit 2, for every command that prints.
#[test]
fn unwritable_stdout_exits_2() {
    let (id, token) = {
        let out = Command::new(env!("CARGO_BIN_EXE_racelab"))
            .args(["check", "summary-upsert/check-then-insert", "--json", "--scenarios", &scenarios_dir()])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        (v["id"].as_str().unwrap().to_string(), v["token"].as_str().unwrap().to_string())
    };
    let dir = scenarios_dir();
    let commands: Vec<Vec<&str>> = vec![
        vec!["list"],
        vec!["list", "--json"],
        vec!["check", "summary-upsert"],
        vec!["check", "summary-upsert", "--json"],
        vec!["replay", &id, &token],
        vec!["explain", &id],
        vec!["export-spec", &id],
    ];
    for args in commands {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
        let mut all = args.clone();
        all.extend(["--scenarios", &dir]);
        let out = Command::new(env!("CARGO_BIN_EXE_racelab"))
            .args(&all)
            .stdout(Stdio::from(full))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("standard output"), "{args:?}: {}", stderr(&out));
    }
}
