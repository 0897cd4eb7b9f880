//! `racelab stress` on a throwaway cluster, bounded to a few rounds per scenario: the races
//! show up under real concurrency, the fixes that hold do not break, models that cannot run
//! freely are reported inconclusive, and nothing is left behind.

use std::path::Path;

mod common;
use common::{open_tmp, racelab_in};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The report lines of one scenario: its summary line and the indented lines under it.
fn section<'a>(stdout: &'a str, id: &str) -> Vec<&'a str> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with(&format!("{id} ")));
    let first = lines.next().unwrap_or_else(|| panic!("no line for {id} in:\n{stdout}"));
    std::iter::once(first).chain(lines.take_while(|l| l.starts_with("  "))).collect()
}

fn assert_nothing_left(tmp: &Path) {
    let left: Vec<_> = std::fs::read_dir(tmp).unwrap().collect();
    assert!(left.is_empty(), "left behind in {}: {left:?}", tmp.display());
}

#[test]
fn races_break_under_real_concurrency_and_fixes_hold() {
    let tmp = open_tmp();
    let ids = [
        "summary-upsert/check-then-insert",
        "summary-upsert/unique-on-conflict",
        "nested-locks/fine-grained",
        "judge-persist/await-persist",
    ];
    let mut args = vec!["stress"];
    args.extend(ids);
    args.extend(["--clients", "8", "--ops", "200", "--backend", "postgres"]);
    let out = racelab_in(tmp.path(), &args);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{}", text(&out.stderr));

    let found = section(&stdout, "summary-upsert/check-then-insert");
    assert!(found[0].contains("8 actors") && found[0].contains("violated in"), "{found:?}");
    assert!(found.iter().any(|l| l.starts_with("  no-two-documents-per-tag: ")), "{found:?}");

    // A fix that holds on every explored schedule must hold here too.
    let fix = section(&stdout, "summary-upsert/unique-on-conflict");
    assert!(fix[0].contains("no violation"), "{fix:?}");
    let rounds: u64 = fix[0].split_whitespace().skip_while(|w| *w != "actors").nth(1).unwrap().parse().unwrap();
    assert!(rounds >= 2, "{fix:?}");

    // Hooks waiting for their own second connection: the watchdog ends the round.
    let stuck = section(&stdout, "nested-locks/fine-grained");
    assert!(stuck.iter().any(|l| l.starts_with("  no-deadlock: ")), "{stuck:?}");

    let skipped = section(&stdout, "judge-persist/await-persist");
    assert!(skipped[0].contains("inconclusive: not stressed: ") && skipped[0].contains("HTTP"), "{skipped:?}");
    assert_nothing_left(tmp.path());
}

#[test]
fn clients_beyond_the_model_cap_are_reported() {
    let tmp = open_tmp();
    let out = racelab_in(
        tmp.path(),
        &["stress", "summary-upsert/advisory-xact-lock", "--clients", "40", "--ops", "100", "--backend", "postgres"],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{}", text(&out.stderr));
    let lines = section(&stdout, "summary-upsert/advisory-xact-lock");
    assert!(lines[0].contains("32 actors") && lines[0].contains("no violation"), "{lines:?}");
    assert!(lines.contains(&"  40 clients asked; `requests` is at most 32 for this model"), "{lines:?}");
    assert_nothing_left(tmp.path());
}

#[test]
fn stress_needs_a_server_and_known_ids() {
    let tmp = open_tmp();
    let out = racelab_in(tmp.path(), &["stress", "summary-upsert", "--backend", "sim"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--backend postgres"), "{}", text(&out.stderr));
    let out = racelab_in(tmp.path(), &["stress", "no-such-race"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown id `no-such-race`"), "{}", text(&out.stderr));
    assert_nothing_left(tmp.path());
}
