//! Runs every spec in `tests/fixtures/isolation/specs` against a throwaway
//! PostgreSQL cluster and compares the transcript byte for byte with
//! `tests/fixtures/isolation/expected/<name>.out`, the way PostgreSQL's
//! regression suite runs them (PGDATESTYLE="Postgres, MDY", PGTZ=PST8PDT).
//!
//! The PostgreSQL server binaries must be installed; without them the test
//! fails and says how to install them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use racelab_pg::spec::{self, RunOptions};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/isolation")
}

/// A throwaway cluster on a private Unix socket, stopped and removed on drop.
// TODO: use racelab_pg::Cluster::embedded() once the cluster module is on main.
struct Scratch {
    dir: PathBuf,
    server: Child,
}

fn find_bindir() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PG_BINDIR").map(PathBuf::from).into_iter().collect();
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev());
    }
    candidates.into_iter().find(|d| d.join("initdb").is_file() && d.join("postgres").is_file()).unwrap_or_else(|| {
        panic!(
            "the PostgreSQL server binaries (initdb, postgres) were not found on PATH, in PG_BINDIR or under \
             /usr/lib/postgresql/*/bin; install them (Debian/Ubuntu: `apt-get install postgresql`) to run the \
             isolation spec tests"
        )
    })
}

impl Scratch {
    fn start() -> Scratch {
        use std::os::unix::process::CommandExt;
        let bin = find_bindir();
        let dir = std::env::temp_dir().join(format!("racelab-pgspec-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("creating the cluster directory");
        // initdb refuses to run as root: hand the directory to the postgres user.
        let ids = (unsafe { libc::geteuid() } == 0).then(|| {
            let name = c"postgres";
            let pw = unsafe { libc::getpwnam(name.as_ptr()) };
            assert!(!pw.is_null(), "running as root, but there is no postgres user to run the server as");
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            let cpath = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
            assert_eq!(unsafe { libc::chown(cpath.as_ptr(), uid, gid) }, 0, "chown of the cluster directory");
            (uid, gid)
        });
        let command = |program: &str| {
            let mut c = Command::new(bin.join(program));
            c.current_dir(&dir).env_remove("PGDATA").stdin(Stdio::null());
            if let Some((uid, gid)) = ids {
                c.uid(uid).gid(gid);
            }
            c
        };
        let data = dir.join("data");
        let out = command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
            .output()
            .expect("running initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let log = std::fs::File::create(dir.join("postgres.log")).expect("log file");
        let server = command("postgres")
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir)
            .args(["-c", "listen_addresses=", "-c", "fsync=off", "-c", "autovacuum=off"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting postgres");
        let scratch = Scratch { dir, server };
        // Ready once it accepts a connection (the socket appears before that).
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = runtime.block_on(scratch.config().connect(tokio_postgres::NoTls)) {
            assert!(
                Instant::now() < deadline,
                "the server did not start ({e}): see {}/postgres.log",
                scratch.dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        scratch
    }

    fn config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host_path(&self.dir).port(5432).user("postgres").dbname("postgres");
        c
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SIGINT: fast shutdown.
        unsafe { libc::kill(self.server.id() as libc::pid_t, libc::SIGINT) };
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A line diff (longest common subsequence), `-` expected, `+` actual.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.split_inclusive('\n').collect();
    let b: Vec<&str> = actual.split_inclusive('\n').collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    let show = |out: &mut String, mark: char, line: &str| {
        out.push(mark);
        out.push_str(&format!("{line:?}\n"));
    };
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            show(&mut out, '+', b[j]);
            j += 1;
        } else {
            show(&mut out, '-', a[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn isolation_specs_match_their_expected_output() {
    let mut specs: Vec<PathBuf> = std::fs::read_dir(fixtures().join("specs"))
        .expect("fixture specs")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "spec"))
        .collect();
    specs.sort();
    assert!(specs.len() >= 8, "expected the fixture specs, found {specs:?}");

    let cluster = Scratch::start();
    let options = RunOptions {
        datestyle: Some("Postgres, MDY".into()),
        timezone: Some("PST8PDT".into()),
        ..RunOptions::default()
    };
    let mut failures = Vec::new();
    for path in &specs {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let expected_path = fixtures().join("expected").join(format!("{name}.out"));
        let expected = std::fs::read_to_string(&expected_path).expect("expected output");
        match spec::run_spec_file_with(&cluster.config(), path, &options) {
            Ok(actual) if actual == expected => {}
            Ok(actual) => failures
                .push(format!("{name}: transcript differs (- expected, + actual):\n{}", diff(&expected, &actual))),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    drop(cluster);
    assert!(failures.is_empty(), "{} of {} specs failed:\n{}", failures.len(), specs.len(), failures.join("\n"));
}

#[test]
fn diff_marks_changed_lines() {
    assert_eq!(diff("a\nb\nc\n", "a\nx\nc\n"), "+\"x\\n\"\n-\"b\\n\"\n");
    assert_eq!(diff("a\n", "a\n"), "");
}
