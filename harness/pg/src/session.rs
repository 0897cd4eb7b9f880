//! [`Sessions`]: run [`Sql`] on a real server one statement at a time, with the same API as
//! the simulator ([`racelab_harness::sim::Db`]), so that an explorer can drive either.
//!
//! Each [`ConnId`] is one connection; a separate control connection watches them. After every
//! action the controller *settles*: it waits until every statement in flight, on any
//! connection, has either completed or is blocked on a lock held by another of the sessions.
//! Blocked is what PostgreSQL's isolation tester asks the server:
//! `pg_isolation_test_session_is_blocked(pid, all session pids)`, from the control
//! connection. When the sessions report their deadlock checks (see below), a running statement
//! is not asked about until it completes or reports one (a statement that waits reports it
//! within about a millisecond); otherwise the controller asks about every millisecond. No
//! fixed sleep stands in for that test.
//!
//! Deadlocks: PostgreSQL checks a waiter for a deadlock once, `deadlock_timeout` after it
//! started waiting, and fails whichever member of a cycle checks first once the cycle exists.
//! The simulator lets the explorer pick that member. On a fresh run the controller makes it the
//! statement that closes the cycle: a statement is only reported [`Applied::Blocked`] once it
//! has waited `deadlock_timeout` plus a margin (its check has then run), and while the
//! wait-for graph among the sessions has a cycle the controller keeps waiting for PostgreSQL to
//! break it. The cycle's members (named in the 40P01 error's detail) are then all reported
//! ready, as on the simulator, until [`Sessions::pick_victim`]: the victim's 40P01 if
//! PostgreSQL failed that one, else a [`Pin`] with which a repeat of the run makes PostgreSQL
//! pick it ([`Sessions::pin_victims`]; the backend repeats runs). As a superuser, the sessions
//! run with a 1 ms `deadlock_timeout` and report each check (`log_lock_waits`), and the
//! controller wakes on that report: a step that blocks costs about two round trips and the
//! check; a step that completes costs one round trip, plus one status query while other
//! statements wait. A run with pinned victims sets `deadlock_timeout` before each statement
//! (one more round trip each).
//!
//! Between schedules ([`Sessions::reset`]) and when a client crashes
//! ([`Sessions::disconnect`]) sessions are recycled rather than reconnected, and committed
//! rows are read from the server again only after a statement that may have changed them.
//!
//! The state of the server changes only inside calls to [`Sessions`]: the tokio runtime is a
//! private current-thread one, driven only while a call runs. Outcomes of earlier-blocked
//! statements that complete during a settle are kept until [`Sessions::take_ready`].
//!
//! Every session runs with `statement_timeout = 10s`, so nothing waits forever; deadlocks that
//! PostgreSQL cannot see (a client waiting for its own second connection) show up as every
//! session blocked, which is for the caller to handle. [`Sessions::reset`] and `Drop`
//! terminate whatever still runs.
//!
//! Differences from the simulator that remain:
//! - A `lock_timeout` set with [`Sql::SetLockTimeout`] fires on the server by itself; the
//!   55P03 then shows up as a ready outcome at the next settle, not when the explorer calls
//!   [`Sessions::cancel_wait`]. `cancel_wait` itself always yields 57014 on the server.
//! - Rows come back ordered by their first column (see [`crate::sql`]).
//! - Blocked detection counts only waits on the other sessions; a statement waiting on anything
//!   else (another client of the database) counts as running until `statement_timeout`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{select_all, try_join_all};
use racelab_harness::op::{Applied, ConnId, ErrorCode, Outcome, Row, Sql, TableId};
use racelab_harness::sim::Schema;
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, SimpleQueryMessage, Statement};

use crate::cluster::{connect, runtime, Cluster};
use crate::error::PgError;
use crate::sql::{self, Types};

mod connect;
mod settle;

pub(crate) use connect::bounded;
use connect::{open_conns, terminate_and_wait};
use settle::{run, settle};

/// A hard limit on every statement of every session.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the controller waits for a running statement before asking the server again.
const POLL: Duration = Duration::from_millis(1);
/// When the sessions report their deadlock checks, how long a statement may run before the
/// controller asks the server about it: a statement that waits says so itself after about
/// 1 ms, so until then it is either running or done.
const QUIET_RUN: Duration = Duration::from_millis(20);
/// Bound on the rig's own queries and waits.
pub(crate) const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a cycle in the wait-for graph may last before the controller gives up waiting for
/// PostgreSQL's deadlock detector and reports the statements blocked.
const CYCLE_LIMIT: Duration = Duration::from_secs(5);
/// `deadlock_timeout` of the sessions when the role may set it.
const FAST_DEADLOCK_MS: u64 = 1;
/// `deadlock_timeout` of the statements that must not break a cycle whose victim is pinned to
/// another member (see [`Pin`]): far beyond [`CYCLE_LIMIT`].
const HOLD_DEADLOCK_MS: u64 = 60_000;

type QueryResult = Result<Vec<SimpleQueryMessage>, tokio_postgres::Error>;

struct Running {
    stmt: Sql,
    /// Which statement of the run it is (see [`Sessions::reset`]): 0 for the first one sent.
    ordinal: u32,
    task: JoinHandle<QueryResult>,
    /// The task's output, once something has awaited it.
    done: Option<Result<QueryResult, tokio::task::JoinError>>,
    /// When the statement was first seen blocked, and by whom (server pids).
    blocked: Option<(Instant, Vec<i32>)>,
    /// The session's count of deadlock checks when the current wait was first seen: a
    /// later check is this wait's.
    checks_before: u64,
}

struct Conn {
    client: Arc<Client>,
    pid: i32,
    /// How many deadlock checks of this session's waits have run (their `log_lock_waits`
    /// messages), when the server reports them (see [`Sessions::open`]).
    checks: Arc<AtomicU64>,
    running: Option<Running>,
    /// The outcome of an earlier-blocked statement, until the caller takes it.
    ready: Option<Outcome>,
    /// Inside a transaction block (a `BEGIN` completed, no `COMMIT` or `ROLLBACK` since):
    /// its writes change no committed row until it ends.
    in_transaction: bool,
}

/// `n` sessions on a scratch database, plus a control connection.
pub struct Sessions {
    rt: Runtime,
    config: Config,
    target: String,
    schema: Schema,
    types: Types,
    control: Client,
    status: Statement,
    conns: Vec<Conn>,
    /// How long a statement must have been blocked before it is reported blocked.
    grace: Duration,
    /// Woken whenever a session reports a deadlock check (see `connect_counting_checks` in
    /// `session/connect.rs`); `None` when the sessions cannot report them.
    checked: Option<Arc<Notify>>,
    /// Committed rows read since the last action that could have changed them.
    committed: Vec<(TableId, Vec<Row>)>,
    /// Statements sent since the last reset, and when.
    sent: Vec<Instant>,
    /// Deadlocks PostgreSQL broke whose victim the caller has not collected yet.
    deadlocks: Vec<Deadlock>,
    /// Victims to make PostgreSQL pick in this run (see [`Sessions::pin_victims`]).
    pins: Vec<Pin>,
}

/// A wait-for cycle PostgreSQL broke: the sessions on it (from the error's detail, "Process …
/// waits for …; blocked by process …"), with the statement each was running, and the one
/// PostgreSQL failed with 40P01. Until [`Sessions::pick_victim`] every member counts as ready,
/// as the simulator's deadlocked sessions do.
#[derive(Clone, Debug)]
struct Deadlock {
    members: Vec<(ConnId, u32)>,
    victim: ConnId,
    /// When the controller saw it.
    seen: Instant,
}

/// How to make PostgreSQL fail the statement `victim` (a run's statement ordinal) in a deadlock
/// with the statements `others`: PostgreSQL aborts the member whose deadlock check runs first
/// once the cycle exists, and each waiter checks once, `deadlock_timeout` after it began
/// waiting. So in a re-run of the same schedule the victim's statement is sent with
/// `deadlock_timeout` = `delay` (longer than the cycle takes to close) and the others' with one
/// that never fires first. `delay` is a guess from the first run's timing; a pin whose victim
/// checked too early shows up as the wrong victim again, and the caller retries with a longer
/// one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub victim: u32,
    pub others: Vec<u32>,
    pub delay: Duration,
}

/// Back to the session's initial state between schedules (see [`Sessions::reset`]).
const RECYCLE_SQL: &str = "ROLLBACK; RESET ALL; SELECT pg_catalog.pg_advisory_unlock_all()";

const STATUS_SQL: &str = "SELECT p, pg_catalog.pg_isolation_test_session_is_blocked(p, $2), \
                          pg_catalog.pg_blocking_pids(p) FROM unnest($1::int4[]) AS p";

impl Sessions {
    /// Create the schema (dropping tables of the same names first) and open `n_conns`
    /// sessions. Columns are `bigint` except the `(table, column)` pairs in `text_columns`.
    pub fn open(
        cluster: &Cluster,
        schema: &Schema,
        text_columns: &[(&str, &str)],
        n_conns: usize,
    ) -> Result<Sessions, PgError> {
        assert!(n_conns < usize::from(ConnId::MAX), "too many sessions");
        let types = Types::new(schema, text_columns)?;
        let rt = runtime()?;
        let target = cluster.target().to_string();
        let mut config = cluster.config();
        let options = format!(
            "-c statement_timeout={}ms -c lock_timeout=0 -c idle_in_transaction_session_timeout=0",
            STATEMENT_TIMEOUT.as_millis()
        );
        config.options(format!("{options} -c client_min_messages=error"));
        let (control, status, deadlock_ms, superuser) = rt.block_on(async {
            let mut control_config = config.clone();
            control_config.application_name("racelab-control");
            let control = connect(&control_config, &target).await?;
            let superuser = bounded(
                "asking whether the role is a superuser",
                control.query_one("SELECT pg_catalog.current_setting('is_superuser') = 'on'", &[]),
            )
            .await?
            .get::<_, bool>(0);
            let status = bounded("preparing the status query", control.prepare(STATUS_SQL)).await?;
            let row = bounded(
                "reading deadlock_timeout",
                control
                    .query_one("SELECT setting::int8 FROM pg_catalog.pg_settings WHERE name = 'deadlock_timeout'", &[]),
            )
            .await?;
            let mut ddl = sql::drop_sql(schema);
            ddl.extend(sql::schema_sql(schema, text_columns));
            bounded("creating the schema", control.batch_execute(&ddl.join(";\n"))).await?;
            Ok::<_, PgError>((control, status, row.get::<_, i64>(0), superuser))
        })?;
        // A superuser may have each session's deadlock check run after 1 ms and report that it
        // ran (log_lock_waits, sent to the client): a wait is then known to be checked as soon
        // as its message arrives. Otherwise, the server's own deadlock_timeout plus a margin.
        let deadlock_ms = if superuser {
            config.options(format!(
                "{options} -c client_min_messages=log -c log_lock_waits=on -c deadlock_timeout={FAST_DEADLOCK_MS}ms"
            ));
            FAST_DEADLOCK_MS as i64
        } else {
            deadlock_ms
        };
        let deadlock = Duration::from_millis(deadlock_ms.max(1) as u64);
        let mut s = Sessions {
            rt,
            config,
            target,
            schema: schema.clone(),
            types,
            control,
            status,
            conns: Vec::new(),
            grace: deadlock + (deadlock / 2).max(Duration::from_millis(20)),
            checked: superuser.then(|| Arc::new(Notify::new())),
            committed: Vec::new(),
            sent: Vec::new(),
            deadlocks: Vec::new(),
            pins: Vec::new(),
        };
        s.conns = s.rt.block_on(open_conns(&s.config, &s.target, 0..n_conns, &s.checked))?;
        Ok(s)
    }

    /// Back to a clean start between schedules: end every session (whatever it was doing),
    /// empty the tables, insert `seed_rows` as committed rows, and open fresh sessions. No
    /// transaction, session setting or advisory lock survives.
    pub fn reset(&mut self, seed_rows: &[(&str, Row)]) -> Result<(), PgError> {
        let n = self.conns.len();
        self.committed.clear();
        self.sent.clear();
        self.deadlocks.clear();
        self.pins.clear();
        let mut batch = String::new();
        let tables: Vec<&str> = self.schema.tables.iter().map(|t| t.name).collect();
        if !tables.is_empty() {
            // DELETE, not TRUNCATE: no new files, and no cache invalidation that every session
            // would pay for at its next statement. The dead rows it leaves are pruned as pages
            // are read again, so the tables stay small.
            for t in &tables {
                batch.push_str(&format!("DELETE FROM {t};\n"));
            }
        }
        for (table, row) in seed_rows {
            let values: Vec<String> = row.iter().map(|&v| sql::literal(v)).collect();
            batch.push_str(&format!("INSERT INTO {table} VALUES ({});\n", values.join(", ")));
        }
        // Sessions with nothing in flight are recycled in one round trip each: ROLLBACK ends
        // any transaction (and its locks), RESET ALL restores the settings the session
        // started with, and pg_advisory_unlock_all releases session-level advisory locks: what
        // DISCARD ALL would do for the statements models run (DISCARD ALL itself cannot share
        // a query string). The tables are emptied and seeded at the same time on the control
        // connection: a DELETE of a row that a session's transaction holds waits for its
        // ROLLBACK. A session that still runs something, or whose recycling fails, is ended
        // and replaced.
        let idle = self.conns.iter().all(|c| c.running.is_none());
        let clients: Vec<Arc<Client>> = self.conns.iter().map(|c| c.client.clone()).collect();
        let control = &self.control;
        let recycled = idle
            && self
                .rt
                .block_on(async {
                    let sessions = try_join_all(
                        clients.iter().map(|client| bounded("recycling a session", client.simple_query(RECYCLE_SQL))),
                    );
                    let seed = bounded("emptying and seeding the tables", control.batch_execute(&batch));
                    futures_util::future::try_join(sessions, seed).await
                })
                .is_ok();
        if recycled {
            for c in &mut self.conns {
                c.ready = None;
                c.in_transaction = false;
            }
            return Ok(());
        }
        self.end_all()?;
        let (control, config, target, checked) = (&self.control, &self.config, &self.target, &self.checked);
        self.conns = self.rt.block_on(async {
            bounded("emptying and seeding the tables", control.batch_execute(&batch)).await?;
            open_conns(config, target, 0..n, checked).await
        })?;
        Ok(())
    }

    /// Send `stmt` on session `conn` and settle. `Done` if it completed, `Blocked` if it waits
    /// for another session; its outcome then arrives through [`Sessions::take_ready`].
    pub fn execute(&mut self, conn: ConnId, stmt: &Sql) -> Result<Applied, PgError> {
        let c = self.index(conn);
        assert!(self.conns[c].running.is_none(), "session {conn} runs a statement while one waits");
        assert!(self.conns[c].ready.is_none(), "session {conn} runs a statement before collecting the last");
        let text = sql::render(stmt, &self.schema);
        let client = self.conns[c].client.clone();
        let ordinal = self.sent.len() as u32;
        if !self.pins.is_empty() {
            // Only in a run that pins a victim: every statement gets the deadlock_timeout its
            // part in the pinned cycles needs (a SET in a block that later aborts is undone, so
            // it is set before every statement, not once).
            let ms = self.deadlock_ms_for(ordinal);
            let set = format!("SET deadlock_timeout = '{ms}ms'");
            // In a failed block the SET fails too, and so will the statement: nothing waits. A
            // lost connection shows in the statement's outcome.
            let r = self.rt.block_on(bounded("setting deadlock_timeout", client.simple_query(&set)));
            if let Err(e @ PgError::Timeout { .. }) = r {
                return Err(e);
            }
        }
        let task = self.rt.spawn(async move { run(&client, &text).await });
        let checks_before = self.conns[c].checks.load(Ordering::SeqCst);
        self.sent.push(Instant::now());
        self.conns[c].running =
            Some(Running { stmt: stmt.clone(), ordinal, task, done: None, blocked: None, checks_before });
        self.settle()?;
        if self.in_deadlock(conn) {
            return Ok(Applied::Blocked);
        }
        Ok(match self.conns[c].ready.take() {
            Some(outcome) => Applied::Done(outcome),
            None => Applied::Blocked,
        })
    }

    /// Has an earlier-blocked statement on `conn` completed, or is it on a cycle PostgreSQL
    /// broke (see [`Sessions::deadlocked`])?
    pub fn is_ready(&self, conn: ConnId) -> bool {
        self.conns[self.index(conn)].ready.is_some() || self.in_deadlock(conn)
    }

    /// The outcome of an earlier-blocked statement on `conn` that has completed. Not for a
    /// member of a deadlock: see [`Sessions::pick_victim`].
    pub fn take_ready(&mut self, conn: ConnId) -> Option<Outcome> {
        let c = self.index(conn);
        assert!(!self.in_deadlock(conn), "session {conn} is in a deadlock: pick its victim");
        self.conns[c].ready.take()
    }

    /// Sessions on a wait-for cycle that PostgreSQL broke (by failing one of them with 40P01)
    /// since the caller last picked a victim: each counts as ready, as on the simulator, where
    /// the explorer picks which one's deadlock check runs first.
    pub fn deadlocked(&self) -> Vec<ConnId> {
        let mut conns: Vec<ConnId> = self.deadlocks.iter().flat_map(|d| d.members.iter().map(|m| m.0)).collect();
        conns.sort_unstable();
        conns.dedup();
        conns
    }

    fn in_deadlock(&self, conn: ConnId) -> bool {
        self.deadlocks.iter().any(|d| d.members.iter().any(|m| m.0 == conn))
    }

    /// `conn`, a member of a deadlock, is its victim: its 40P01 if PostgreSQL failed its
    /// statement; otherwise (PostgreSQL picked another) the pin that makes it pick `conn` when
    /// the run is repeated. The other members then show their real state: still waiting, or
    /// granted once the victim's transaction ended.
    pub fn pick_victim(&mut self, conn: ConnId) -> Result<Outcome, Pin> {
        let c = self.index(conn);
        let Some(k) = self.deadlocks.iter().position(|d| d.members.iter().any(|m| m.0 == conn)) else {
            // No cycle was broken here: a pinned victim checked before its cycle closed.
            let victim = self.conns[c].running.as_ref().map_or(0, |r| r.ordinal);
            return Err(Pin { victim, others: Vec::new(), delay: Duration::ZERO });
        };
        let d = &self.deadlocks[k];
        if d.victim == conn {
            self.deadlocks.remove(k);
            return Ok(self.conns[c].ready.take().expect("a deadlock's victim has its outcome"));
        }
        let victim = d.members.iter().find(|m| m.0 == conn).expect("a member").1;
        let others = d.members.iter().filter(|m| m.0 != conn).map(|m| m.1).collect();
        let gap = d.seen.saturating_duration_since(self.sent[victim as usize]);
        Err(Pin { victim, others, delay: gap * 2 + Duration::from_millis(100) })
    }

    /// Make PostgreSQL pick these victims in this run (set right after [`Sessions::reset`],
    /// before the run's statements are sent again in the same order). `Err` without the right to
    /// set `deadlock_timeout` (a superuser setting).
    pub fn pin_victims(&mut self, pins: Vec<Pin>) -> Result<(), PgError> {
        if self.checked.is_none() && !pins.is_empty() {
            return Err(PgError::Sql {
                what: "pinning a deadlock's victim".into(),
                message: "only a superuser may set deadlock_timeout, which decides PostgreSQL's victim".into(),
            });
        }
        assert!(self.sent.is_empty(), "victims are pinned before the run's first statement");
        self.pins = pins;
        Ok(())
    }

    fn deadlock_ms_for(&self, ordinal: u32) -> u64 {
        for pin in &self.pins {
            if pin.victim == ordinal {
                return (pin.delay.as_millis() as u64).clamp(FAST_DEADLOCK_MS, HOLD_DEADLOCK_MS / 2);
            }
            if pin.others.contains(&ordinal) {
                return HOLD_DEADLOCK_MS;
            }
        }
        FAST_DEADLOCK_MS
    }

    /// Is a statement on `conn` still waiting?
    pub fn is_blocked(&self, conn: ConnId) -> bool {
        self.conns[self.index(conn)].running.is_some()
    }

    /// Cancel the waiting statement on `conn` (`pg_cancel_backend`, as a `statement_timeout`
    /// would): it fails with 57014 (or 55P03 if its `lock_timeout` fired first), aborting its
    /// transaction. Returns that outcome.
    pub fn cancel_wait(&mut self, conn: ConnId) -> Result<Outcome, PgError> {
        let c = self.index(conn);
        self.deadlocks.retain(|d| d.members.iter().all(|m| m.0 != conn));
        assert!(self.conns[c].running.is_some(), "cancel_wait: session {conn} does not wait");
        let pid = self.conns[c].pid;
        self.committed.clear();
        let control = &self.control;
        let running = self.conns[c].running.as_mut().expect("checked");
        self.rt.block_on(async {
            bounded("pg_cancel_backend", control.execute("SELECT pg_catalog.pg_cancel_backend($1)", &[&pid])).await?;
            if running.done.is_none() {
                let out = tokio::time::timeout(CONTROL_TIMEOUT, &mut running.task)
                    .await
                    .map_err(|_| PgError::Timeout { what: format!("session {conn} to end its cancelled statement") })?;
                running.done = Some(out);
            }
            Ok(())
        })?;
        self.settle()?;
        Ok(self.conns[c].ready.take().unwrap_or(Outcome::Err(ErrorCode::QUERY_CANCELED)))
    }

    /// Do not run `stmt`; fail as an I/O error would (SQLSTATE 58030), which aborts an open
    /// transaction. A failed `COMMIT`/`ROLLBACK` leaves the session outside any transaction.
    pub fn inject_error(&mut self, conn: ConnId, stmt: &Sql) -> Result<Outcome, PgError> {
        let c = self.index(conn);
        assert!(self.conns[c].running.is_none() && self.conns[c].ready.is_none());
        let client = self.conns[c].client.clone();
        let end = matches!(stmt, Sql::Commit | Sql::Rollback);
        self.committed.clear();
        self.rt.block_on(async {
            let r = tokio::time::timeout(CONTROL_TIMEOUT, run(&client, sql::INJECTED_FAULT)).await;
            // Any error (58030, or 25P02 in a failed transaction) is expected; anything else
            // means the connection is gone, and the next statement will tell.
            if r.is_err() {
                return Err(PgError::Timeout { what: format!("injecting a fault on session {conn}") });
            }
            if end {
                let _ = tokio::time::timeout(CONTROL_TIMEOUT, client.simple_query("ROLLBACK")).await;
            }
            Ok(())
        })?;
        if end {
            self.conns[c].in_transaction = false;
        }
        self.settle()?;
        Ok(Outcome::Err(ErrorCode::IO_ERROR))
    }

    /// The client of `conn` dies: the server ends its session as it ends a dead client's: a
    /// statement it runs is cancelled, its transaction rolled back, its session-level locks
    /// and settings dropped. The connection itself is reused for the `ConnId`'s next client
    /// (one round trip instead of a reconnection); if that fails, the backend is terminated and
    /// a fresh session opened.
    pub fn disconnect(&mut self, conn: ConnId) -> Result<(), PgError> {
        let c = self.index(conn);
        self.deadlocks.retain(|d| d.members.iter().all(|m| m.0 != conn));
        let old = self.conns[c].pid;
        self.conns[c].ready = None;
        self.conns[c].in_transaction = false;
        self.committed.clear();
        let running = self.conns[c].running.take();
        let client = self.conns[c].client.clone();
        let control = &self.control;
        let recycled = self.rt.block_on(async {
            if let Some(mut r) = running {
                bounded("pg_cancel_backend", control.execute("SELECT pg_catalog.pg_cancel_backend($1)", &[&old]))
                    .await?;
                if r.done.is_none() {
                    // Whatever it returned, the session is recycled next.
                    let _ = tokio::time::timeout(CONTROL_TIMEOUT, &mut r.task)
                        .await
                        .map_err(|_| PgError::Timeout {
                            what: format!("session {conn} to end its cancelled statement"),
                        })?
                        .map_err(|e| PgError::Sql { what: "a statement task".into(), message: e.to_string() })?;
                }
            }
            // A cancel that arrived after its statement ended may hit this instead: once more.
            for _ in 0..2 {
                if bounded("recycling a session", client.simple_query(RECYCLE_SQL)).await.is_ok() {
                    return Ok(true);
                }
            }
            Ok::<_, PgError>(false)
        })?;
        if !recycled {
            let (control, config, target, checked) = (&self.control, &self.config, &self.target, &self.checked);
            let fresh = self.rt.block_on(async {
                terminate_and_wait(control, &[old], false).await?;
                open_conns(config, target, c..c + 1, checked).await
            })?;
            self.conns[c] = fresh.into_iter().next().expect("one connection");
        }
        self.settle()
    }

    /// The rows of `table` as a new snapshot sees them, ordered by the first column.
    /// Properties read them after every step; they are read from the server again only after
    /// a statement that may have changed them completed.
    pub fn committed_rows(&mut self, table: TableId) -> Result<Vec<Row>, PgError> {
        if let Some((_, rows)) = self.committed.iter().find(|(t, _)| *t == table) {
            return Ok(rows.clone());
        }
        let rows = self.read_committed_rows(table)?;
        self.committed.push((table, rows.clone()));
        Ok(rows)
    }

    fn read_committed_rows(&mut self, table: TableId) -> Result<Vec<Row>, PgError> {
        let text = format!("SELECT * FROM {table} ORDER BY 1");
        let control = &self.control;
        let msgs = self.rt.block_on(bounded("reading committed rows", control.simple_query(&text)))?;
        let stmt = Sql::Select { table, filter: vec![], lock: None };
        match sql::decode(&stmt, &msgs, &self.types)? {
            Outcome::Rows(rows) => Ok(rows),
            other => Err(PgError::Decode(format!("expected rows, got {other:?}"))),
        }
    }

    /// Server process ids of the sessions, in `ConnId` order.
    pub fn pids(&self) -> Vec<i32> {
        self.conns.iter().map(|c| c.pid).collect()
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// A query on the control connection (diagnostics and tests): the first column of each
    /// row, as text.
    pub fn control_query(&mut self, sql: &str) -> Result<Vec<Option<String>>, PgError> {
        let control = &self.control;
        let msgs = self.rt.block_on(bounded("control query", control.simple_query(sql)))?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
                _ => None,
            })
            .collect())
    }

    /// Send `sql` as it is on session `conn` and wait for it (a bare round trip, for
    /// measurements and tests; it must not block).
    pub fn raw_round_trip(&mut self, conn: ConnId, sql: &str) -> Result<(), PgError> {
        let c = self.index(conn);
        assert!(self.conns[c].running.is_none());
        let client = self.conns[c].client.clone();
        self.rt.block_on(bounded("raw query", client.simple_query(sql))).map(|_| ())
    }

    fn index(&self, conn: ConnId) -> usize {
        let c = usize::from(conn);
        assert!(c < self.conns.len(), "no session {conn}");
        c
    }

    /// End every session: abort what runs, close the connections, terminate the backends and
    /// wait until the server has let them go.
    fn end_all(&mut self) -> Result<(), PgError> {
        let pids = self.pids();
        for c in self.conns.drain(..) {
            if let Some(r) = c.running {
                r.task.abort();
            }
        }
        let control = &self.control;
        self.rt.block_on(terminate_and_wait(control, &pids, true))
    }

    /// Wait until every statement in flight has completed or is blocked (see the module doc).
    fn settle(&mut self) -> Result<(), PgError> {
        let Sessions { rt, control, status, conns, grace, types, checked, committed, .. } = self;
        let (changed, broken) = rt.block_on(settle(control, status, conns, *grace, types, checked.as_deref()))?;
        if changed {
            committed.clear();
        }
        let seen = Instant::now();
        for b in broken {
            let mut members: Vec<(ConnId, u32)> = b
                .members
                .iter()
                .filter_map(|pid| {
                    let c = self.conns.iter().position(|x| x.pid == *pid)?;
                    let ordinal = b.running.iter().find(|r| r.0 == c)?.1;
                    Some((c as ConnId, ordinal))
                })
                .collect();
            let victim = b.victim as ConnId;
            if !members.iter().any(|m| m.0 == victim) {
                members.push((victim, b.victim_ordinal));
            }
            members.sort_unstable();
            members.dedup();
            self.deadlocks.push(Deadlock { members, victim, seen });
        }
        Ok(())
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        let _ = self.end_all();
    }
}
