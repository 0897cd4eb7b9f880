//! The example's own race through racelab's library CLI, as CI runs it: check, replay, explain,
//! the PostgreSQL backend, and export-spec replayed by pg-spec on a real server.

use std::process::{Command, Output};

/// Run the example's binary under a private TMPDIR (any throwaway cluster lives there), and
/// check that nothing of it is left afterwards.
fn seat_booking(args: &[&str]) -> Output {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // Readable by the unprivileged user the server runs as when the tests run as root.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_seat-booking"))
        .args(args)
        .current_dir(tmp.path())
        .env_remove("DATABASE_URL")
        .env("TMPDIR", tmp.path())
        .env("COLUMNS", "160")
        .output()
        .expect("seat-booking runs");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("racelab"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

fn verdicts(lines: &[serde_json::Value]) -> Vec<(String, String)> {
    lines.iter().map(|v| (v["id"].as_str().unwrap().to_string(), v["verdict"].as_str().unwrap().to_string())).collect()
}

#[test]
fn check_replay_and_explain_on_the_simulator() {
    let out = seat_booking(&["check", "all", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(
        verdicts(&lines),
        [
            ("seat-booking/check-then-book".to_string(), "violated".to_string()),
            ("seat-booking/conditional-update".to_string(), "holds".to_string())
        ]
    );
    let token = lines[0]["token"].as_str().unwrap();
    let replayed = seat_booking(&["replay", "seat-booking/check-then-book", token]);
    assert_eq!(replayed.status.code(), Some(0), "{}", stderr(&replayed));
    assert!(stdout(&replayed).contains("violated: no-overbooking"), "{}", stdout(&replayed));

    let explained = seat_booking(&["explain", "seat-booking/conditional-update"]);
    assert_eq!(explained.status.code(), Some(0), "{}", stderr(&explained));
    assert!(stdout(&explained).contains("complete: true"), "{}", stdout(&explained));
}

#[test]
fn the_same_verdicts_on_postgres_and_the_counterexample_replays_there() {
    let sim = json_lines(&seat_booking(&["check", "all", "--json"]));
    let out = seat_booking(&["check", "all", "--json", "--backend", "postgres"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let pg = json_lines(&out);
    assert_eq!(verdicts(&pg), verdicts(&sim));
    assert!(pg.iter().all(|v| v["backend"] == "postgres"));

    let token = sim[0]["token"].as_str().unwrap();
    let replayed = seat_booking(&["replay", "seat-booking/check-then-book", token, "--backend", "postgres"]);
    assert_eq!(replayed.status.code(), Some(0), "{}", stderr(&replayed));
    assert!(stdout(&replayed).contains("violated: no-overbooking"), "{}", stdout(&replayed));
}

#[test]
fn the_exported_spec_shows_the_double_booking_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("double-booking.spec");
    let out = seat_booking(&["export-spec", "seat-booking/check-then-book", "--out", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&spec).unwrap();
    assert!(text.contains("UPDATE seats SET booked_by = 'customer-2'"), "{text}");

    let ran = seat_booking(&["pg-spec", spec.to_str().unwrap()]);
    assert_eq!(ran.status.code(), Some(0), "{}", stderr(&ran));
    // Both updates return the row: both customers were told "booked".
    let output = stdout(&ran);
    assert!(output.contains("customer-1") && output.contains("customer-2"), "{output}");
}
