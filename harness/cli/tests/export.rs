//! `racelab export-spec`: a scenario's schedule as a PostgreSQL isolation spec, which
//! `racelab pg-spec` then runs on a throwaway cluster and shows the race.

use std::path::Path;
use std::process::{Command, Output};

use racelab_harness::explore::{Choice, ChoiceKind};
use racelab_harness::token;

mod common;
use common::{scenarios_dir, stderr};

/// Run racelab with no DATABASE_URL (so that `pg-spec` starts its own throwaway cluster) under a
/// private TMPDIR, and check that nothing of it is left afterwards.
fn racelab(args: &[&str]) -> Output {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // Readable by the unprivileged user the server runs as when the tests run as root.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_racelab"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("DATABASE_URL")
        .env("TMPDIR", tmp.path())
        .output()
        .expect("racelab runs");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let procs = Command::new("pgrep").args(["-f", tmp.path().to_str().unwrap()]).output().expect("pgrep runs");
    assert!(procs.stdout.is_empty(), "processes left: {}", String::from_utf8_lossy(&procs.stdout));
    out
}

fn export(id: &str, file: &Path) {
    let out = racelab(&["export-spec", id, "--out", file.to_str().unwrap(), "--scenarios", &scenarios_dir()]);
    assert_eq!(out.status.code(), Some(0), "{id}: {}", stderr(&out));
}

/// The transcript's text for each step, in order: `(header, what it printed)`. A step reported
/// `<waiting ...>` gets what its `<... completed>` line printed.
fn steps(transcript: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in transcript.lines() {
        if let Some(rest) = line.strip_prefix("step ") {
            let (name, sql) = rest.split_once(": ").expect("step NAME: SQL");
            if sql == "<... completed>" {
                current = out.iter().position(|(h, _)| h.starts_with(&format!("{name}: ")));
            } else {
                out.push((rest.to_string(), String::new()));
                current = Some(out.len() - 1);
            }
        } else if line.starts_with("starting permutation") {
            current = None;
        } else if let Some(k) = current {
            out[k].1.push_str(line);
            out[k].1.push('\n');
        }
    }
    out
}

#[test]
fn exported_specs_show_the_race_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let ids = [
        ("summary-upsert/select-for-update", "select"),
        ("progress-clear-insert/clear-then-insert", "clear"),
        ("nested-locks/fine-grained-one-connection", "nested"),
    ];
    let mut args = vec!["pg-spec".to_string()];
    for (id, file) in ids {
        let path = dir.path().join(format!("{file}.spec"));
        export(id, &path);
        let spec = std::fs::read_to_string(&path).unwrap();
        assert!(spec.starts_with(&format!("# {id}: the shortest counterexample")), "{spec}");
        assert!(spec.contains(&format!("# token: rl1.{id}.")) && spec.contains(env!("CARGO_PKG_VERSION")), "{spec}");
        args.push(path.display().to_string());
    }
    let out_dir = dir.path().join("out");
    args.extend(["--out-dir".to_string(), out_dir.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = racelab(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let transcript = |file: &str| std::fs::read_to_string(out_dir.join(format!("{file}.out"))).unwrap();

    // Both requests find no document FOR UPDATE (there is no row to lock), and both insert one.
    let t = transcript("select");
    let s = steps(&t);
    let finds: Vec<_> = s.iter().filter(|(h, _)| h.contains("FOR UPDATE;")).collect();
    assert_eq!(finds.len(), 2, "{t}");
    assert!(finds.iter().all(|(_, r)| r.contains("(0 rows)")), "{t}");
    let inserts: Vec<_> = s.iter().filter(|(h, _)| h.contains("INSERT INTO documents")).collect();
    assert_eq!(inserts.len(), 2, "{t}");
    assert!(inserts.iter().all(|(_, r)| r.contains("(1 row)") && !r.contains("ERROR")), "{t}");
    assert!(!t.contains("ERROR"), "{t}");

    // Both requests clear first; the second insert then hits the unique index.
    let t = transcript("clear");
    let s = steps(&t);
    assert_eq!(s.len(), 4, "{t}");
    assert!(
        s[3].0.starts_with("c2_insert") && s[3].1.starts_with("ERROR:  duplicate key value violates unique constraint")
    );
    assert_eq!(t.matches("ERROR:").count(), 1, "{t}");

    // Each task holds its outer lock and waits for the other's: PostgreSQL breaks the cycle in
    // the session the simulator chose, and every session then finishes. The shortest
    // counterexample's victim is the stop hook, whose wait began first: not the closer.
    let t = transcript("nested");
    assert_eq!(t.matches("ERROR:  deadlock detected").count(), 1, "{t}");
    let s = steps(&t);
    let victim = s.iter().find(|(_, r)| r.contains("deadlock detected")).unwrap();
    assert!(victim.0.starts_with("c1_advisory_lock_turn"), "{t}");
    assert!(
        s.iter().filter(|(h, _)| h.contains("pg_advisory_unlock")).all(|(_, r)| r.lines().any(|l| l.trim_end() == "t")),
        "{t}"
    );
}

#[test]
fn export_is_deterministic_and_writes_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.spec");
    export("progress-clear-insert/clear-then-insert", &file);
    let out = racelab(&["export-spec", "progress-clear-insert/clear-then-insert", "--scenarios", &scenarios_dir()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), std::fs::read_to_string(&file).unwrap());
}

#[test]
fn a_token_is_exported_as_given_and_completed() {
    // The stop hook takes AGENT and nothing else moves: the rest of the spec is the completion.
    let id = "nested-locks/fine-grained-one-connection";
    let tok = token::encode(id, &[Choice { actor: 0, kind: ChoiceKind::Step }]);
    let out = racelab(&["export-spec", id, "--token", &tok, "--scenarios", &scenarios_dir()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let spec = String::from_utf8_lossy(&out.stdout);
    assert!(spec.contains(&format!("# token: {tok}")), "{spec}");
    assert!(spec.contains("violates no invariant"), "{spec}");
    assert!(spec.contains("more steps let every session finish"), "{spec}");
    assert!(!spec.contains("deadlock_timeout"), "{spec}");
}

#[test]
fn bad_input_exits_2() {
    let run = |args: &[&str]| {
        let dir = scenarios_dir();
        let mut all = vec!["export-spec"];
        all.extend(args);
        all.extend(["--scenarios", &dir]);
        let out = racelab(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
        stderr(&out)
    };
    let e = run(&["no-such-race/at-all"]);
    assert!(e.contains("unknown id `no-such-race/at-all`"), "{e}");
    let e = run(&["daemon-spawn/unlocked"]);
    assert!(e.contains("no database"), "{e}");
    let e = run(&["summary-upsert"]);
    assert!(e.contains("needs one scenario id"), "{e}");
    let id = "summary-upsert/select-for-update";
    let crash =
        token::encode(id, &[Choice { actor: 0, kind: ChoiceKind::Step }, Choice { actor: 1, kind: ChoiceKind::Crash }]);
    let e = run(&[id, "--token", &crash]);
    assert!(e.contains("cannot express crashes"), "{e}");
    let e = run(&[id, "--token", "rl1.nope"]);
    assert!(e.contains("malformed token"), "{e}");
}
