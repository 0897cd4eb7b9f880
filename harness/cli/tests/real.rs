//! `--backend real` at the command line: the file races and `daemon-spawn` give the simulator's
//! verdicts on real files and processes, their counterexamples replay there, and nothing is left behind, even when racelab is
//! interrupted (SIGTERM) or killed (SIGKILL) in the middle of a run.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const REAL_RACES: [&str; 4] = ["state-save", "guidance-write", "config-edit", "daemon-spawn"];

fn run(args: &[&str]) -> Output {
    let scenarios = format!("{}/../../scenarios", env!("CARGO_MANIFEST_DIR"));
    let mut c = Command::new(env!("CARGO_BIN_EXE_racelab"));
    c.current_dir(env!("CARGO_MANIFEST_DIR")).env("COLUMNS", "160").args(args).args(["--scenarios", &scenarios]);
    c.output().expect("racelab runs")
}

/// This racelab process's private directories.
fn dirs_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("{}{pid}-", racelab_real::DIR_PREFIX);
    std::fs::read_dir(racelab_real::scratch_base())
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Live processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // The fields after the command name (which may hold spaces) start after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) && fields.first() != Some(&"Z") {
            out.push(child);
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, r)| !r.trim_start().starts_with('Z')))
}

#[test]
fn file_and_process_races_give_the_expected_verdicts_on_the_real_os_and_replay_there() {
    let mut args = vec!["check"];
    args.extend(REAL_RACES);
    args.extend(["--backend", "real", "--json"]);
    let out = run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(lines.len(), 11);
    for v in &lines {
        assert_eq!(v["backend"], "real");
        assert_eq!(v["verdict"], v["expected"], "{v}");
        if v["verdict"] == "violated" {
            let id = v["id"].as_str().unwrap();
            let token = v["token"].as_str().unwrap();
            for backend in ["real", "sim"] {
                let r = run(&["replay", id, token, "--backend", backend, "--json"]);
                let r: serde_json::Value = serde_json::from_slice(&r.stdout).expect("replay JSON");
                assert_eq!(r["verdict"], "violated", "{id} on {backend}: {r}");
            }
        }
    }
    assert!(dirs_of(std::process::id()).is_empty());
}

#[test]
fn scenarios_without_files_are_skipped_on_real() {
    let out = run(&["check", "summary-upsert/check-then-insert", "--backend", "real"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs more than files and processes; skipped on real"));
}

/// Start a long real run, wait until it has workers, and return it with their pids.
fn start_long_run() -> (std::process::Child, Vec<u32>) {
    let scenarios = format!("{}/../../scenarios", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_racelab"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["check", "guidance-write", "state-save", "--backend", "real", "--scenarios", &scenarios])
        .args(["--mode", "random", "--schedules", "1000000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("racelab starts");
    let started = Instant::now();
    loop {
        let workers = children_of(child.id());
        if workers.len() >= 2 && !dirs_of(child.id()).is_empty() {
            return (child, workers);
        }
        assert!(started.elapsed() < Duration::from_secs(30), "racelab never started its workers");
        assert!(child.try_wait().unwrap().is_none(), "racelab ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_gone(pids: &[u32]) {
    let started = Instant::now();
    while pids.iter().any(|&p| alive(p)) {
        assert!(started.elapsed() < Duration::from_secs(10), "workers {pids:?} outlived racelab");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_mid_run_leaves_no_directory_and_no_process() {
    let (mut child, workers) = start_long_run();
    let pid = child.id();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    wait_gone(&workers);
    assert!(dirs_of(pid).is_empty(), "{:?}", dirs_of(pid));
}

#[test]
fn sigkill_mid_run_kills_the_workers_and_the_next_start_removes_the_directory() {
    let (mut child, workers) = start_long_run();
    let pid = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    // The workers die with racelab (PR_SET_PDEATHSIG); SIGKILL cannot be caught, so the
    // directory stays until the next racelab starts.
    wait_gone(&workers);
    let out = run(&["check", "config-edit/flock", "--backend", "real"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(dirs_of(pid).is_empty(), "{:?}", dirs_of(pid));
}
