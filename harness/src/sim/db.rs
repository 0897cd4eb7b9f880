//! A PostgreSQL-like database at READ COMMITTED and REPEATABLE READ, as a deterministic state
//! machine.
//!
//! It models what PostgreSQL 15 does for the statements in [`Sql`]: per-statement snapshots
//! (per-transaction ones under REPEATABLE READ, where a write to a row changed since fails with
//! 40001),
//! row versions with update chains, READ COMMITTED re-checks of the newest row version
//! (EvalPlanQual), unique indexes (optionally partial) that wait for in-progress inserters,
//! `ON CONFLICT`, `FOR UPDATE` with `NOWAIT` / `SKIP LOCKED`, advisory locks with a FIFO wait
//! queue, and deadlock detection.
//!
//! Design choices that keep the state small and canonical (explorers clone and hash it):
//! - A transaction is identified by its session: a session runs at most one at a time, so an
//!   in-progress version is stamped `Active { conn }` and rewritten to `Committed(seq)` at commit.
//!   Aborted versions are dropped physically and their deletions undone, so a rolled-back
//!   transaction leaves no trace.
//! - A statement that must wait keeps the versions it has written so far (stamped `current`)
//!   and is re-run from the start when its blocker goes away. Versions written by the running
//!   statement are invisible to it, as PostgreSQL's command ids make them, so the re-run skips
//!   the rows it has already handled.
//! - After every transition `Db::settle` drops versions that no snapshot can see and renumbers
//!   commit sequence numbers by rank, so equivalent states compare equal.
//!
//! Waiting and deadlocks: a blocked statement waits for one session (the transaction that holds
//! the row or key, or the advisory lock's holder). A statement that closes a cycle in the
//! wait-for graph waits like any other. PostgreSQL checks each waiter for a deadlock once,
//! `deadlock_timeout` after it began waiting, and aborts with 40P01 whichever member of the cycle
//! checks first once the cycle exists: the one that closed it if the others' checks ran before,
//! but any earlier waiter whose check was still due. The simulator has no time, so the victim is
//! an explored choice, as wake order is: every session on a cycle is ready with a pending
//! deadlock check ([`Db::deadlocked`]), and the one the explorer steps first fails with 40P01
//! (its transaction aborts, releasing its locks); the others wait on. Nothing else moves until
//! one has: on the server nothing else happens to the sessions of a cycle while it stands.
//! Only waits PostgreSQL sees are in this graph (a client waiting on its own second connection
//! is not: the harness finds that deadlock).
//!
//! Wake order: when a transaction ends and two or more statements were waiting for it, PostgreSQL
//! wakes them all and the operating system decides which reaches its row or key first. Such
//! waiters are only marked woken; each is ready, and the one the explorer steps first re-runs
//! first (the rest follow in the order they started waiting, within the same step). Nothing else
//! moves until one of them has: on the server the race is over before the next client action.
//! Waiters for an advisory lock are granted in order, as PostgreSQL's lock manager does.
//!
//! Known simplifications: rows come back in logical insertion order (PostgreSQL's sequential
//! scan order moves updated rows); waiters queued on one row's tuple lock, which PostgreSQL
//! serves in order, race here like any other transaction waiters (more orders than the server
//! shows, never fewer); all locks are exclusive.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::op::{
    Applied, Col, ConnId, ErrorCode, Expr, Filter, Footprint, LockScope, OnConflict, Outcome, Resource, Row, RowLock,
    Sql, TableId, Value,
};

/// A unique index, optionally partial (`WHERE col = value`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UniqueIndex {
    pub name: &'static str,
    pub columns: Vec<Col>,
    pub predicate: Option<(Col, Value)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableDef {
    pub name: TableId,
    pub columns: Vec<Col>,
    pub unique: Vec<UniqueIndex>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Schema {
    pub tables: Vec<TableDef>,
}

/// A commit sequence number. A snapshot is the sequence number of the last commit it sees.
type Seq = u32;

/// The session id used for readers outside any session (`committed_rows`, seeding).
const NOBODY: ConnId = ConnId::MAX;

/// Who wrote (or deleted) a row version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Xid {
    Committed(Seq),
    /// The open transaction of session `conn`. `current` while the statement that wrote it has
    /// not finished: such writes are invisible to that statement (PostgreSQL's command id).
    Active {
        conn: ConnId,
        current: bool,
    },
}

impl Xid {
    fn is_active(self, c: ConnId) -> bool {
        matches!(self, Xid::Active { conn, .. } if conn == c)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Version {
    values: Row,
    xmin: Xid,
    /// The deleter or updater; an updated version has a successor in its chain.
    xmax: Option<Xid>,
}

/// One logical row: its versions, oldest first (the update chain), and its `FOR UPDATE` lock.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct LogicalRow {
    versions: Vec<Version>,
    locker: Option<ConnId>,
}

impl LogicalRow {
    fn newest(&self) -> &Version {
        self.versions.last().expect("a logical row has at least one version")
    }
}

/// What a blocked statement waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Wait {
    /// The end of session `conn`'s transaction (row lock, update, or uncommitted unique key).
    Tx(ConnId),
    Advisory(i64),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Pending {
    stmt: Sql,
    /// The statement's snapshot, kept across waits (only statements that read by snapshot).
    snapshot: Option<Seq>,
    wait: Wait,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
enum Block {
    /// No transaction block: each statement runs in its own implicit transaction.
    #[default]
    Idle,
    /// Inside `BEGIN`.
    Open,
    /// Inside a block whose transaction an error aborted; only `COMMIT`/`ROLLBACK` work.
    Failed,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Session {
    block: Block,
    /// The open block is REPEATABLE READ.
    repeatable_read: bool,
    /// Its snapshot, once the block's first statement took it.
    tx_snapshot: Option<Seq>,
    lock_timeout: u32,
    /// `SET` inside a block is undone if the block aborts: the value before the first `SET`.
    lock_timeout_before: Option<u32>,
    pending: Option<Pending>,
    /// Its pending statement's blocker is gone, together with another's: it re-runs when the
    /// explorer steps it (see the module's "Wake order").
    woken: bool,
    /// The outcome of a granted wait, until the client collects it.
    ready: Option<Outcome>,
}

/// An exclusive advisory lock: one holder session, with stacked session and transaction holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Hold {
    conn: ConnId,
    session: u32,
    xact: u32,
}

/// A unique index with columns resolved to positions.
#[derive(Debug, PartialEq, Eq)]
struct Index {
    cols: Vec<usize>,
    predicate: Option<(usize, Value)>,
}

impl Index {
    /// Does the index hold an entry for these values? NULL keys never conflict.
    fn covers(&self, values: &Row) -> bool {
        self.predicate.iter().all(|&(c, v)| values[c] == v) && self.cols.iter().all(|&c| values[c] != Value::Null)
    }
    fn same_key(&self, a: &Row, b: &Row) -> bool {
        self.cols.iter().all(|&c| a[c] == b[c])
    }
}

/// The schema with names resolved. Shared between clones; not hashed (it never changes).
#[derive(Debug, PartialEq, Eq)]
struct Catalog {
    schema: Schema,
    indexes: Vec<Vec<Index>>,
}

#[derive(Clone, Debug)]
struct SharedCatalog(Arc<Catalog>);

impl PartialEq for SharedCatalog {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}
impl Eq for SharedCatalog {}
impl std::hash::Hash for SharedCatalog {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Db {
    catalog: SharedCatalog,
    /// Parallel to `schema.tables`.
    tables: Vec<Vec<LogicalRow>>,
    sessions: Vec<Session>,
    advisory: BTreeMap<i64, Hold>,
    /// Waiting sessions, in the order they started waiting.
    wait_queue: Vec<ConnId>,
    /// The last commit sequence number.
    seq: Seq,
}

/// Why a statement stopped before completing.
enum Stop {
    Wait(Wait),
    Fail(ErrorCode),
}

type Step = Result<Outcome, Stop>;

/// What to do with a row that another transaction holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Policy {
    Wait,
    Nowait,
    Skip,
}

/// A unique-key clash found by [`Db::find_conflict`].
enum Conflict {
    /// Another in-progress transaction inserted or deletes the key: its outcome decides.
    Wait(ConnId),
    /// A live version (committed, or our own) holds the key, in this logical row.
    Live(usize),
}

fn visible(v: &Version, snapshot: Seq, me: ConnId) -> bool {
    let inserted = match v.xmin {
        Xid::Committed(s) => s <= snapshot,
        Xid::Active { conn, current } => conn == me && !current,
    };
    let deleted = match v.xmax {
        None => false,
        Some(Xid::Committed(s)) => s <= snapshot,
        Some(Xid::Active { conn, current }) => conn == me && !current,
    };
    inserted && !deleted
}

/// SQL equality: `col = NULL` is never true.
fn matches(filter: &[(usize, Value)], values: &Row) -> bool {
    filter.iter().all(|&(c, v)| v != Value::Null && values[c] == v)
}

impl Db {
    pub fn new(schema: Schema) -> Db {
        let mut indexes = Vec::new();
        for (i, t) in schema.tables.iter().enumerate() {
            assert!(schema.tables[..i].iter().all(|u| u.name != t.name), "table {} defined twice", t.name);
            let col =
                |c: Col| t.columns.iter().position(|&x| x == c).unwrap_or_else(|| panic!("no column {}.{c}", t.name));
            indexes.push(
                t.unique
                    .iter()
                    .map(|u| {
                        assert!(!u.columns.is_empty(), "index {} has no columns", u.name);
                        assert!(
                            u.predicate.iter().all(|&(_, v)| v != Value::Null),
                            "index {}: WHERE col = NULL",
                            u.name
                        );
                        Index {
                            cols: u.columns.iter().map(|&c| col(c)).collect(),
                            predicate: u.predicate.map(|(c, v)| (col(c), v)),
                        }
                    })
                    .collect(),
            );
        }
        let tables = vec![Vec::new(); schema.tables.len()];
        Db {
            catalog: SharedCatalog(Arc::new(Catalog { schema, indexes })),
            tables,
            sessions: Vec::new(),
            advisory: BTreeMap::new(),
            wait_queue: Vec::new(),
            seq: 0,
        }
    }

    pub fn schema(&self) -> &Schema {
        &self.catalog.0.schema
    }

    /// Open a new session; returns its connection id (0, 1, 2, … in order).
    pub fn open_session(&mut self) -> ConnId {
        assert!(self.sessions.len() < usize::from(NOBODY), "too many sessions");
        self.sessions.push(Session::default());
        (self.sessions.len() - 1) as ConnId
    }

    /// Insert a row as if by an earlier, committed transaction (initial data).
    pub fn seed_row(&mut self, table: TableId, row: Row) {
        assert!(self.wait_queue.is_empty() && self.sessions.iter().all(|s| s.block == Block::Idle), "seed before use");
        let t = self.table(table);
        assert_eq!(row.len(), self.schema().tables[t].columns.len(), "seed row for {table} has the wrong width");
        for idx in 0..self.catalog.0.indexes[t].len() {
            assert!(
                self.find_conflict(t, idx, &row, None, NOBODY).is_none(),
                "seed row {row:?} violates a unique index"
            );
        }
        let version = Version { values: row, xmin: Xid::Committed(self.seq), xmax: None };
        self.tables[t].push(LogicalRow { versions: vec![version], locker: None });
        self.settle(&mut Footprint::default());
    }

    /// Run a statement. It completes, or blocks (then [`Db::take_ready`] later yields its outcome).
    pub fn execute(&mut self, conn: ConnId, stmt: &Sql, fp: &mut Footprint) -> Applied {
        let c = self.session_index(conn);
        assert!(self.sessions[c].pending.is_none(), "session {conn} runs a statement while one waits");
        assert!(self.sessions[c].ready.is_none(), "session {conn} runs a statement before collecting the last");
        let block = self.sessions[c].block;
        let done = |o: Outcome| Applied::Done(o);
        let applied = match (block, stmt) {
            (Block::Failed, Sql::Commit | Sql::Rollback) => {
                self.sessions[c].block = Block::Idle;
                done(Outcome::Ok)
            }
            (Block::Failed, _) => done(Outcome::Err(ErrorCode::IN_FAILED_SQL_TRANSACTION)),
            // PostgreSQL only warns about these.
            (Block::Open, Sql::Begin | Sql::BeginRepeatableRead) | (Block::Idle, Sql::Commit | Sql::Rollback) => {
                done(Outcome::Ok)
            }
            (Block::Idle, Sql::Begin | Sql::BeginRepeatableRead) => {
                self.sessions[c].block = Block::Open;
                self.sessions[c].repeatable_read = matches!(stmt, Sql::BeginRepeatableRead);
                done(Outcome::Ok)
            }
            (Block::Open, Sql::Commit | Sql::Rollback) => {
                self.end_tx(conn, matches!(stmt, Sql::Commit), fp);
                self.sessions[c].block = Block::Idle;
                done(Outcome::Ok)
            }
            (_, Sql::SetLockTimeout(ms)) => {
                let s = &mut self.sessions[c];
                if s.block == Block::Open && s.lock_timeout_before.is_none() {
                    s.lock_timeout_before = Some(s.lock_timeout);
                }
                s.lock_timeout = *ms;
                done(Outcome::Ok)
            }
            _ => {
                let seq = self.seq;
                let s = &mut self.sessions[c];
                // PostgreSQL takes a REPEATABLE READ snapshot at the block's first statement,
                // whatever it is (a lock call too), not at BEGIN.
                let snapshot = if s.repeatable_read {
                    Some(*s.tx_snapshot.get_or_insert(seq))
                } else {
                    Self::reads_snapshot(stmt).then_some(seq)
                };
                match self.attempt(conn, stmt, snapshot, fp) {
                    Some(outcome) => done(outcome),
                    None => Applied::Blocked,
                }
            }
        };
        self.after(fp);
        applied
    }

    pub fn is_ready(&self, conn: ConnId) -> bool {
        let s = &self.sessions[self.session_index(conn)];
        s.ready.is_some() || s.woken || self.in_cycle(conn)
    }

    /// The outcome of a granted wait; a woken statement re-runs now, before the others woken with
    /// it, and a statement on a wait-for cycle is the deadlock's victim (see the module's
    /// "Waiting and deadlocks"). `None` when it has to wait again.
    pub fn take_ready(&mut self, conn: ConnId, fp: &mut Footprint) -> Option<Outcome> {
        let c = self.session_index(conn);
        if !self.sessions[c].woken {
            if self.sessions[c].ready.is_none() && self.in_cycle(conn) {
                return Some(self.fail_deadlocked(conn, fp));
            }
            return self.sessions[c].ready.take();
        }
        fp.global();
        let s = &mut self.sessions[c];
        s.woken = false;
        let p = s.pending.take().expect("a woken session waits");
        self.wait_queue.retain(|&w| w != conn);
        let outcome = self.attempt(conn, &p.stmt, p.snapshot, fp);
        self.after(fp);
        match outcome {
            Some(outcome) => Some(outcome),
            // It waits again; `after` may even have granted it already.
            None => self.sessions[c].ready.take(),
        }
    }

    /// Sessions whose statements were woken together and race for what they waited on.
    pub fn woken(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.sessions.iter().enumerate().filter(|(_, s)| s.woken).map(|(c, _)| c as ConnId)
    }

    /// Sessions whose waits form a cycle: each may be the one whose deadlock check runs first and
    /// fails with 40P01 (see the module's "Waiting and deadlocks"). Several disjoint cycles are
    /// possible (waiters re-run in one step may close one each); each needs its own victim.
    pub fn deadlocked(&self) -> impl Iterator<Item = ConnId> + '_ {
        (0..self.sessions.len() as ConnId).filter(|&c| self.in_cycle(c))
    }

    /// The deadlock check of `conn`, a session on a wait-for cycle, finds the cycle: its statement
    /// fails with 40P01 and its transaction aborts, which may grant the others their waits.
    fn fail_deadlocked(&mut self, conn: ConnId, fp: &mut Footprint) -> Outcome {
        fp.global();
        let c = usize::from(conn);
        assert!(self.sessions[c].pending.take().is_some(), "a deadlocked session waits");
        self.wait_queue.retain(|&w| w != conn);
        self.abort(conn, fp);
        self.after(fp);
        Outcome::Err(ErrorCode::DEADLOCK_DETECTED)
    }

    /// A timeout fires on the waiting statement: `lock_timeout` (55P03) if set, else
    /// `statement_timeout` or a cancel (57014). The error aborts the transaction.
    pub fn cancel_wait(&mut self, conn: ConnId, fp: &mut Footprint) -> Outcome {
        fp.global();
        let c = self.session_index(conn);
        assert!(self.sessions[c].pending.take().is_some(), "cancel_wait: session {conn} does not wait");
        self.sessions[c].woken = false;
        self.wait_queue.retain(|&w| w != conn);
        let code =
            if self.sessions[c].lock_timeout > 0 { ErrorCode::LOCK_NOT_AVAILABLE } else { ErrorCode::QUERY_CANCELED };
        self.abort(conn, fp);
        self.after(fp);
        Outcome::Err(code)
    }

    /// The statement fails without running (an I/O error), which aborts the transaction.
    pub fn inject_error(&mut self, conn: ConnId, stmt: &Sql, fp: &mut Footprint) -> Outcome {
        fp.global();
        let c = self.session_index(conn);
        assert!(self.sessions[c].pending.is_none() && self.sessions[c].ready.is_none());
        match (self.sessions[c].block, stmt) {
            (Block::Open, Sql::Commit | Sql::Rollback) => {
                self.end_tx(conn, false, fp);
                self.sessions[c].block = Block::Idle;
            }
            (Block::Failed, Sql::Commit | Sql::Rollback) => self.sessions[c].block = Block::Idle,
            (Block::Open, _) => self.abort(conn, fp),
            // An implicit transaction that never ran, or a block that already failed.
            (Block::Idle | Block::Failed, _) => {}
        }
        self.after(fp);
        Outcome::Err(ErrorCode::IO_ERROR)
    }

    /// The client died: its wait is cancelled, its transaction rolled back, its advisory locks
    /// released; the connection id comes back as a fresh session.
    pub fn disconnect(&mut self, conn: ConnId, fp: &mut Footprint) {
        fp.global();
        let c = self.session_index(conn);
        self.sessions[c].pending = None;
        self.sessions[c].woken = false;
        self.wait_queue.retain(|&w| w != conn);
        self.end_tx(conn, false, fp);
        self.advisory.retain(|_, h| h.conn != conn);
        self.sessions[c] = Session::default();
        self.after(fp);
    }

    /// The rows of `table` as a new snapshot sees them, in insertion order.
    pub fn committed_rows(&self, table: TableId) -> Vec<Row> {
        let t = self.table(table);
        self.tables[t]
            .iter()
            .filter_map(|r| r.versions.iter().find(|v| visible(v, self.seq, NOBODY)))
            .map(|v| v.values.clone())
            .collect()
    }

    /// Common tail of every public transition.
    fn after(&mut self, fp: &mut Footprint) {
        self.wake(fp);
        self.settle(fp);
        self.check_invariants();
    }

    /// Drop versions that no snapshot can see any more, and renumber commit sequence numbers
    /// by rank among the live snapshots: only "committed before snapshot S or not" matters.
    /// A session whose snapshot gets a new number holds something else now (`fp`).
    fn settle(&mut self, fp: &mut Footprint) {
        let mut snaps: Vec<Seq> = self
            .sessions
            .iter()
            .flat_map(|s| [s.pending.as_ref().and_then(|p| p.snapshot), s.tx_snapshot])
            .flatten()
            .collect();
        snaps.sort_unstable();
        snaps.dedup();
        let horizon = snaps.first().copied().unwrap_or(self.seq);
        let rank = |s: Seq| snaps.partition_point(|&x| x < s) as Seq;
        for rows in &mut self.tables {
            for row in rows.iter_mut() {
                let dead = row
                    .versions
                    .iter()
                    .take_while(|v| matches!(v.xmax, Some(Xid::Committed(s)) if s <= horizon))
                    .count();
                row.versions.drain(..dead);
                for v in &mut row.versions {
                    if let Xid::Committed(s) = v.xmin {
                        v.xmin = Xid::Committed(rank(s));
                    }
                    if let Some(Xid::Committed(s)) = v.xmax {
                        v.xmax = Some(Xid::Committed(rank(s)));
                    }
                }
            }
            rows.retain(|r| !r.versions.is_empty());
        }
        let mut renumbered = false;
        for s in &mut self.sessions {
            let pending = s.pending.as_mut().and_then(|p| p.snapshot.as_mut());
            for snap in pending.into_iter().chain(s.tx_snapshot.as_mut()) {
                renumbered |= *snap != rank(*snap);
                *snap = rank(*snap);
            }
        }
        if renumbered {
            fp.signatures_changed();
        }
        self.seq = snaps.len() as Seq;
    }

    fn check_invariants(&self) {
        for (c, s) in self.sessions.iter().enumerate() {
            let conn = c as ConnId;
            let queued = self.wait_queue.iter().filter(|&&w| w == conn).count();
            assert_eq!(queued, usize::from(s.pending.is_some()), "session {c} queued {queued} times");
            assert!(s.pending.is_none() || s.ready.is_none(), "session {c} both waits and is ready");
            assert!(!s.woken || s.pending.is_some(), "session {c} is woken but waits for nothing");
            assert!(self.tx_active(conn) || !self.has_effects(conn), "session {c} has effects outside a transaction");
            assert!(s.block == Block::Open || s.lock_timeout_before.is_none());
            assert!(s.block == Block::Open || (!s.repeatable_read && s.tx_snapshot.is_none()));
            assert!(s.repeatable_read || s.tx_snapshot.is_none());
            if let Some(p) = s.pending.as_ref().filter(|_| !s.woken) {
                assert!(self.blocker(p.wait, conn).is_some(), "session {c} waits for nothing");
                assert_ne!(self.blocker(p.wait, conn), Some(conn), "session {c} waits for itself");
            }
        }
        for row in self.tables.iter().flatten() {
            assert!(!row.versions.is_empty());
            for pair in row.versions.windows(2) {
                assert_eq!(pair[0].xmax, Some(pair[1].xmin), "broken update chain");
            }
            for x in row.versions.iter().flat_map(|v| [Some(v.xmin), v.xmax]).flatten() {
                if let Xid::Active { conn, current } = x {
                    assert!(self.tx_active(conn), "version of session {conn} outside a transaction");
                    assert!(!current || self.sessions[usize::from(conn)].pending.is_some(), "stale current write");
                }
            }
            if let Some(l) = row.locker {
                assert!(self.tx_active(l) && row.newest().xmax.iter().all(|x| x.is_active(l)), "bad row lock");
            }
        }
        for h in self.advisory.values() {
            assert!(h.session + h.xact > 0 && usize::from(h.conn) < self.sessions.len());
            assert!(h.xact == 0 || self.tx_active(h.conn), "transaction advisory lock outside a transaction");
        }
    }

    // ---- names ----

    fn session_index(&self, conn: ConnId) -> usize {
        assert!(usize::from(conn) < self.sessions.len(), "no session {conn}");
        usize::from(conn)
    }

    fn table(&self, name: TableId) -> usize {
        self.schema().tables.iter().position(|t| t.name == name).unwrap_or_else(|| panic!("no table {name}"))
    }

    fn name(&self, t: usize) -> TableId {
        self.schema().tables[t].name
    }

    fn col(&self, t: usize, col: Col) -> usize {
        let def = &self.schema().tables[t];
        def.columns.iter().position(|&c| c == col).unwrap_or_else(|| panic!("no column {}.{col}", def.name))
    }

    fn resolve_filter(&self, t: usize, filter: &Filter) -> Vec<(usize, Value)> {
        filter.iter().map(|&(c, v)| (self.col(t, c), v)).collect()
    }

    /// The row after `SET …`, from the newest version `old` (and `EXCLUDED` for upserts).
    fn apply_set(&self, t: usize, set: &[(Col, Expr)], old: &Row, excluded: Option<&Row>) -> Row {
        let mut new = old.clone();
        for &(col, expr) in set {
            new[self.col(t, col)] = match expr {
                Expr::Value(v) => v,
                Expr::Add(c, n) => match old[self.col(t, c)] {
                    Value::Null => Value::Null,
                    Value::Int(i) => Value::Int(i.checked_add(n).expect("integer overflow in SET")),
                    Value::Str(s) => panic!("SET {col} = {c} + {n} on text {s:?}"),
                },
                Expr::Excluded(c) => excluded.expect("EXCLUDED outside ON CONFLICT DO UPDATE")[self.col(t, c)],
            };
        }
        new
    }
}

mod rename;
mod statements;
mod transactions;

#[cfg(test)]
mod test_steps;

#[cfg(test)]
mod repeatable_read_tests;

#[cfg(test)]
mod wake_order_tests;

#[cfg(test)]
mod victim_tests;

#[cfg(test)]
mod tests;
