//! What the command-line tests share: running the binary, and reading what it printed.
// Each test file uses a different part of it.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

/// The binary, run from the crate's directory with a fixed terminal width.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_racelab"));
    cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR")).env("COLUMNS", "160");
    cmd
}

pub fn racelab(args: &[&str]) -> Output {
    command(args).output().expect("racelab runs")
}

/// The binary with no `DATABASE_URL` (so that it starts its own throwaway cluster) and `TMPDIR`
/// set to `tmp`, where that cluster lives.
pub fn racelab_in(tmp: &Path, args: &[&str]) -> Output {
    command(args).env_remove("DATABASE_URL").env("TMPDIR", tmp).output().expect("racelab runs")
}

/// A temporary directory that the unprivileged server user can enter (a cluster's parent).
pub fn open_tmp() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The catalogue's scenario files.
pub fn scenarios_dir() -> String {
    format!("{}/../../scenarios", env!("CARGO_MANIFEST_DIR"))
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
