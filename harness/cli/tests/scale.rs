//! Long runs from the command line: shares merged equal one run, threads do not change a
//! result, a time limit or Ctrl-C gives an inconclusive verdict with partial counts, and bad
//! share files exit 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{racelab, scenarios_dir};

fn lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON lines")).collect()
}

/// The catalogue's scenarios plus larger copies of three of them (more workers), so that the
/// shares split real work.
fn scenario_dir_with_more_workers(tmp: &Path) -> String {
    let dir = tmp.join("scenarios");
    copy_dir(Path::new(&scenarios_dir()), &dir);
    for (file, from, to) in [
        ("summary-upsert/check-then-insert.toml", "requests = 2", "requests = 3"),
        ("summary-upsert/advisory-xact-lock.toml", "requests = 2", "requests = 3"),
        ("nested-locks/single-namespace.toml", "hooks = 1", "hooks = 2"),
    ] {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).expect("scenario file");
        assert!(text.contains(from), "{file} has `{from}`");
        std::fs::write(&path, text.replace(from, to)).expect("write scenario");
    }
    dir.display().to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// What must be equal between two runs of one scenario.
fn verdict_of(v: &serde_json::Value) -> serde_json::Value {
    serde_json::json!([v["id"], v["verdict"], v["invariant"], v["detail"], v["token"], v["steps"], v["reason"]])
}

#[test]
fn merged_shares_give_the_verdict_and_counterexample_of_one_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = scenario_dir_with_more_workers(tmp.path());
    // Sampled scenarios are not split into shares (a share skips them).
    let whole: Vec<serde_json::Value> = lines(&racelab(&["check", "all", "--json", "--scenarios", &dir]))
        .into_iter()
        .filter(|v| v["mode"] == "exhaustive")
        .collect();
    assert!(whole.len() >= 17);
    for n in [1u32, 2, 3, 5] {
        let mut files: Vec<PathBuf> = Vec::new();
        for i in 1..=n {
            let out = racelab(&["check", "all", "--json", "--scenarios", &dir, "--shard", &format!("{i}/{n}")]);
            assert_eq!(out.status.code(), Some(0), "a share alone exits 0: {}", String::from_utf8_lossy(&out.stderr));
            let file = tmp.path().join(format!("share-{i}-of-{n}.jsonl"));
            std::fs::write(&file, &out.stdout).expect("write share");
            files.push(file);
        }
        // The order of the files does not matter.
        files.reverse();
        let mut args: Vec<&str> = vec!["merge", "--json", "--scenarios", &dir];
        args.extend(files.iter().map(|f| f.to_str().expect("utf-8 path")));
        let out = racelab(&args);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let merged = lines(&out);
        assert_eq!(merged.len(), whole.len());
        for (m, w) in merged.iter().zip(&whole) {
            assert_eq!(verdict_of(m), verdict_of(w), "{n} shares");
            assert_eq!(m["shares"]["of"], n);
            assert!(m["shares"]["share"].is_null());
            if w["verdict"] == "holds" {
                // Every state is visited by some share; top-of-tree states are counted once.
                assert!(m["stats"]["states"].as_u64() >= w["stats"]["states"].as_u64(), "{m}\n{w}");
                assert!(m["stats"]["final_states"].as_u64() >= w["stats"]["final_states"].as_u64());
            }
        }
    }
}

#[test]
fn thread_counts_give_byte_identical_results() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = scenario_dir_with_more_workers(tmp.path());
    // Sampled scenarios are not split into shares (a share skips them).
    let whole: Vec<serde_json::Value> = lines(&racelab(&["check", "all", "--json", "--scenarios", &dir]))
        .into_iter()
        .filter(|v| v["mode"] == "exhaustive")
        .collect();
    let without_timing = |mut v: serde_json::Value| {
        v["stats"].as_object_mut().expect("stats").remove("elapsed_ms");
        v.to_string()
    };
    let mut runs = Vec::new();
    for threads in ["1", "2", "3"] {
        let out = racelab(&["check", "all", "--json", "--scenarios", &dir, "--threads", threads]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let exhaustive = lines(&out).into_iter().filter(|v| v["mode"] == "exhaustive");
        runs.push(exhaustive.map(without_timing).collect::<Vec<_>>());
    }
    assert_eq!(runs[0], runs[1]);
    assert_eq!(runs[0], runs[2]);
    for (t, w) in runs[0].iter().zip(&whole) {
        let t: serde_json::Value = serde_json::from_str(t).expect("JSON");
        assert_eq!(verdict_of(&t), verdict_of(w));
    }
}

/// A scenario large enough that its search reads the clock before it ends.
fn large_scenario(tmp: &Path) -> String {
    let dir = tmp.join("large/summary-upsert");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let text = std::fs::read_to_string(format!("{}/summary-upsert/advisory-xact-lock.toml", scenarios_dir()))
        .expect("scenario file")
        .replace("requests = 2", "requests = 6");
    std::fs::write(dir.join("advisory-xact-lock.toml"), text).expect("write");
    tmp.join("large").display().to_string()
}

#[test]
fn a_time_limit_gives_an_inconclusive_verdict_with_partial_counts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = large_scenario(tmp.path());
    let out =
        racelab(&["check", "summary-upsert/advisory-xact-lock", "--json", "--scenarios", &dir, "--time-limit", "0"]);
    assert_eq!(out.status.code(), Some(1), "inconclusive where holds is expected");
    let v = &lines(&out)[0];
    assert_eq!(v["verdict"], "inconclusive");
    assert_eq!(v["reason"], "time limit reached: 0 s");
    assert_eq!(v["complete"], false);
    assert!(v["stats"]["states"].as_u64().unwrap() > 0, "{v}");
    assert!(v["stats"]["transitions"].as_u64().unwrap() >= 4096, "{v}");
}

#[test]
fn progress_lines_go_to_standard_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = large_scenario(tmp.path());
    // Unreduced, so that the search outlasts the limit in a release build too.
    let args = ["check", "summary-upsert/advisory-xact-lock", "--json", "--no-symmetry", "--scenarios", &dir];
    let out = racelab(&[&args[..], &["--time-limit", "3", "--progress"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.contains("states/s")).unwrap_or_else(|| panic!("a progress line: {err}"));
    assert!(line.starts_with("summary-upsert/advisory-xact-lock: "), "{line}");
    assert!(line.contains(" depth ") && line.contains(" frontier "), "{line}");
    assert_eq!(lines(&out).len(), 1, "standard output holds only the verdict");
}

#[test]
fn ctrl_c_gives_an_inconclusive_verdict_and_exit_130() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = large_scenario(tmp.path());
    let child = Command::new(env!("CARGO_BIN_EXE_racelab"))
        .args(["check", "summary-upsert/advisory-xact-lock", "--json", "--no-symmetry", "--scenarios", &dir])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("racelab runs");
    // Long enough to be exploring (the handler is installed before), far shorter than the
    // unreduced search, even in a release build.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().expect("racelab ends");
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let v = &lines(&out)[0];
    assert_eq!(v["verdict"], "inconclusive");
    assert!(v["reason"].as_str().unwrap().starts_with("interrupted (SIGINT)"), "{v}");
    assert!(v["stats"]["states"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn bad_share_input_exits_2_saying_what_and_where() {
    let tmp = tempfile::tempdir().expect("tmp");
    let sd = scenarios_dir();
    for bad in ["0/3", "4/3", "x/3", "3", "1/0"] {
        let out = racelab(&["check", "all", "--scenarios", &sd, "--shard", bad]);
        assert_eq!(out.status.code(), Some(2), "--shard {bad}");
    }
    let out = racelab(&["check", "all", "--scenarios", &sd, "--shard", "1/2", "--mode", "random"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exhaustive mode"));

    let share = racelab(&["check", "summary-upsert", "--json", "--scenarios", &sd, "--shard", "1/2"]);
    let good = tmp.path().join("share.jsonl");
    std::fs::write(&good, &share.stdout).expect("write");
    let unsharded = tmp.path().join("whole.jsonl");
    std::fs::write(&unsharded, racelab(&["check", "summary-upsert", "--json", "--scenarios", &sd]).stdout)
        .expect("write");
    let missing = tmp.path().join("missing.jsonl");
    let merge = |files: &[&Path]| {
        let mut args: Vec<String> = vec!["merge".into(), "--scenarios".into(), sd.clone()];
        args.extend(files.iter().map(|f| f.display().to_string()));
        racelab(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let cases: [(&[&Path], &str); 3] = [
        (&[&missing], "missing.jsonl"),
        (&[&unsharded], "whole.jsonl:1: no `shares`"),
        (&[&good, &good], "given twice"),
    ];
    for (files, expect) in cases {
        let out = merge(files);
        assert_eq!(out.status.code(), Some(2), "{expect}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(expect), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // One share of two, merged alone: no verdict can be claimed for a scenario that holds.
    let out = racelab(&["merge", "--json", "--scenarios", &sd, good.to_str().expect("utf-8")]);
    let merged = lines(&out);
    assert!(!merged.is_empty());
    for v in &merged {
        assert_ne!(v["verdict"], "holds", "{v}");
    }
}
