//! Short human labels for ops and outcomes, as shown in timeline cells.

use crate::op::{Expr, HttpOp, OnConflict, OsOp, Outcome, Sql, Value};

/// `(tag=s1)`-style arguments for a statement.
pub fn sql_args(stmt: &Sql) -> String {
    let pairs =
        |f: &[(&str, crate::op::Value)]| f.iter().map(|(c, v)| format!("{c}={v}")).collect::<Vec<_>>().join(", ");
    match stmt {
        Sql::Select { filter, .. } | Sql::Delete { filter, .. } => format!("({})", pairs(filter)),
        Sql::Update { filter, set, .. } => format!("({}; {})", pairs(filter), sets(set)),
        Sql::Insert { row, on_conflict, .. } => {
            let vals = row.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ");
            match on_conflict {
                OnConflict::Error => format!("({vals})"),
                OnConflict::DoNothing { .. } => format!("({vals}) on conflict do nothing"),
                OnConflict::DoUpdate { set, .. } => format!("({vals}) on conflict set {}", sets(set)),
            }
        }
        Sql::AdvisoryLock { key, .. } | Sql::AdvisoryTryLock { key, .. } | Sql::AdvisoryUnlock { key } => {
            format!("({key})")
        }
        Sql::SetLockTimeout(ms) => format!("({ms}ms)"),
        Sql::BeginRepeatableRead => " isolation level repeatable read".into(),
        Sql::Begin | Sql::Commit | Sql::Rollback | Sql::AdvisoryUnlockAll => String::new(),
    }
}

/// `(path)`-style arguments for an OS call.
pub fn os_args(op: &OsOp) -> String {
    match op {
        OsOp::SpawnProcess { .. } | OsOp::SpawnTask { .. } | OsOp::AwaitSpawn | OsOp::Exit => String::new(),
        OsOp::ReadFile { path } | OsOp::RemoveFile { path } => format!("({path})"),
        OsOp::WriteFile { path, content } => format!("({path}={content})"),
        OsOp::IsAlive { pid } => format!("({pid})"),
        OsOp::Flock { path, .. } | OsOp::Funlock { path } => format!("({path})"),
    }
}

/// `(route arg)`-style arguments for an HTTP call.
pub fn http_args(op: &HttpOp) -> String {
    match op {
        HttpOp::Request { route, arg } => format!("({route} {arg})"),
        HttpOp::Accept { route } => format!("({route})"),
        HttpOp::Respond { status } => format!("({status})"),
    }
}

fn sets(set: &[(&str, Expr)]) -> String {
    set.iter()
        .map(|(c, e)| match e {
            Expr::Value(v) => format!("{c}={v}"),
            Expr::Add(col, n) => format!("{c}={col}+{n}"),
            Expr::Excluded(col) => format!("{c}=excluded.{col}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `none`, `1 row`, `ok`, `23505 unique_violation`, …
pub fn outcome(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::Rows(rows) => match rows.len() {
            0 => "none".into(),
            1 => format!("[{}]", rows[0].iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")),
            n => format!("{n} rows"),
        },
        Outcome::Bool(b) => b.to_string(),
        Outcome::Pid(p) => format!("pid {p}"),
        // Empty or torn file content must stay visible: quote it, NUL bytes as `∅`.
        Outcome::Value(Value::Str(s)) if s.is_empty() || s.contains('\0') => crate::sim::fs::show(s.as_bytes()),
        Outcome::Value(v) => v.to_string(),
        Outcome::Status(s) => format!("HTTP {s}"),
        Outcome::Err(e) => e.to_string(),
    }
}
