//! Regression tests for defects found by probing racelab with malformed input, signals, a
//! failing standard output and a server that goes away: each exits 2 (or 0 for valid input)
//! with a message, never a panic, and leaves nothing behind.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::{open_tmp, racelab_in, scenarios_dir, stderr, stdout};

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

/// The POSIX shared-memory segments in racelab's `/dev/shm`.
fn shm_segments() -> Vec<String> {
    let names = std::fs::read_dir("/dev/shm").unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
    names.filter(|n| n.starts_with("PostgreSQL.")).collect()
}

/// No segment appeared in racelab's `/dev/shm` since `before`: as root, servers and `initdb`
/// keep theirs on a `/dev/shm` of their own, which dies with them however they end. (Not
/// root, or where the kernel refuses namespaces, a killed server's segments stay behind, as
/// any killed PostgreSQL's do.)
fn assert_no_shared_memory_left(before: &[String]) {
    let server = racelab_pg::Cluster::embedded().unwrap_or_else(|e| panic!("{e}"));
    let private = racelab_pg::sandbox::is_private(server.server_pid().unwrap()) == Some(true);
    drop(server);
    if !private {
        return;
    }
    let new: Vec<String> = shm_segments().into_iter().filter(|s| !before.contains(s)).collect();
    assert!(new.is_empty(), "shared memory left in /dev/shm: {new:?}");
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

/// The signals racelab cleans up after, at several moments: while `initdb` runs, while the
/// server starts, and while scenarios run. Each ends with status 130, no panic trace, and
/// nothing left.
#[test]
fn interrupts_at_any_moment_leave_nothing_and_exit_130() {
    let before = shm_segments();
    for (signal, delay_ms) in
        [(libc::SIGINT, 30), (libc::SIGTERM, 150), (libc::SIGINT, 400), (libc::SIGTERM, 900), (libc::SIGINT, 1800)]
    {
        let tmp = open_tmp();
        let child = Command::new(env!("CARGO_BIN_EXE_racelab"))
            .args(["check", "summary-upsert/advisory-xact-lock", "--backend", "postgres"])
            .args(["--scenarios", &scenarios_dir()])
            .env_remove("DATABASE_URL")
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "signal {signal} after {delay_ms} ms: {}", stderr(&out));
        assert_no_panic(&out);
        assert_nothing_left(tmp.path());
    }
    assert_no_shared_memory_left(&before);
}

/// `SIGKILL` cannot be caught: the server dies with racelab, and the next run removes the
/// directory left behind, and only directories of racelab processes that are gone.
#[test]
fn the_next_run_removes_what_a_killed_run_left() {
    let before = shm_segments();
    let tmp = open_tmp();
    let foreign = tmp.path().join("racelab-pg-not-ours");
    std::fs::create_dir(&foreign).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_racelab"))
        .args(["check", "summary-upsert/advisory-xact-lock", "--backend", "postgres"])
        .args(["--scenarios", &scenarios_dir()])
        .env_remove("DATABASE_URL")
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let mut child = child;
    child.kill().unwrap();
    child.wait().unwrap();
    let count = || std::fs::read_dir(tmp.path()).unwrap().count();
    // Give the server a moment to follow its parent.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(count(), 2, "the killed run's directory and the foreign one");
    let out = racelab_in(tmp.path(), &["check", "summary-upsert/check-then-insert", "--backend", "postgres"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::remove_dir(&foreign).expect("the foreign directory is untouched");
    assert_nothing_left(tmp.path());
    assert_no_shared_memory_left(&before);
}

/// A server for the `--database-url` tests: an embedded cluster of the test process.
fn host() -> (racelab_pg::Cluster, String) {
    let cluster = racelab_pg::Cluster::embedded().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("host={} port=5432 user=racelab dbname=postgres", cluster.dir().unwrap().display());
    (cluster, url)
}

fn query(config: &tokio_postgres::Config, sql: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (client, conn) = config.connect(tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(conn);
        let rows = client.simple_query(sql).await.expect("query");
        rows.iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
                _ => None,
            })
            .collect()
    })
}

fn scratch_databases(host: &racelab_pg::Cluster) -> Vec<String> {
    query(&host.config(), "SELECT datname FROM pg_database WHERE datname LIKE 'racelab\\_%' ORDER BY 1")
}

/// Defect 6: with `--database-url`, a `SIGKILL` leaves the scratch database until the next
/// run; an interrupt during `CREATE DATABASE` leaves nothing; a database of another owner is
/// never dropped.
#[test]
fn scratch_databases_of_killed_runs_are_dropped_by_the_next_run() {
    let (host, url) = host();
    query(&host.config(), "CREATE DATABASE racelab_1_0");
    for (signal, delay_ms) in [(libc::SIGKILL, 800), (libc::SIGINT, 10), (libc::SIGINT, 60), (libc::SIGTERM, 120)] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_racelab"))
            .args(["check", "summary-upsert/advisory-xact-lock", "--backend", "postgres", "--database-url", &url])
            .args(["--scenarios", &scenarios_dir()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        child.wait().unwrap();
        if signal != libc::SIGKILL {
            assert_eq!(scratch_databases(&host), ["racelab_1_0"], "after signal {signal} at {delay_ms} ms");
        } else {
            assert_eq!(scratch_databases(&host).len(), 2, "the killed run's database and the foreign one");
        }
        let out = Command::new(env!("CARGO_BIN_EXE_racelab"))
            .args(["check", "summary-upsert/check-then-insert", "--backend", "postgres", "--database-url", &url])
            .args(["--scenarios", &scenarios_dir()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(scratch_databases(&host), ["racelab_1_0"]);
    }
}

/// Defect 6: the server terminates racelab's connections in the middle of a run: exit 2 with
/// the server's message, no panic.
#[test]
fn terminated_connections_exit_2() {
    let (host, url) = host();
    let child = Command::new(env!("CARGO_BIN_EXE_racelab"))
        .args(["check", "summary-upsert/advisory-xact-lock", "--backend", "postgres", "--database-url", &url])
        .args(["--scenarios", &scenarios_dir()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    query(
        &host.config(),
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname LIKE 'racelab\\_%' AND pid <> pg_backend_pid()",
    );
    let out = child.wait_with_output().unwrap();
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("postgres:"), "{}", stderr(&out));
}

/// The same during `racelab stress`: its actors' connections end under them; exit 2 with the
/// server's message, no panic, and the scratch database is dropped.
#[test]
fn terminated_connections_during_stress_exit_2() {
    let (host, url) = host();
    let child = Command::new(env!("CARGO_BIN_EXE_racelab"))
        .args(["stress", "nested-locks/fine-grained", "--clients", "4", "--ops", "100000000"])
        .args(["--backend", "postgres", "--database-url", &url, "--scenarios", &scenarios_dir()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    query(
        &host.config(),
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname LIKE 'racelab\\_%' AND pid <> pg_backend_pid()",
    );
    let out = child.wait_with_output().unwrap();
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("postgres:"), "{}", stderr(&out));
    assert_eq!(scratch_databases(&host), Vec::<String>::new());
}

/// Defect 7: a malformed token is rejected before any server is involved; a bad
/// `--database-url` names the flag; a private `TMPDIR` (mode 0700) does not stop a root run.
#[test]
fn bad_input_is_rejected_before_a_server_starts_and_private_tmpdir_works() {
    let tmp = open_tmp();
    let unreachable = "postgres://racelab@127.0.0.1:1/none";
    let out = racelab_in(
        tmp.path(),
        &[
            "replay",
            "summary-upsert/check-then-insert",
            "rl1.junk",
            "--backend",
            "postgres",
            "--database-url",
            unreachable,
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("malformed token"), "{}", stderr(&out));

    let out = racelab_in(
        tmp.path(),
        &["check", "summary-upsert/check-then-insert", "--backend", "postgres", "--database-url", "postgres://x:@@:::"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--database-url"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("DATABASE_URL"), "{}", stderr(&out));

    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = racelab_in(private.path(), &["check", "summary-upsert/check-then-insert", "--backend", "postgres"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_nothing_left(private.path());
}

fn pg_fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pg/tests/fixtures/isolation")
}

/// Defects 3 and 4: a spec whose setup fails, a spec whose session terminates its own
/// backend, and a spec that matches: every spec runs, the terminated session is reported as
/// PostgreSQL's tester reports it, a summary counts them, and the exit status is 1.
#[test]
fn pg_spec_runs_every_spec_and_summarises() {
    let dir = tempfile::tempdir().unwrap();
    let expected = tempfile::tempdir().unwrap();
    let failing = dir.path().join("failing-setup.spec");
    std::fs::write(&failing, "setup { SELECT no_such_function(); }\nsession s1\nstep s1a { SELECT 1; }\n").unwrap();
    let exits = dir.path().join("session-exits.spec");
    std::fs::write(
        &exits,
        "session s1\nstep s1_exit { SELECT pg_terminate_backend(pg_backend_pid()); }\n\
         session s2\nstep s2_alive { SELECT 2 AS two; }\npermutation s1_exit s2_alive\n",
    )
    .unwrap();
    std::fs::write(
        expected.path().join("session-exits.out"),
        "Parsed test spec with 2 sessions\n\nstarting permutation: s1_exit s2_alive\n\
         step s1_exit: SELECT pg_terminate_backend(pg_backend_pid());\n\
         FATAL:  terminating connection due to administrator command\n\
         server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally\n\
         \tbefore or while processing the request.\n\n\
         step s2_alive: SELECT 2 AS two;\ntwo\n---\n  2\n(1 row)\n\n",
    )
    .unwrap();
    let nowait = pg_fixtures().join("specs/nowait.spec");
    std::fs::copy(pg_fixtures().join("expected/nowait.out"), expected.path().join("nowait.out")).unwrap();
    let tmp = open_tmp();
    let out_dir = tempfile::tempdir().unwrap();
    let out = racelab_in(
        tmp.path(),
        &[
            "pg-spec",
            failing.to_str().unwrap(),
            exits.to_str().unwrap(),
            nowait.to_str().unwrap(),
            "--expected-dir",
            expected.path().to_str().unwrap(),
            "--out-dir",
            out_dir.path().to_str().unwrap(),
        ],
    );
    assert_no_panic(&out);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    assert!(text.contains("ERROR    failing-setup: setup failed"), "{text}");
    let got = std::fs::read_to_string(out_dir.path().join("session-exits.out")).unwrap();
    assert!(text.contains("ok       session-exits"), "{text}\n{got}");
    assert!(text.contains("ok       nowait"), "{text}");
    assert!(text.contains("3 specs: 2 matched, 0 differ, 1 failed, 0 without expected output"), "{text}");
    assert_nothing_left(tmp.path());
}

/// Defect 3: a spec without permutation lines runs every interleaving; 24 steps in 8
/// sessions have about 10^17 of them. They stream: output comes at once, memory stays
/// flat, and an interrupt leaves nothing.
#[test]
fn pg_spec_streams_astronomically_many_permutations() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("many.spec");
    let mut text = String::new();
    for s in 0..8 {
        text.push_str(&format!(
            "session s{s}\nstep s{s}a {{ SELECT 1; }}\nstep s{s}b {{ SELECT 2; }}\nstep s{s}c {{ SELECT 3; }}\n"
        ));
    }
    std::fs::write(&spec, text).unwrap();
    let tmp = open_tmp();
    let mut child = Command::new(env!("CARGO_BIN_EXE_racelab"))
        .args(["pg-spec", spec.to_str().unwrap()])
        .env_remove("DATABASE_URL")
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until a few permutations have come out (bounded by the read count).
    for _ in 0..10_000 {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "output ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&seen).matches("starting permutation").count() >= 3 {
            break;
        }
    }
    assert!(String::from_utf8_lossy(&seen)
        .starts_with("Parsed test spec with 8 sessions\n\nstarting permutation: s0a s0b s0c s1a"));
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    // Kept open until the end: a closed pipe would end racelab by SIGPIPE instead.
    let status = child.wait().unwrap();
    drop(stdout);
    assert_eq!(status.code(), Some(130));
    assert_nothing_left(tmp.path());
}
