//! [`Sql`] as SQL text, the schema as DDL, and result rows back as [`Value`]s.
//!
//! Statements are rendered as plain text with literals (integers as they are, strings
//! single-quoted with quotes doubled, `NULL`) and sent with the simple query protocol: one
//! round trip, results as text. Identifiers are used as given: models name tables and
//! columns with simple lowercase words.
//!
//! Column types: the shared [`Schema`] says nothing about types, and results must come back
//! as the same `Value`s the simulator holds (`Int` for numbers, so that `SET n = n + 1` works;
//! `Str` for strings). Every column is `bigint` unless the caller lists it as text
//! (`(table, column)` pairs); cells are decoded by the declared type.
//!
//! Row order: the simulator returns rows in insertion order; PostgreSQL has no such order.
//! Models use the first column as an id that grows with insertion, so `SELECT` renders
//! `ORDER BY 1` (which also makes `FOR UPDATE` lock rows in that order) and rows returned by
//! `INSERT`/`UPDATE`/`DELETE … RETURNING *` are sorted by their first column here.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Mutex;

use racelab_harness::op::{ErrorCode, Expr, LockScope, OnConflict, Outcome, Row, RowLock, Sql, Value};
use racelab_harness::sim::{Schema, TableDef};
use tokio_postgres::SimpleQueryMessage;

use crate::error::PgError;

/// A column's SQL type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColType {
    Int,
    Text,
}

impl ColType {
    fn sql(self) -> &'static str {
        match self {
            ColType::Int => "bigint",
            ColType::Text => "text",
        }
    }
}

/// The declared type of every column of a schema.
#[derive(Clone, Debug)]
pub struct Types {
    tables: Vec<(String, Vec<ColType>)>,
}

impl Types {
    /// `bigint` everywhere except the `(table, column)` pairs in `text_columns`, each of
    /// which must name a column of the schema.
    pub fn new(schema: &Schema, text_columns: &[(&str, &str)]) -> Result<Types, PgError> {
        for &(t, c) in text_columns {
            let known = schema.tables.iter().any(|d| d.name == t && d.columns.contains(&c));
            if !known {
                return Err(PgError::Schema(format!("text column {t}.{c} is not in the schema")));
            }
        }
        let tables = schema
            .tables
            .iter()
            .map(|d| {
                let types = d
                    .columns
                    .iter()
                    .map(|&c| if text_columns.contains(&(d.name, c)) { ColType::Text } else { ColType::Int })
                    .collect();
                (d.name.to_string(), types)
            })
            .collect();
        Ok(Types { tables })
    }

    /// The column types of `table`, in column order.
    pub fn table(&self, table: &str) -> Option<&[ColType]> {
        self.tables.iter().find(|(t, _)| t == table).map(|(_, c)| c.as_slice())
    }
}

/// `CREATE TABLE` and `CREATE UNIQUE INDEX` statements for `schema`.
pub fn schema_sql(schema: &Schema, text_columns: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for t in &schema.tables {
        let cols: Vec<String> = t
            .columns
            .iter()
            .map(|&c| {
                let ty = if text_columns.contains(&(t.name, c)) { ColType::Text } else { ColType::Int };
                format!("{c} {}", ty.sql())
            })
            .collect();
        out.push(format!("CREATE TABLE {} ({})", t.name, cols.join(", ")));
        for u in &t.unique {
            let mut s = format!("CREATE UNIQUE INDEX {} ON {} ({})", u.name, t.name, u.columns.join(", "));
            if let Some((c, v)) = u.predicate {
                let _ = write!(s, " WHERE {c} = {}", literal(v));
            }
            out.push(s);
        }
    }
    out
}

/// `DROP TABLE IF EXISTS` for every table of `schema`.
pub fn drop_sql(schema: &Schema) -> Vec<String> {
    schema.tables.iter().map(|t| format!("DROP TABLE IF EXISTS {} CASCADE", t.name)).collect()
}

/// A value as an SQL literal.
pub fn literal(v: Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Int(i) => i.to_string(),
        Value::Str(s) => format!("'{}'", s.replace('\'', "''")),
    }
}

fn where_clause(out: &mut String, filter: &[(&str, Value)]) {
    for (i, (c, v)) in filter.iter().enumerate() {
        out.push_str(if i == 0 { " WHERE " } else { " AND " });
        let _ = write!(out, "{c} = {}", literal(*v));
    }
}

fn set_list(out: &mut String, table: &str, set: &[(&str, Expr)]) {
    for (i, (c, e)) in set.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        // `table.col` rather than `col`: inside ON CONFLICT DO UPDATE a bare name could also
        // mean EXCLUDED's column.
        let _ = match e {
            Expr::Value(v) => write!(out, "{c} = {}", literal(*v)),
            Expr::Add(src, n) if *n < 0 => write!(out, "{c} = {table}.{src} - {}", n.unsigned_abs()),
            Expr::Add(src, n) => write!(out, "{c} = {table}.{src} + {n}"),
            Expr::Excluded(src) => write!(out, "{c} = EXCLUDED.{src}"),
        };
    }
}

/// The predicate of a partial unique index on exactly `target`, which `ON CONFLICT (target)`
/// must repeat for PostgreSQL to pick that index as the arbiter.
fn arbiter_predicate(def: Option<&TableDef>, target: &[&str]) -> Option<(&'static str, Value)> {
    def?.unique.iter().find(|u| u.columns.as_slice() == target && u.predicate.is_some())?.predicate
}

/// One statement as SQL text. `schema` supplies the predicates of partial unique indexes
/// that `ON CONFLICT` targets.
pub fn render(stmt: &Sql, schema: &Schema) -> String {
    let mut s = String::new();
    match stmt {
        Sql::Begin => s.push_str("BEGIN"),
        Sql::BeginRepeatableRead => s.push_str("BEGIN ISOLATION LEVEL REPEATABLE READ"),
        Sql::Commit => s.push_str("COMMIT"),
        Sql::Rollback => s.push_str("ROLLBACK"),
        Sql::SetLockTimeout(ms) => {
            let _ = write!(s, "SET lock_timeout = '{ms}ms'");
        }
        Sql::Select { table, filter, lock } => {
            let _ = write!(s, "SELECT * FROM {table}");
            where_clause(&mut s, filter);
            s.push_str(" ORDER BY 1");
            s.push_str(match lock {
                None => "",
                Some(RowLock::ForUpdate) => " FOR UPDATE",
                Some(RowLock::ForUpdateNowait) => " FOR UPDATE NOWAIT",
                Some(RowLock::ForUpdateSkipLocked) => " FOR UPDATE SKIP LOCKED",
            });
        }
        Sql::Insert { table, row, on_conflict } => {
            let values: Vec<String> = row.iter().map(|&v| literal(v)).collect();
            let _ = write!(s, "INSERT INTO {table} VALUES ({})", values.join(", "));
            let def = schema.tables.iter().find(|t| t.name == *table);
            let conflict = |target: &[&str], s: &mut String| {
                let _ = write!(s, " ON CONFLICT ({})", target.join(", "));
                if let Some((c, v)) = arbiter_predicate(def, target) {
                    let _ = write!(s, " WHERE {c} = {}", literal(v));
                }
            };
            match on_conflict {
                OnConflict::Error => {}
                OnConflict::DoNothing { target } => {
                    conflict(target, &mut s);
                    s.push_str(" DO NOTHING");
                }
                OnConflict::DoUpdate { target, set } => {
                    conflict(target, &mut s);
                    s.push_str(" DO UPDATE SET ");
                    set_list(&mut s, table, set);
                }
            }
            s.push_str(" RETURNING *");
        }
        Sql::Update { table, filter, set } => {
            let _ = write!(s, "UPDATE {table} SET ");
            set_list(&mut s, table, set);
            where_clause(&mut s, filter);
            s.push_str(" RETURNING *");
        }
        Sql::Delete { table, filter } => {
            let _ = write!(s, "DELETE FROM {table}");
            where_clause(&mut s, filter);
            s.push_str(" RETURNING *");
        }
        Sql::AdvisoryLock { key, scope } => {
            let f = match scope {
                LockScope::Session => "pg_advisory_lock",
                LockScope::Xact => "pg_advisory_xact_lock",
            };
            let _ = write!(s, "SELECT {f}({key})");
        }
        Sql::AdvisoryTryLock { key, scope } => {
            let f = match scope {
                LockScope::Session => "pg_try_advisory_lock",
                LockScope::Xact => "pg_try_advisory_xact_lock",
            };
            let _ = write!(s, "SELECT {f}({key})");
        }
        Sql::AdvisoryUnlock { key } => {
            let _ = write!(s, "SELECT pg_advisory_unlock({key})");
        }
        Sql::AdvisoryUnlockAll => s.push_str("SELECT pg_advisory_unlock_all()"),
    }
    s
}

/// The statement that an injected fault runs instead: it fails with SQLSTATE 58030 and, as
/// any error does, aborts an open transaction.
pub const INJECTED_FAULT: &str = "DO $$ BEGIN RAISE EXCEPTION 'injected fault' USING ERRCODE = '58030'; END $$";

/// Turn the messages of a simple query into the outcome the simulator would give.
pub fn decode(stmt: &Sql, messages: &[SimpleQueryMessage], types: &Types) -> Result<Outcome, PgError> {
    let rows = || messages.iter().filter_map(|m| if let SimpleQueryMessage::Row(r) = m { Some(r) } else { None });
    match stmt {
        Sql::Select { table, .. }
        | Sql::Insert { table, .. }
        | Sql::Update { table, .. }
        | Sql::Delete { table, .. } => {
            let cols = types.table(table).ok_or_else(|| PgError::Schema(format!("no table {table}")))?;
            let mut out: Vec<Row> = Vec::new();
            for r in rows() {
                if r.len() != cols.len() {
                    return Err(PgError::Decode(format!("{table}: {} columns, expected {}", r.len(), cols.len())));
                }
                let row = (0..cols.len()).map(|i| cell(r.get(i), cols[i], table)).collect::<Result<Row, _>>()?;
                out.push(row);
            }
            if !matches!(stmt, Sql::Select { .. }) {
                out.sort_by(|a, b| a.first().cmp(&b.first()));
            }
            Ok(Outcome::Rows(out))
        }
        Sql::AdvisoryTryLock { .. } | Sql::AdvisoryUnlock { .. } => match rows().next().and_then(|r| r.get(0)) {
            Some("t") => Ok(Outcome::Bool(true)),
            Some("f") => Ok(Outcome::Bool(false)),
            other => Err(PgError::Decode(format!("expected a boolean, got {other:?}"))),
        },
        _ => Ok(Outcome::Ok),
    }
}

fn cell(text: Option<&str>, ty: ColType, table: &str) -> Result<Value, PgError> {
    match (text, ty) {
        (None, _) => Ok(Value::Null),
        (Some(t), ColType::Int) => {
            t.parse().map(Value::Int).map_err(|_| PgError::Decode(format!("{table}: {t:?} is not a bigint")))
        }
        (Some(t), ColType::Text) => Ok(Value::Str(intern(t))),
    }
}

/// A `&'static str` equal to `s`.
///
/// [`Value::Str`] and [`ErrorCode`] hold `&'static str` (the simulator only ever sees the
/// literals written in models), but strings read back from the server are owned. Each
/// distinct string is leaked once and reused: the set is bounded by the finite set of
/// strings that models write and the SQLSTATEs the server raises, so the leak is too.
pub fn intern(s: &str) -> &'static str {
    static STRINGS: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut set = STRINGS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(&known) = set.get(s) {
        return known;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// The outcome a client sees for a failed statement: its SQLSTATE, or 08006
/// (connection_failure) when the connection broke without one.
pub fn error_outcome(e: &tokio_postgres::Error) -> Outcome {
    Outcome::Err(match e.code() {
        Some(c) => error_code(c.code()),
        None => ErrorCode::CONNECTION_FAILURE,
    })
}

/// Did `e` end the connection: the server terminated the session (SQLSTATE class 57P), the
/// connection broke (class 08), or it closed without a SQLSTATE?
pub fn connection_lost(e: &tokio_postgres::Error) -> bool {
    e.is_closed() || e.code().is_none_or(|c| c.code().starts_with("08") || c.code().starts_with("57P"))
}

/// A SQLSTATE as an [`ErrorCode`], reusing the known constants.
pub fn error_code(code: &str) -> ErrorCode {
    const KNOWN: [ErrorCode; 9] = [
        ErrorCode::UNIQUE_VIOLATION,
        ErrorCode::IN_FAILED_SQL_TRANSACTION,
        ErrorCode::NO_ACTIVE_SQL_TRANSACTION,
        ErrorCode::ACTIVE_SQL_TRANSACTION,
        ErrorCode::DEADLOCK_DETECTED,
        ErrorCode::LOCK_NOT_AVAILABLE,
        ErrorCode::QUERY_CANCELED,
        ErrorCode::CONNECTION_FAILURE,
        ErrorCode::IO_ERROR,
    ];
    KNOWN.into_iter().find(|k| k.0 == code).unwrap_or_else(|| ErrorCode(intern(code)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_harness::sim::UniqueIndex;

    fn schema() -> Schema {
        Schema {
            tables: vec![
                TableDef {
                    name: "jobs",
                    columns: vec!["id", "tag", "state", "n"],
                    unique: vec![
                        UniqueIndex { name: "jobs_id", columns: vec!["id"], predicate: None },
                        UniqueIndex {
                            name: "jobs_running_tag",
                            columns: vec!["tag"],
                            predicate: Some(("state", Value::Str("running"))),
                        },
                    ],
                },
                TableDef { name: "kv", columns: vec!["k", "v"], unique: vec![] },
            ],
        }
    }

    const TEXT: &[(&str, &str)] = &[("jobs", "tag"), ("jobs", "state")];

    fn r(stmt: Sql) -> String {
        render(&stmt, &schema())
    }

    #[test]
    fn ddl() {
        assert_eq!(
            schema_sql(&schema(), TEXT),
            vec![
                "CREATE TABLE jobs (id bigint, tag text, state text, n bigint)",
                "CREATE UNIQUE INDEX jobs_id ON jobs (id)",
                "CREATE UNIQUE INDEX jobs_running_tag ON jobs (tag) WHERE state = 'running'",
                "CREATE TABLE kv (k bigint, v bigint)",
            ]
        );
        assert_eq!(drop_sql(&schema())[1], "DROP TABLE IF EXISTS kv CASCADE");
    }

    #[test]
    fn literals() {
        assert_eq!(literal(Value::Null), "NULL");
        assert_eq!(literal(Value::Int(-7)), "-7");
        assert_eq!(literal(Value::Str("it's")), "'it''s'");
    }

    #[test]
    fn transaction_control_and_settings() {
        assert_eq!(r(Sql::Begin), "BEGIN");
        assert_eq!(r(Sql::BeginRepeatableRead), "BEGIN ISOLATION LEVEL REPEATABLE READ");
        assert_eq!(r(Sql::Commit), "COMMIT");
        assert_eq!(r(Sql::Rollback), "ROLLBACK");
        assert_eq!(r(Sql::SetLockTimeout(250)), "SET lock_timeout = '250ms'");
        assert_eq!(r(Sql::SetLockTimeout(0)), "SET lock_timeout = '0ms'");
    }

    #[test]
    fn selects() {
        let sel =
            |lock| Sql::Select { table: "jobs", filter: vec![("tag", Value::Str("a")), ("n", Value::Int(2))], lock };
        assert_eq!(r(sel(None)), "SELECT * FROM jobs WHERE tag = 'a' AND n = 2 ORDER BY 1");
        assert_eq!(
            r(sel(Some(RowLock::ForUpdate))),
            "SELECT * FROM jobs WHERE tag = 'a' AND n = 2 ORDER BY 1 FOR UPDATE"
        );
        assert!(r(sel(Some(RowLock::ForUpdateNowait))).ends_with("ORDER BY 1 FOR UPDATE NOWAIT"));
        assert!(r(sel(Some(RowLock::ForUpdateSkipLocked))).ends_with("ORDER BY 1 FOR UPDATE SKIP LOCKED"));
        assert_eq!(r(Sql::Select { table: "kv", filter: vec![], lock: None }), "SELECT * FROM kv ORDER BY 1");
    }

    #[test]
    fn inserts() {
        let row = vec![Value::Int(1), Value::Str("a"), Value::Str("running"), Value::Null];
        let ins = |on_conflict| Sql::Insert { table: "jobs", row: row.clone(), on_conflict };
        assert_eq!(r(ins(OnConflict::Error)), "INSERT INTO jobs VALUES (1, 'a', 'running', NULL) RETURNING *");
        assert_eq!(
            r(ins(OnConflict::DoNothing { target: vec!["id"] })),
            "INSERT INTO jobs VALUES (1, 'a', 'running', NULL) ON CONFLICT (id) DO NOTHING RETURNING *"
        );
        assert_eq!(
            r(ins(OnConflict::DoNothing { target: vec!["tag"] })),
            "INSERT INTO jobs VALUES (1, 'a', 'running', NULL) ON CONFLICT (tag) WHERE state = 'running' \
             DO NOTHING RETURNING *"
        );
        assert_eq!(
            r(ins(OnConflict::DoUpdate {
                target: vec!["id"],
                set: vec![
                    ("n", Expr::Add("n", 1)),
                    ("tag", Expr::Excluded("tag")),
                    ("state", Expr::Value(Value::Str("x")))
                ]
            })),
            "INSERT INTO jobs VALUES (1, 'a', 'running', NULL) ON CONFLICT (id) DO UPDATE SET n = jobs.n + 1, \
             tag = EXCLUDED.tag, state = 'x' RETURNING *"
        );
    }

    #[test]
    fn updates_and_deletes() {
        assert_eq!(
            r(Sql::Update { table: "kv", filter: vec![("k", Value::Int(1))], set: vec![("v", Expr::Add("v", -3))] }),
            "UPDATE kv SET v = kv.v - 3 WHERE k = 1 RETURNING *"
        );
        assert_eq!(
            r(Sql::Update { table: "kv", filter: vec![], set: vec![("v", Expr::Value(Value::Null))] }),
            "UPDATE kv SET v = NULL RETURNING *"
        );
        assert_eq!(
            r(Sql::Delete { table: "kv", filter: vec![("k", Value::Int(1))] }),
            "DELETE FROM kv WHERE k = 1 RETURNING *"
        );
    }

    #[test]
    fn advisory_locks() {
        assert_eq!(r(Sql::AdvisoryLock { key: 7, scope: LockScope::Session }), "SELECT pg_advisory_lock(7)");
        assert_eq!(r(Sql::AdvisoryLock { key: -7, scope: LockScope::Xact }), "SELECT pg_advisory_xact_lock(-7)");
        assert_eq!(r(Sql::AdvisoryTryLock { key: 7, scope: LockScope::Session }), "SELECT pg_try_advisory_lock(7)");
        assert_eq!(r(Sql::AdvisoryTryLock { key: 7, scope: LockScope::Xact }), "SELECT pg_try_advisory_xact_lock(7)");
        assert_eq!(r(Sql::AdvisoryUnlock { key: 7 }), "SELECT pg_advisory_unlock(7)");
        assert_eq!(r(Sql::AdvisoryUnlockAll), "SELECT pg_advisory_unlock_all()");
    }

    #[test]
    fn types_and_interning() {
        let t = Types::new(&schema(), TEXT).unwrap();
        assert_eq!(t.table("jobs").unwrap(), &[ColType::Int, ColType::Text, ColType::Text, ColType::Int]);
        assert!(Types::new(&schema(), &[("jobs", "nope")]).is_err());
        let a = intern(&String::from("hello"));
        let b = intern(&String::from("hello"));
        assert!(std::ptr::eq(a, b));
        assert_eq!(error_code("23505"), ErrorCode::UNIQUE_VIOLATION);
        assert_eq!(error_code("XX000").0, "XX000");
        assert_eq!(cell(Some("12"), ColType::Int, "t").unwrap(), Value::Int(12));
        assert_eq!(cell(Some("12"), ColType::Text, "t").unwrap(), Value::Str("12"));
        assert_eq!(cell(None, ColType::Int, "t").unwrap(), Value::Null);
        assert!(cell(Some("x"), ColType::Int, "t").is_err());
    }
}
