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
//! - After every transition [`Db::settle`] drops versions that no snapshot can see and renumbers
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
        self.settle();
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

    // ---- statements ----

    fn reads_snapshot(stmt: &Sql) -> bool {
        matches!(stmt, Sql::Select { .. } | Sql::Update { .. } | Sql::Delete { .. })
    }

    /// Run (or re-run) a data or advisory statement and settle its implicit transaction if it
    /// completes. `None` when it now waits.
    fn attempt(&mut self, conn: ConnId, stmt: &Sql, snapshot: Option<Seq>, fp: &mut Footprint) -> Option<Outcome> {
        let c = usize::from(conn);
        assert!(self.sessions[c].pending.is_none());
        assert_ne!(self.sessions[c].block, Block::Failed);
        let autocommit = self.sessions[c].block == Block::Idle;
        match self.run(conn, stmt, snapshot, fp) {
            Ok(outcome) => {
                self.statement_done(conn);
                if autocommit {
                    self.end_tx(conn, true, fp);
                }
                Some(outcome)
            }
            Err(Stop::Fail(code)) => {
                self.abort(conn, fp);
                Some(Outcome::Err(code))
            }
            Err(Stop::Wait(wait)) => {
                // Who waits for whom is shared state: deadlock detection and the grant order
                // read it. A wait that closes a cycle waits too; the explorer picks the victim
                // among the cycle. What it waits on, `run` recorded.
                fp.write(Resource::Waits);
                self.sessions[c].pending = Some(Pending { stmt: stmt.clone(), snapshot, wait });
                self.wait_queue.push(conn);
                None
            }
        }
    }

    fn run(&mut self, conn: ConnId, stmt: &Sql, snapshot: Option<Seq>, fp: &mut Footprint) -> Step {
        match stmt {
            Sql::Select { table, filter, lock } => {
                fp.read(Resource::Commits);
                self.select(conn, self.table(table), filter, *lock, snapshot.expect("snapshot"), fp)
            }
            Sql::Update { table, filter, set } => {
                fp.read(Resource::Commits);
                fp.write(Resource::Table(table));
                self.update(conn, self.table(table), filter, set, snapshot.expect("snapshot"))
            }
            Sql::Delete { table, filter } => {
                fp.read(Resource::Commits);
                fp.write(Resource::Table(table));
                self.delete(conn, self.table(table), filter, snapshot.expect("snapshot"))
            }
            Sql::Insert { table, row, on_conflict } => {
                fp.read(Resource::Commits);
                fp.write(Resource::Table(table));
                self.insert(conn, self.table(table), row, on_conflict, snapshot)
            }
            Sql::AdvisoryLock { key, scope } => {
                fp.write(Resource::Advisory(*key));
                match self.advisory.get(key) {
                    Some(h) if h.conn != conn => Err(Stop::Wait(Wait::Advisory(*key))),
                    _ => {
                        self.grant(conn, *key, *scope);
                        Ok(Outcome::Ok)
                    }
                }
            }
            Sql::AdvisoryTryLock { key, scope } => {
                fp.write(Resource::Advisory(*key));
                match self.advisory.get(key) {
                    Some(h) if h.conn != conn => Ok(Outcome::Bool(false)),
                    _ => {
                        self.grant(conn, *key, *scope);
                        Ok(Outcome::Bool(true))
                    }
                }
            }
            Sql::AdvisoryUnlock { key } => {
                fp.write(Resource::Advisory(*key));
                match self.advisory.get_mut(key) {
                    Some(h) if h.conn == conn && h.session > 0 => {
                        h.session -= 1;
                        if h.session == 0 && h.xact == 0 {
                            self.advisory.remove(key);
                        }
                        Ok(Outcome::Bool(true))
                    }
                    // PostgreSQL warns "you don't own a lock of type ExclusiveLock".
                    _ => Ok(Outcome::Bool(false)),
                }
            }
            Sql::AdvisoryUnlockAll => {
                for (key, h) in self.advisory.iter_mut() {
                    if h.conn == conn {
                        fp.write(Resource::Advisory(*key));
                        h.session = 0;
                    }
                }
                self.advisory.retain(|_, h| h.session + h.xact > 0);
                Ok(Outcome::Ok)
            }
            Sql::Begin | Sql::BeginRepeatableRead | Sql::Commit | Sql::Rollback | Sql::SetLockTimeout(_) => {
                unreachable!("transaction control is handled by execute")
            }
        }
    }

    fn grant(&mut self, conn: ConnId, key: i64, scope: LockScope) {
        let h = self.advisory.entry(key).or_insert(Hold { conn, session: 0, xact: 0 });
        assert_eq!(h.conn, conn);
        match scope {
            LockScope::Session => h.session += 1,
            LockScope::Xact => h.xact += 1,
        }
    }

    fn select(
        &mut self,
        conn: ConnId,
        t: usize,
        filter: &Filter,
        lock: Option<RowLock>,
        snapshot: Seq,
        fp: &mut Footprint,
    ) -> Step {
        let name = self.schema().tables[t].name;
        let filter = self.resolve_filter(t, filter);
        let Some(lock) = lock else {
            fp.read(Resource::Table(name));
            let rows = self.tables[t]
                .iter()
                .filter_map(|r| r.versions.iter().find(|v| visible(v, snapshot, conn)))
                .filter(|v| matches(&filter, &v.values))
                .map(|v| v.values.clone())
                .collect();
            return Ok(Outcome::Rows(rows));
        };
        fp.write(Resource::Table(name));
        let policy = match lock {
            RowLock::ForUpdate => Policy::Wait,
            RowLock::ForUpdateNowait => Policy::Nowait,
            RowLock::ForUpdateSkipLocked => Policy::Skip,
        };
        let mut rows = Vec::new();
        for ri in 0..self.tables[t].len() {
            if self.target(conn, t, ri, &filter, snapshot, policy)? {
                let row = &mut self.tables[t][ri];
                row.locker = Some(conn);
                rows.push(row.newest().values.clone());
            }
        }
        Ok(Outcome::Rows(rows))
    }

    fn update(&mut self, conn: ConnId, t: usize, filter: &Filter, set: &[(Col, Expr)], snapshot: Seq) -> Step {
        let filter = self.resolve_filter(t, filter);
        for ri in 0..self.tables[t].len() {
            if self.target(conn, t, ri, &filter, snapshot, Policy::Wait)? {
                let new = self.apply_set(t, set, &self.tables[t][ri].newest().values, None);
                self.write_update(conn, t, ri, new)?;
            }
        }
        // Rows written before an earlier wait count too: they are the ones stamped `current`.
        let current = Some(Xid::Active { conn, current: true });
        let rows = self.tables[t]
            .iter()
            .filter_map(|r| r.versions.iter().find(|v| Some(v.xmin) == current))
            .map(|v| v.values.clone())
            .collect();
        Ok(Outcome::Rows(rows))
    }

    fn delete(&mut self, conn: ConnId, t: usize, filter: &Filter, snapshot: Seq) -> Step {
        let filter = self.resolve_filter(t, filter);
        let current = Some(Xid::Active { conn, current: true });
        for ri in 0..self.tables[t].len() {
            if self.target(conn, t, ri, &filter, snapshot, Policy::Wait)? {
                let row = &mut self.tables[t][ri];
                let newest = row.versions.last_mut().expect("a version");
                newest.xmax = current;
            }
        }
        let rows = self.tables[t]
            .iter()
            .map(LogicalRow::newest)
            .filter(|v| v.xmax == current)
            .map(|v| v.values.clone())
            .collect();
        Ok(Outcome::Rows(rows))
    }

    /// Under REPEATABLE READ (`snapshot` set) `ON CONFLICT` fails with 40001 when the row it
    /// meets is not visible to the transaction's snapshot.
    fn insert(&mut self, conn: ConnId, t: usize, row: &Row, on_conflict: &OnConflict, snapshot: Option<Seq>) -> Step {
        assert_eq!(
            row.len(),
            self.schema().tables[t].columns.len(),
            "INSERT into {} has the wrong width",
            self.name(t)
        );
        if let OnConflict::DoNothing { target } | OnConflict::DoUpdate { target, .. } = on_conflict {
            for idx in self.arbiters(t, target) {
                match self.find_conflict(t, idx, row, None, conn) {
                    None => {}
                    Some(Conflict::Wait(other)) => return Err(Stop::Wait(Wait::Tx(other))),
                    Some(Conflict::Live(ri)) => match on_conflict {
                        OnConflict::DoUpdate { set, .. } => return self.upsert(conn, t, ri, row, set, snapshot),
                        _ => {
                            self.check_seen(conn, t, ri, snapshot)?;
                            return Ok(Outcome::Rows(Vec::new()));
                        }
                    },
                }
            }
        }
        self.check_unique(conn, t, row, None)?;
        let version = Version { values: row.clone(), xmin: Xid::Active { conn, current: true }, xmax: None };
        self.tables[t].push(LogicalRow { versions: vec![version], locker: None });
        Ok(Outcome::Rows(vec![row.clone()]))
    }

    /// `ON CONFLICT DO UPDATE` on the live conflicting row `ri`, visible to the snapshot or not
    /// (READ COMMITTED allows that). The row is locked first, as PostgreSQL does.
    fn upsert(
        &mut self,
        conn: ConnId,
        t: usize,
        ri: usize,
        proposed: &Row,
        set: &[(Col, Expr)],
        snapshot: Option<Seq>,
    ) -> Step {
        match self.tables[t][ri].locker {
            Some(other) if other != conn => return Err(Stop::Wait(Wait::Tx(other))),
            _ => {}
        }
        self.check_seen(conn, t, ri, snapshot)?;
        self.tables[t][ri].locker = Some(conn);
        let new = self.apply_set(t, set, &self.tables[t][ri].newest().values, Some(proposed));
        self.write_update(conn, t, ri, new.clone())?;
        Ok(Outcome::Rows(vec![new]))
    }

    /// REPEATABLE READ: the live version of row `ri` must be visible to the transaction's
    /// snapshot, else the transaction could not have seen what it acts on (40001).
    fn check_seen(&self, conn: ConnId, t: usize, ri: usize, snapshot: Option<Seq>) -> Result<(), Stop> {
        let Some(snapshot) = snapshot.filter(|_| self.sessions[usize::from(conn)].repeatable_read) else {
            return Ok(());
        };
        if visible(self.tables[t][ri].newest(), snapshot, conn) {
            Ok(())
        } else {
            Err(Stop::Fail(ErrorCode::SERIALIZATION_FAILURE))
        }
    }

    /// Write a new version of row `ri` after checking unique indexes against it.
    fn write_update(&mut self, conn: ConnId, t: usize, ri: usize, values: Row) -> Result<(), Stop> {
        self.check_unique(conn, t, &values, Some(ri))?;
        let me = Xid::Active { conn, current: true };
        let row = &mut self.tables[t][ri];
        let newest = row.versions.last_mut().expect("a version");
        assert!(newest.xmax.is_none(), "updating a dead version");
        newest.xmax = Some(me);
        row.versions.push(Version { values, xmin: me, xmax: None });
        Ok(())
    }

    /// READ COMMITTED target selection for `FOR UPDATE`, `UPDATE` and `DELETE`: take the version
    /// of row `ri` that the snapshot sees; if it matches, wait for whoever holds or modifies it,
    /// follow committed updates to the newest version and re-check the filter there. `true`
    /// when the newest version is ours to lock or modify.
    fn target(
        &mut self,
        conn: ConnId,
        t: usize,
        ri: usize,
        filter: &[(usize, Value)],
        snapshot: Seq,
        policy: Policy,
    ) -> Result<bool, Stop> {
        let row = &self.tables[t][ri];
        let Some(mut vi) = row.versions.iter().position(|v| visible(v, snapshot, conn)) else { return Ok(false) };
        if !matches(filter, &row.versions[vi].values) {
            return Ok(false);
        }
        let held = |other: ConnId| match policy {
            Policy::Wait => Err(Stop::Wait(Wait::Tx(other))),
            Policy::Nowait => Err(Stop::Fail(ErrorCode::LOCK_NOT_AVAILABLE)),
            Policy::Skip => Ok(false),
        };
        let repeatable_read = self.sessions[usize::from(conn)].repeatable_read;
        let mut followed = false;
        for _ in 0..row.versions.len() {
            match row.versions[vi].xmax {
                None => break,
                Some(Xid::Active { conn: other, current }) if other == conn => {
                    // Our earlier statements' deletions make the version invisible to us.
                    assert!(current, "a visible version deleted by an earlier statement of ours");
                    return Ok(false); // Already modified by this statement.
                }
                Some(Xid::Active { conn: other, .. }) => return held(other),
                // The version this snapshot sees was updated or deleted by a transaction that
                // committed after it: REPEATABLE READ cannot follow the chain.
                Some(Xid::Committed(_)) if repeatable_read => return Err(Stop::Fail(ErrorCode::SERIALIZATION_FAILURE)),
                Some(Xid::Committed(_)) if vi + 1 == row.versions.len() => return Ok(false), // Deleted.
                Some(Xid::Committed(_)) => {
                    vi += 1;
                    followed = true;
                }
            }
        }
        assert!(vi + 1 == row.versions.len() && row.versions[vi].xmax.is_none(), "update chain walk did not end");
        match row.locker {
            Some(other) if other != conn => return held(other),
            _ => {}
        }
        if followed && !matches(filter, &row.versions[vi].values) {
            // PostgreSQL locks the newest version before re-checking it, and keeps the lock.
            self.tables[t][ri].locker = Some(conn);
            return Ok(false);
        }
        Ok(true)
    }

    // ---- unique indexes ----

    /// The indexes named by an `ON CONFLICT (target)` that apply to the proposed row.
    fn arbiters(&self, t: usize, target: &[Col]) -> Vec<usize> {
        let mut want: Vec<usize> = target.iter().map(|&c| self.col(t, c)).collect();
        want.sort_unstable();
        let all: Vec<usize> = (0..self.catalog.0.indexes[t].len())
            .filter(|&i| {
                let mut cols = self.catalog.0.indexes[t][i].cols.clone();
                cols.sort_unstable();
                cols == want
            })
            .collect();
        assert!(!all.is_empty(), "ON CONFLICT {target:?} matches no unique index of {}", self.name(t));
        all
    }

    fn check_unique(&self, conn: ConnId, t: usize, values: &Row, exclude: Option<usize>) -> Result<(), Stop> {
        for idx in 0..self.catalog.0.indexes[t].len() {
            match self.find_conflict(t, idx, values, exclude, conn) {
                None => {}
                Some(Conflict::Wait(other)) => return Err(Stop::Wait(Wait::Tx(other))),
                Some(Conflict::Live(_)) => return Err(Stop::Fail(ErrorCode::UNIQUE_VIOLATION)),
            }
        }
        Ok(())
    }

    /// Check `values` against index `idx` in the latest state, not a snapshot (as a B-tree
    /// unique check with a dirty snapshot does). `exclude` is the row being updated.
    fn find_conflict(
        &self,
        t: usize,
        idx: usize,
        values: &Row,
        exclude: Option<usize>,
        me: ConnId,
    ) -> Option<Conflict> {
        let index = &self.catalog.0.indexes[t][idx];
        if !index.covers(values) {
            return None;
        }
        for (ri, row) in self.tables[t].iter().enumerate() {
            if Some(ri) == exclude {
                continue;
            }
            for v in row.versions.iter().filter(|v| index.covers(&v.values) && index.same_key(&v.values, values)) {
                let conflict = match (v.xmin, v.xmax) {
                    (Xid::Active { conn, .. }, _) if conn != me => Some(Conflict::Wait(conn)),
                    (_, None) => Some(Conflict::Live(ri)),
                    (_, Some(Xid::Active { conn, .. })) if conn == me => None,
                    (_, Some(Xid::Active { conn, .. })) => Some(Conflict::Wait(conn)),
                    (_, Some(Xid::Committed(_))) => None,
                };
                if conflict.is_some() {
                    return conflict;
                }
            }
        }
        None
    }

    // ---- transactions and waiting ----

    /// Did `conn`'s transaction write, lock or take a transaction-scope advisory lock? Ending a
    /// transaction without effects changes nothing that others can see.
    fn has_effects(&self, conn: ConnId) -> bool {
        self.tables.iter().flatten().any(|r| {
            r.locker == Some(conn)
                || r.versions.iter().any(|v| v.xmin.is_active(conn) || v.xmax.is_some_and(|x| x.is_active(conn)))
        }) || self.advisory.values().any(|h| h.conn == conn && h.xact > 0)
    }

    /// Commit or roll back `conn`'s transaction. The caller sets the session's block state.
    fn end_tx(&mut self, conn: ConnId, commit: bool, fp: &mut Footprint) {
        if self.has_effects(conn) {
            // What others can see change: the commit order, the rows it wrote or locked, its
            // transaction-scope advisory locks. Waiters it frees re-run in `wake`, which
            // touches everything.
            fp.write(Resource::Commits);
            for (t, rows) in self.tables.iter().enumerate() {
                let mine = |r: &LogicalRow| {
                    r.locker == Some(conn)
                        || r.versions
                            .iter()
                            .any(|v| v.xmin.is_active(conn) || v.xmax.is_some_and(|x| x.is_active(conn)))
                };
                if rows.iter().any(mine) {
                    fp.write(Resource::Table(self.schema().tables[t].name));
                }
            }
            for (key, h) in &self.advisory {
                if h.conn == conn && h.xact > 0 {
                    fp.write(Resource::Advisory(*key));
                }
            }
        }
        let wrote = self
            .tables
            .iter()
            .flatten()
            .flat_map(|r| &r.versions)
            .any(|v| v.xmin.is_active(conn) || v.xmax.is_some_and(|x| x.is_active(conn)));
        if commit && wrote {
            self.seq += 1;
        }
        let seq = self.seq;
        for rows in &mut self.tables {
            for row in rows.iter_mut() {
                if row.locker == Some(conn) {
                    row.locker = None;
                }
                if commit {
                    for v in &mut row.versions {
                        if v.xmin.is_active(conn) {
                            v.xmin = Xid::Committed(seq);
                        }
                        if v.xmax.is_some_and(|x| x.is_active(conn)) {
                            v.xmax = Some(Xid::Committed(seq));
                        }
                    }
                } else {
                    // Our versions are the tail of the chain: nobody else can update them.
                    row.versions.retain(|v| !v.xmin.is_active(conn));
                    if let Some(v) = row.versions.last_mut() {
                        if v.xmax.is_some_and(|x| x.is_active(conn)) {
                            v.xmax = None;
                        }
                    }
                }
            }
            rows.retain(|r| !r.versions.is_empty());
        }
        for h in self.advisory.values_mut() {
            if h.conn == conn {
                h.xact = 0;
            }
        }
        self.advisory.retain(|_, h| h.session + h.xact > 0);
        let s = &mut self.sessions[usize::from(conn)];
        s.repeatable_read = false;
        s.tx_snapshot = None;
        let before = s.lock_timeout_before.take();
        if !commit {
            s.lock_timeout = before.unwrap_or(s.lock_timeout);
        }
    }

    /// An error aborts the transaction; a block then refuses everything but COMMIT/ROLLBACK.
    fn abort(&mut self, conn: ConnId, fp: &mut Footprint) {
        fp.global();
        self.end_tx(conn, false, fp);
        let s = &mut self.sessions[usize::from(conn)];
        if s.block == Block::Open {
            s.block = Block::Failed;
        }
    }

    /// The statement completed: its writes become visible to the transaction's next statements.
    fn statement_done(&mut self, conn: ConnId) {
        let mine = Xid::Active { conn, current: false };
        let running = Xid::Active { conn, current: true };
        for v in self.tables.iter_mut().flatten().flat_map(|r| r.versions.iter_mut()) {
            if v.xmin == running {
                v.xmin = mine;
            }
            if v.xmax == Some(running) {
                v.xmax = Some(mine);
            }
        }
    }

    fn tx_active(&self, conn: ConnId) -> bool {
        let s = &self.sessions[usize::from(conn)];
        s.block == Block::Open || s.pending.is_some()
    }

    /// The session a wait is for: the transaction's session, or the advisory lock's holder.
    fn blocker(&self, wait: Wait, waiter: ConnId) -> Option<ConnId> {
        match wait {
            Wait::Tx(c) => Some(c).filter(|&c| self.tx_active(c)),
            Wait::Advisory(key) => self.advisory.get(&key).map(|h| h.conn).filter(|&h| h != waiter),
        }
    }

    /// Who holds which lock and who waits for whom, for a reader of a counterexample:
    /// `advisory lock 42 held by conn 0`, `conn 1 waits for conn 0 (advisory lock 42)`.
    pub fn describe_locks(&self) -> Vec<String> {
        let mut lines: Vec<String> =
            self.advisory.iter().map(|(key, h)| format!("advisory lock {key} held by conn {}", h.conn)).collect();
        for (t, rows) in self.tables.iter().enumerate() {
            for r in rows {
                if let (Some(locker), Some(v)) = (r.locker, r.versions.last()) {
                    let values: Vec<String> = v.values.iter().map(|x| x.to_string()).collect();
                    lines.push(format!("row {}({}) locked by conn {locker}", self.name(t), values.join(", ")));
                }
            }
        }
        for &w in &self.wait_queue {
            let Some(p) = self.sessions[usize::from(w)].pending.as_ref() else { continue };
            let what = match p.wait {
                Wait::Tx(_) => "its transaction".to_string(),
                Wait::Advisory(key) => format!("advisory lock {key}"),
            };
            match self.blocker(p.wait, w) {
                Some(b) => lines.push(format!("conn {w} waits for conn {b} ({what})")),
                None => lines.push(format!("conn {w} is granted ({what})")),
            }
        }
        lines
    }

    /// Is `conn`'s statement waiting on a cycle of the wait-for graph? With exclusive locks only,
    /// each waiter waits for exactly one session (edges to waiters queued ahead on the same key
    /// add no cycle that the holder edge does not already close), so the walk from it either
    /// comes back to it or ends.
    fn in_cycle(&self, conn: ConnId) -> bool {
        let s = &self.sessions[usize::from(conn)];
        let Some(p) = s.pending.as_ref().filter(|_| !s.woken) else { return false };
        let mut next = self.blocker(p.wait, conn);
        for _ in 0..self.sessions.len() {
            let Some(x) = next else { return false };
            if x == conn {
                return true;
            }
            let sx = &self.sessions[usize::from(x)];
            next = sx.pending.as_ref().filter(|_| !sx.woken).and_then(|p| self.blocker(p.wait, x));
        }
        false
    }

    /// Re-run, in FIFO order, every waiter whose blocker is gone, until none is left. A re-run
    /// can end a transaction and free further waiters, hence the loop from the head. When two or
    /// more transaction waiters are free at once, they race: they are marked woken instead, and
    /// the explorer picks who re-runs first; a lone woken waiter left over re-runs here.
    fn wake(&mut self, fp: &mut Footprint) {
        let n = self.wait_queue.len();
        for _ in 0..(n + 1) * (n + 1) {
            let free = |db: &Db, w: ConnId| {
                let p = db.sessions[usize::from(w)].pending.as_ref().expect("a queued session waits");
                db.blocker(p.wait, w).is_none()
            };
            let racing: Vec<ConnId> = self
                .wait_queue
                .iter()
                .copied()
                .filter(|&w| {
                    free(self, w)
                        && matches!(self.sessions[usize::from(w)].pending.as_ref().map(|p| p.wait), Some(Wait::Tx(_)))
                })
                .collect();
            if racing.len() >= 2 {
                fp.global();
                for w in racing {
                    self.sessions[usize::from(w)].woken = true;
                }
            }
            let runnable = self.wait_queue.iter().position(|&w| free(self, w) && !self.sessions[usize::from(w)].woken);
            let runnable = runnable.or_else(|| {
                // A woken waiter whose rivals have all moved has nobody left to race.
                let woken: Vec<usize> = (0..self.wait_queue.len())
                    .filter(|&k| self.sessions[usize::from(self.wait_queue[k])].woken)
                    .collect();
                (woken.len() == 1).then(|| woken[0])
            });
            let Some(pos) = runnable else { return };
            self.sessions[usize::from(self.wait_queue[pos])].woken = false;
            fp.global();
            let conn = self.wait_queue.remove(pos);
            let p = self.sessions[usize::from(conn)].pending.take().expect("a queued session waits");
            if let Some(outcome) = self.attempt(conn, &p.stmt, p.snapshot, fp) {
                self.sessions[usize::from(conn)].ready = Some(outcome);
            }
        }
        panic!("waking waiters did not settle");
    }

    /// Common tail of every public transition.
    fn after(&mut self, fp: &mut Footprint) {
        self.wake(fp);
        self.settle();
        self.check_invariants();
    }

    /// Drop versions that no snapshot can see any more, and renumber commit sequence numbers
    /// by rank among the live snapshots: only "committed before snapshot S or not" matters.
    fn settle(&mut self) {
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
        for s in &mut self.sessions {
            if let Some(snap) = s.pending.as_mut().and_then(|p| p.snapshot.as_mut()) {
                *snap = rank(*snap);
            }
            if let Some(snap) = s.tx_snapshot.as_mut() {
                *snap = rank(*snap);
            }
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

#[cfg(test)]
mod test_steps;

#[cfg(test)]
mod repeatable_read_tests;

#[cfg(test)]
mod wake_order_tests;

#[cfg(test)]
mod victim_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::ErrorCode as E;

    fn schema() -> Schema {
        Schema {
            tables: vec![
                TableDef {
                    name: "t",
                    columns: vec!["id", "tag", "n"],
                    unique: vec![UniqueIndex { name: "t_tag", columns: vec!["tag"], predicate: None }],
                },
                TableDef {
                    name: "jobs",
                    columns: vec!["key", "state"],
                    unique: vec![UniqueIndex {
                        name: "one_running",
                        columns: vec!["key"],
                        predicate: Some(("state", Value::Str("running"))),
                    }],
                },
            ],
        }
    }

    /// A database with `n` sessions and a row (1, a, 0) in `t`.
    fn db(n: usize) -> Db {
        let mut db = Db::new(schema());
        db.seed_row("t", vec![Value::Int(1), Value::Str("a"), Value::Int(0)]);
        for i in 0..n {
            assert_eq!(db.open_session(), i as ConnId);
        }
        db
    }

    fn run(db: &mut Db, c: ConnId, s: Sql) -> Outcome {
        match db.execute(c, &s, &mut Footprint::default()) {
            Applied::Done(o) => o,
            Applied::Blocked => panic!("{s:?} blocked"),
        }
    }

    fn block(db: &mut Db, c: ConnId, s: Sql) {
        assert_eq!(db.execute(c, &s, &mut Footprint::default()), Applied::Blocked, "{s:?} should block");
        assert!(!db.is_ready(c));
    }

    /// `s` closes a wait-for cycle: it waits, and is ready to be the deadlock's victim.
    fn close_cycle(db: &mut Db, c: ConnId, s: Sql) {
        assert_eq!(db.execute(c, &s, &mut Footprint::default()), Applied::Blocked, "{s:?} should block");
        assert!(db.is_ready(c), "session {c} is on no cycle");
    }

    fn ready(db: &mut Db, c: ConnId) -> Outcome {
        assert!(db.is_ready(c), "session {c} is not ready");
        db.take_ready(c, &mut Footprint::default()).expect("ready outcome")
    }

    fn row(id: i64, tag: &'static str, n: i64) -> Row {
        vec![Value::Int(id), Value::Str(tag), Value::Int(n)]
    }

    fn ins(id: i64, tag: &'static str, n: i64) -> Sql {
        Sql::Insert { table: "t", row: row(id, tag, n), on_conflict: OnConflict::Error }
    }

    fn sel(filter: Filter) -> Sql {
        Sql::Select { table: "t", filter, lock: None }
    }

    fn lock(filter: Filter, l: RowLock) -> Sql {
        Sql::Select { table: "t", filter, lock: Some(l) }
    }

    fn all() -> Sql {
        sel(vec![])
    }

    fn add(filter: Filter, n: i64) -> Sql {
        Sql::Update { table: "t", filter, set: vec![("n", Expr::Add("n", n))] }
    }

    fn del(filter: Filter) -> Sql {
        Sql::Delete { table: "t", filter }
    }

    fn tag(t: &'static str) -> Filter {
        vec![("tag", Value::Str(t))]
    }

    fn rows(v: Vec<Row>) -> Outcome {
        Outcome::Rows(v)
    }

    fn err(code: ErrorCode) -> Outcome {
        Outcome::Err(code)
    }

    fn adv(key: i64, scope: LockScope) -> Sql {
        Sql::AdvisoryLock { key, scope }
    }

    #[test]
    fn autocommit_insert_is_visible_to_others() {
        let mut d = db(2);
        assert_eq!(run(&mut d, 0, ins(2, "b", 0)), rows(vec![row(2, "b", 0)]));
        assert_eq!(run(&mut d, 1, all()), rows(vec![row(1, "a", 0), row(2, "b", 0)]));
        assert_eq!(d.committed_rows("t"), vec![row(1, "a", 0), row(2, "b", 0)]);
    }

    #[test]
    fn uncommitted_insert_is_invisible_to_others_until_commit() {
        let mut d = db(2);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, ins(2, "b", 0));
        assert_eq!(run(&mut d, 0, sel(tag("b"))), rows(vec![row(2, "b", 0)]), "own writes are visible");
        assert_eq!(run(&mut d, 1, sel(tag("b"))), rows(vec![]));
        assert_eq!(d.committed_rows("t"), vec![row(1, "a", 0)]);
        run(&mut d, 0, Sql::Commit);
        assert_eq!(run(&mut d, 1, sel(tag("b"))), rows(vec![row(2, "b", 0)]));
    }

    #[test]
    fn each_statement_takes_a_fresh_snapshot() {
        let mut d = db(2);
        run(&mut d, 0, Sql::Begin);
        assert_eq!(run(&mut d, 0, all()).rows().len(), 1);
        run(&mut d, 1, ins(2, "b", 0));
        assert_eq!(run(&mut d, 0, all()).rows().len(), 2, "READ COMMITTED sees B's commit");
    }

    #[test]
    fn rollback_leaves_the_database_as_it_was() {
        let mut d = db(2);
        let original = d.clone();
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, ins(2, "b", 0));
        run(&mut d, 0, add(vec![], 1));
        run(&mut d, 0, lock(vec![], RowLock::ForUpdate));
        run(&mut d, 0, adv(7, LockScope::Xact));
        run(&mut d, 0, Sql::SetLockTimeout(100));
        run(&mut d, 0, Sql::Rollback);
        assert_eq!(d, original);
    }

    #[test]
    fn committed_updates_compact_to_the_same_state() {
        let mut a = db(1);
        run(&mut a, 0, add(vec![], 1));
        run(&mut a, 0, add(vec![], 1));
        let mut b = Db::new(schema());
        b.seed_row("t", row(1, "a", 2));
        b.open_session();
        assert_eq!(a, b, "dead versions are dropped and commit numbers renumbered");
    }

    #[test]
    fn plain_insert_duplicate_is_a_unique_violation() {
        let mut d = db(1);
        assert_eq!(run(&mut d, 0, ins(2, "a", 0)), err(E::UNIQUE_VIOLATION));
        assert_eq!(d.committed_rows("t").len(), 1);
    }

    #[test]
    fn null_keys_never_conflict() {
        let mut d = db(1);
        let null_tag = |id| Sql::Insert {
            table: "t",
            row: vec![Value::Int(id), Value::Null, Value::Int(0)],
            on_conflict: OnConflict::Error,
        };
        assert!(!run(&mut d, 0, null_tag(2)).is_err());
        assert!(!run(&mut d, 0, null_tag(3)).is_err());
        assert_eq!(run(&mut d, 0, sel(vec![("tag", Value::Null)])), rows(vec![]), "col = NULL is never true");
    }

    #[test]
    fn insert_waits_for_uncommitted_duplicate_then_fails_on_commit() {
        let mut d = db(2);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, ins(2, "b", 0));
        block(&mut d, 1, ins(3, "b", 0));
        run(&mut d, 0, Sql::Commit);
        assert_eq!(ready(&mut d, 1), err(E::UNIQUE_VIOLATION));
        assert_eq!(d.committed_rows("t").len(), 2);
    }

    #[test]
    fn insert_waits_for_uncommitted_duplicate_then_proceeds_on_abort() {
        let mut d = db(2);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, ins(2, "b", 0));
        block(&mut d, 1, ins(3, "b", 0));
        run(&mut d, 0, Sql::Rollback);
        assert_eq!(ready(&mut d, 1), rows(vec![row(3, "b", 0)]));
        assert_eq!(d.committed_rows("t"), vec![row(1, "a", 0), row(3, "b", 0)]);
    }

    #[test]
    fn insert_waits_for_uncommitted_delete_of_duplicate() {
        let mut d = db(3);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, del(tag("a")));
        block(&mut d, 1, ins(2, "a", 0));
        run(&mut d, 0, Sql::Rollback);
        assert_eq!(ready(&mut d, 1), err(E::UNIQUE_VIOLATION), "the deleter aborted: the key is live");

        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, del(tag("a")));
        block(&mut d, 2, ins(2, "a", 0));
        run(&mut d, 0, Sql::Commit);
        assert_eq!(ready(&mut d, 2), rows(vec![row(2, "a", 0)]), "the deleter committed: no conflict");
    }

    #[test]
    fn own_uncommitted_duplicate_conflicts_at_once() {
        let mut d = db(1);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, ins(2, "b", 0));
        assert_eq!(run(&mut d, 0, ins(3, "b", 0)), err(E::UNIQUE_VIOLATION));
    }

    #[test]
    fn update_checks_unique_indexes() {
        let mut d = db(1);
        run(&mut d, 0, ins(2, "b", 0));
        let retag = Sql::Update { table: "t", filter: tag("b"), set: vec![("tag", Expr::Value(Value::Str("a")))] };
        assert_eq!(run(&mut d, 0, retag), err(E::UNIQUE_VIOLATION));
        // Updating a row without changing its key does not conflict with its own old version.
        assert_eq!(run(&mut d, 0, add(tag("a"), 5)), rows(vec![row(1, "a", 5)]));
    }

    #[test]
    fn partial_unique_index_applies_only_inside_its_predicate() {
        let mut d = db(1);
        let job = |state| Sql::Insert {
            table: "jobs",
            row: vec![Value::Str("k"), Value::Str(state)],
            on_conflict: OnConflict::Error,
        };
        assert!(!run(&mut d, 0, job("done")).is_err());
        assert!(!run(&mut d, 0, job("done")).is_err(), "duplicates outside the predicate are fine");
        assert!(!run(&mut d, 0, job("running")).is_err());
        assert_eq!(run(&mut d, 0, job("running")), err(E::UNIQUE_VIOLATION));
        assert_eq!(d.committed_rows("jobs").len(), 3);
    }

    #[test]
    fn on_conflict_do_nothing() {
        let mut d = db(2);
        let upsert = |id| Sql::Insert {
            table: "t",
            row: row(id, "a", 9),
            on_conflict: OnConflict::DoNothing { target: vec!["tag"] },
        };
        assert_eq!(run(&mut d, 0, upsert(2)), rows(vec![]));
        // Waits on an in-progress conflicting insert like a plain INSERT.
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, del(tag("a")));
        run(&mut d, 0, ins(3, "a", 0));
        block(&mut d, 1, upsert(4));
        run(&mut d, 0, Sql::Commit);
        assert_eq!(ready(&mut d, 1), rows(vec![]));
        assert_eq!(d.committed_rows("t"), vec![row(3, "a", 0)]);
    }

    fn upsert_add(id: i64, n: i64) -> Sql {
        Sql::Insert {
            table: "t",
            row: row(id, "a", n),
            on_conflict: OnConflict::DoUpdate {
                target: vec!["tag"],
                set: vec![("n", Expr::Excluded("n")), ("id", Expr::Add("id", 10))],
            },
        }
    }

    #[test]
    fn on_conflict_do_update_updates_the_conflicting_row() {
        let mut d = db(1);
        assert_eq!(run(&mut d, 0, upsert_add(2, 5)), rows(vec![row(11, "a", 5)]));
        assert_eq!(d.committed_rows("t"), vec![row(11, "a", 5)]);
        run(&mut d, 0, del(vec![]));
        assert_eq!(run(&mut d, 0, upsert_add(2, 5)), rows(vec![row(2, "a", 5)]), "no conflict: plain insert");
    }

    #[test]
    fn on_conflict_do_update_waits_for_the_row_lock() {
        let mut d = db(2);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, add(tag("a"), 1));
        block(&mut d, 1, upsert_add(2, 5));
        run(&mut d, 0, Sql::Commit);
        assert_eq!(ready(&mut d, 1), rows(vec![row(11, "a", 5)]));
    }

    #[test]
    fn on_conflict_do_update_sees_rows_committed_after_its_snapshot_would_be_taken() {
        // A conflicting insert that commits while we wait is updated, not inserted over.
        let mut d = db(2);
        run(&mut d, 0, del(vec![]));
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, ins(1, "a", 1));
        block(&mut d, 1, upsert_add(2, 5));
        run(&mut d, 0, Sql::Commit);
        assert_eq!(ready(&mut d, 1), rows(vec![row(11, "a", 5)]));
    }

    #[test]
    fn update_rechecks_the_newest_version() {
        let mut d = db(2);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, add(tag("a"), 1));
        block(&mut d, 1, add(tag("a"), 10));
        run(&mut d, 0, Sql::Commit);
        assert_eq!(ready(&mut d, 1), rows(vec![row(1, "a", 11)]), "Add applies to the newest version");
    }

    #[test]
    fn update_skips_a_row_updated_to_no_longer_match() {
        let mut d = db(2);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, add(vec![("n", Value::Int(0))], 1));
        block(&mut d, 1, add(vec![("n", Value::Int(0))], 10));
        run(&mut d, 0, Sql::Commit);
        assert_eq!(ready(&mut d, 1), rows(vec![]));
        assert_eq!(d.committed_rows("t"), vec![row(1, "a", 1)]);
    }

    #[test]
    fn update_and_delete_skip_a_concurrently_deleted_row() {
        let mut d = db(3);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, del(tag("a")));
        block(&mut d, 1, add(tag("a"), 1));
        block(&mut d, 2, del(tag("a")));
        run(&mut d, 0, Sql::Commit);
        assert_eq!(ready(&mut d, 1), rows(vec![]));
        assert_eq!(ready(&mut d, 2), rows(vec![]));
    }

    #[test]
    fn waiting_update_does_not_see_rows_inserted_after_its_snapshot() {
        let mut d = db(3);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, add(tag("a"), 1));
        block(&mut d, 1, add(vec![], 100));
        run(&mut d, 2, ins(2, "b", 0));
        run(&mut d, 0, Sql::Commit);
        assert_eq!(ready(&mut d, 1), rows(vec![row(1, "a", 101)]), "row b is newer than the snapshot");
        assert_eq!(run(&mut d, 2, sel(tag("b"))), rows(vec![row(2, "b", 0)]));
    }

    #[test]
    fn update_returns_rows_written_before_and_after_a_wait() {
        let mut d = db(2);
        run(&mut d, 0, ins(2, "b", 0));
        run(&mut d, 0, ins(3, "c", 0));
        run(&mut d, 1, Sql::Begin);
        run(&mut d, 1, lock(tag("b"), RowLock::ForUpdate));
        block(&mut d, 0, add(vec![], 1));
        run(&mut d, 1, Sql::Commit);
        assert_eq!(ready(&mut d, 0), rows(vec![row(1, "a", 1), row(2, "b", 1), row(3, "c", 1)]));
        assert_eq!(d.committed_rows("t"), vec![row(1, "a", 1), row(2, "b", 1), row(3, "c", 1)]);
    }

    #[test]
    fn for_update_blocks_nowait_fails_skip_locked_skips() {
        let mut d = db(3);
        run(&mut d, 0, ins(2, "b", 0));
        run(&mut d, 0, Sql::Begin);
        assert_eq!(run(&mut d, 0, lock(tag("a"), RowLock::ForUpdate)), rows(vec![row(1, "a", 0)]));
        assert_eq!(run(&mut d, 1, lock(vec![], RowLock::ForUpdateNowait)), err(E::LOCK_NOT_AVAILABLE));
        assert_eq!(run(&mut d, 1, lock(vec![], RowLock::ForUpdateSkipLocked)), rows(vec![row(2, "b", 0)]));
        assert_eq!(run(&mut d, 1, all()).rows().len(), 2, "plain reads do not wait for row locks");
        block(&mut d, 2, lock(vec![], RowLock::ForUpdate));
        run(&mut d, 0, Sql::Commit);
        assert_eq!(ready(&mut d, 2), rows(vec![row(1, "a", 0), row(2, "b", 0)]));
    }

    #[test]
    fn for_update_after_concurrent_update_returns_the_newest_version() {
        let mut d = db(2);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, add(tag("a"), 1));
        run(&mut d, 1, Sql::Begin);
        block(&mut d, 1, lock(tag("a"), RowLock::ForUpdate));
        run(&mut d, 0, Sql::Commit);
        assert_eq!(ready(&mut d, 1), rows(vec![row(1, "a", 1)]));
        // The lock is held until the transaction ends.
        run(&mut d, 0, Sql::Begin);
        block(&mut d, 0, add(tag("a"), 1));
        run(&mut d, 1, Sql::Rollback);
        assert_eq!(ready(&mut d, 0), rows(vec![row(1, "a", 2)]));
    }

    #[test]
    fn autocommit_for_update_releases_its_lock() {
        let mut d = db(2);
        run(&mut d, 0, lock(vec![], RowLock::ForUpdate));
        assert_eq!(run(&mut d, 1, add(vec![], 1)).rows().len(), 1);
    }

    #[test]
    fn error_aborts_block_until_rollback() {
        let mut d = db(2);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, ins(2, "b", 0));
        assert_eq!(run(&mut d, 0, ins(3, "a", 0)), err(E::UNIQUE_VIOLATION));
        assert_eq!(run(&mut d, 1, ins(4, "b", 0)), rows(vec![row(4, "b", 0)]), "the aborted insert is dead");
        assert_eq!(run(&mut d, 0, all()), err(E::IN_FAILED_SQL_TRANSACTION));
        assert_eq!(run(&mut d, 0, Sql::SetLockTimeout(5)), err(E::IN_FAILED_SQL_TRANSACTION));
        assert_eq!(run(&mut d, 0, Sql::Begin), err(E::IN_FAILED_SQL_TRANSACTION));
        assert_eq!(run(&mut d, 0, Sql::Rollback), Outcome::Ok);
        assert_eq!(run(&mut d, 0, all()).rows().len(), 2);
    }

    #[test]
    fn commit_of_a_failed_block_rolls_back() {
        let mut d = db(1);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, add(vec![], 1));
        assert!(run(&mut d, 0, ins(3, "a", 0)).is_err());
        assert_eq!(run(&mut d, 0, Sql::Commit), Outcome::Ok);
        assert_eq!(d.committed_rows("t"), vec![row(1, "a", 0)]);
    }

    #[test]
    fn transaction_control_outside_and_inside_blocks_only_warns() {
        let mut d = db(1);
        assert_eq!(run(&mut d, 0, Sql::Commit), Outcome::Ok);
        assert_eq!(run(&mut d, 0, Sql::Rollback), Outcome::Ok);
        run(&mut d, 0, Sql::Begin);
        assert_eq!(run(&mut d, 0, Sql::Begin), Outcome::Ok);
        run(&mut d, 0, add(vec![], 1));
        run(&mut d, 0, Sql::Commit);
        assert_eq!(d.committed_rows("t"), vec![row(1, "a", 1)]);
    }

    #[test]
    fn advisory_session_locks_stack_and_need_matching_unlocks() {
        let mut d = db(2);
        let try1 = Sql::AdvisoryTryLock { key: 1, scope: LockScope::Session };
        let unlock = Sql::AdvisoryUnlock { key: 1 };
        assert_eq!(run(&mut d, 0, adv(1, LockScope::Session)), Outcome::Ok);
        assert_eq!(run(&mut d, 0, adv(1, LockScope::Session)), Outcome::Ok);
        assert_eq!(run(&mut d, 1, try1.clone()), Outcome::Bool(false));
        assert_eq!(run(&mut d, 0, unlock.clone()), Outcome::Bool(true));
        assert_eq!(run(&mut d, 1, try1.clone()), Outcome::Bool(false), "one hold remains");
        assert_eq!(run(&mut d, 0, unlock.clone()), Outcome::Bool(true));
        assert_eq!(run(&mut d, 0, unlock.clone()), Outcome::Bool(false), "not held any more");
        assert_eq!(run(&mut d, 1, try1), Outcome::Bool(true));
        assert_eq!(run(&mut d, 0, unlock), Outcome::Bool(false), "held by another session");
    }

    #[test]
    fn advisory_unlock_all_releases_session_holds() {
        let mut d = db(2);
        run(&mut d, 0, adv(1, LockScope::Session));
        run(&mut d, 0, adv(1, LockScope::Session));
        run(&mut d, 0, adv(2, LockScope::Session));
        block(&mut d, 1, adv(2, LockScope::Session));
        assert_eq!(run(&mut d, 0, Sql::AdvisoryUnlockAll), Outcome::Ok);
        assert_eq!(ready(&mut d, 1), Outcome::Ok);
        assert_eq!(run(&mut d, 1, Sql::AdvisoryTryLock { key: 1, scope: LockScope::Session }), Outcome::Bool(true));
    }

    #[test]
    fn advisory_xact_locks_release_at_transaction_end() {
        let mut d = db(2);
        let try_xact = Sql::AdvisoryTryLock { key: 1, scope: LockScope::Xact };
        // In autocommit the lock is released as soon as the statement ends.
        assert_eq!(run(&mut d, 0, adv(1, LockScope::Xact)), Outcome::Ok);
        assert_eq!(run(&mut d, 1, try_xact.clone()), Outcome::Bool(true));
        run(&mut d, 0, Sql::Begin);
        assert_eq!(run(&mut d, 0, try_xact.clone()), Outcome::Bool(true));
        assert_eq!(run(&mut d, 0, Sql::AdvisoryUnlock { key: 1 }), Outcome::Bool(false), "xact holds don't unlock");
        block(&mut d, 1, adv(1, LockScope::Session));
        run(&mut d, 0, Sql::Commit);
        assert_eq!(ready(&mut d, 1), Outcome::Ok);
    }

    #[test]
    fn session_advisory_lock_survives_rollback() {
        let mut d = db(2);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, adv(1, LockScope::Session));
        assert!(run(&mut d, 0, ins(2, "a", 0)).is_err());
        run(&mut d, 0, Sql::Rollback);
        assert_eq!(run(&mut d, 1, Sql::AdvisoryTryLock { key: 1, scope: LockScope::Session }), Outcome::Bool(false));
    }

    #[test]
    fn advisory_waiters_are_granted_in_fifo_order() {
        let mut d = db(3);
        run(&mut d, 0, adv(1, LockScope::Session));
        block(&mut d, 2, adv(1, LockScope::Session));
        block(&mut d, 1, adv(1, LockScope::Session));
        run(&mut d, 0, Sql::AdvisoryUnlock { key: 1 });
        assert_eq!(ready(&mut d, 2), Outcome::Ok, "the head of the queue goes first");
        assert!(!d.is_ready(1));
        assert_eq!(run(&mut d, 0, Sql::AdvisoryTryLock { key: 1, scope: LockScope::Session }), Outcome::Bool(false));
        run(&mut d, 2, Sql::AdvisoryUnlock { key: 1 });
        assert_eq!(ready(&mut d, 1), Outcome::Ok);
    }

    #[test]
    fn advisory_deadlock_the_closer_is_one_possible_victim() {
        let mut d = db(2);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, adv(1, LockScope::Xact));
        run(&mut d, 1, Sql::Begin);
        run(&mut d, 1, adv(2, LockScope::Xact));
        block(&mut d, 0, adv(2, LockScope::Xact));
        close_cycle(&mut d, 1, adv(1, LockScope::Xact));
        assert_eq!(d.deadlocked().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(ready(&mut d, 1), err(E::DEADLOCK_DETECTED), "the closer's check runs first");
        assert_eq!(ready(&mut d, 0), Outcome::Ok, "the victim's xact lock was released");
        assert_eq!(run(&mut d, 1, all()), err(E::IN_FAILED_SQL_TRANSACTION));
    }

    #[test]
    fn row_lock_deadlock() {
        let mut d = db(2);
        run(&mut d, 0, ins(2, "b", 0));
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 1, Sql::Begin);
        run(&mut d, 0, add(tag("a"), 1));
        run(&mut d, 1, add(tag("b"), 1));
        block(&mut d, 0, add(tag("b"), 1));
        close_cycle(&mut d, 1, add(tag("a"), 1));
        assert_eq!(ready(&mut d, 1), err(E::DEADLOCK_DETECTED), "the closer, one possible victim");
        assert_eq!(ready(&mut d, 0), rows(vec![row(2, "b", 1)]));
        run(&mut d, 0, Sql::Commit);
        run(&mut d, 1, Sql::Rollback);
        assert_eq!(d.committed_rows("t"), vec![row(1, "a", 1), row(2, "b", 1)]);
    }

    #[test]
    fn three_way_deadlock_through_mixed_waits() {
        let mut d = db(3);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, add(tag("a"), 1));
        run(&mut d, 1, adv(5, LockScope::Session));
        block(&mut d, 1, add(tag("a"), 1)); // 1 waits for 0's transaction
        block(&mut d, 2, adv(5, LockScope::Session)); // 2 waits for 1
        close_cycle(&mut d, 0, adv(5, LockScope::Xact)); // 0 -> 1 -> 0
        assert_eq!(d.deadlocked().collect::<Vec<_>>(), [0, 1], "2 waits on the cycle, not in it");
        assert!(!d.is_ready(2));
        assert_eq!(ready(&mut d, 0), err(E::DEADLOCK_DETECTED), "the closer, one possible victim");
        assert_eq!(ready(&mut d, 1), rows(vec![row(1, "a", 1)]));
        assert!(!d.is_ready(2), "1 still holds its session lock");
        run(&mut d, 1, Sql::AdvisoryUnlock { key: 5 });
        assert_eq!(ready(&mut d, 2), Outcome::Ok);
    }

    #[test]
    fn cancel_wait_reports_lock_timeout_or_cancel() {
        let mut d = db(2);
        run(&mut d, 0, adv(1, LockScope::Session));
        run(&mut d, 1, Sql::Begin);
        run(&mut d, 1, ins(2, "b", 0));
        block(&mut d, 1, adv(1, LockScope::Session));
        assert_eq!(d.cancel_wait(1, &mut Footprint::default()), err(E::QUERY_CANCELED));
        assert_eq!(run(&mut d, 1, all()), err(E::IN_FAILED_SQL_TRANSACTION));
        run(&mut d, 1, Sql::Rollback);
        assert_eq!(d.committed_rows("t").len(), 1, "the cancelled transaction rolled back");
        run(&mut d, 1, Sql::SetLockTimeout(50));
        block(&mut d, 1, adv(1, LockScope::Session));
        assert_eq!(d.cancel_wait(1, &mut Footprint::default()), err(E::LOCK_NOT_AVAILABLE));
        run(&mut d, 0, Sql::AdvisoryUnlock { key: 1 });
        assert!(!d.is_ready(1), "the cancelled wait is gone from the queue");
    }

    #[test]
    fn set_lock_timeout_in_an_aborted_block_is_undone() {
        let mut d = db(1);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, Sql::SetLockTimeout(50));
        run(&mut d, 0, Sql::Rollback);
        assert_eq!(d.sessions[0].lock_timeout, 0);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, Sql::SetLockTimeout(50));
        run(&mut d, 0, Sql::Commit);
        assert_eq!(d.sessions[0].lock_timeout, 50);
    }

    #[test]
    fn cancelled_update_releases_waiters_behind_it() {
        let mut d = db(3);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, lock(tag("a"), RowLock::ForUpdate));
        run(&mut d, 1, Sql::Begin);
        run(&mut d, 1, adv(9, LockScope::Xact));
        block(&mut d, 1, add(tag("a"), 1));
        block(&mut d, 2, adv(9, LockScope::Xact));
        assert_eq!(d.cancel_wait(1, &mut Footprint::default()), err(E::QUERY_CANCELED));
        assert_eq!(ready(&mut d, 2), Outcome::Ok);
    }

    #[test]
    fn injected_errors_abort_the_transaction() {
        let mut d = db(2);
        assert_eq!(d.inject_error(0, &ins(2, "b", 0), &mut Footprint::default()), err(E::IO_ERROR));
        assert_eq!(d.committed_rows("t").len(), 1);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, ins(2, "b", 0));
        assert_eq!(d.inject_error(0, &all(), &mut Footprint::default()), err(E::IO_ERROR));
        assert_eq!(run(&mut d, 0, all()), err(E::IN_FAILED_SQL_TRANSACTION));
        run(&mut d, 0, Sql::Rollback);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, ins(2, "b", 0));
        assert_eq!(d.inject_error(0, &Sql::Commit, &mut Footprint::default()), err(E::IO_ERROR));
        assert_eq!(run(&mut d, 0, all()).rows().len(), 1, "the failed COMMIT rolled back and ended the block");
    }

    #[test]
    fn disconnect_rolls_back_and_releases_everything() {
        let mut d = db(3);
        let original = d.clone();
        run(&mut d, 0, adv(1, LockScope::Session));
        run(&mut d, 0, Sql::SetLockTimeout(10));
        run(&mut d, 1, Sql::Begin);
        run(&mut d, 1, add(vec![], 1));
        block(&mut d, 0, add(vec![], 1));
        block(&mut d, 2, adv(1, LockScope::Session));
        d.disconnect(0, &mut Footprint::default());
        assert!(!d.is_ready(0));
        assert_eq!(ready(&mut d, 2), Outcome::Ok, "the dead session's advisory lock is released");
        run(&mut d, 2, Sql::AdvisoryUnlock { key: 1 });
        d.disconnect(1, &mut Footprint::default());
        assert_eq!(d, original);
    }

    #[test]
    fn footprints_cover_reads_writes_and_transaction_ends() {
        let mut d = db(2);
        let mut fp = Footprint::default();
        d.execute(0, &Sql::Begin, &mut fp);
        assert_eq!(fp, Footprint::default());
        d.execute(0, &sel(vec![]), &mut fp);
        let mut want = Footprint::default();
        want.read(Resource::Table("t"));
        want.read(Resource::Commits);
        assert_eq!(fp, want);
        d.execute(0, &add(vec![], 1), &mut fp);
        assert_ne!(fp.writes & want.reads, 0, "an update writes the table");
        let mut commit = Footprint::default();
        d.execute(0, &Sql::Commit, &mut commit);
        let mut want = Footprint::default();
        want.write(Resource::Commits);
        want.write(Resource::Table("t"));
        assert_eq!(commit, want, "a commit that frees nobody writes what it changed");
        let mut fp = Footprint::default();
        d.execute(1, &adv(3, LockScope::Session), &mut fp);
        let mut want = Footprint::default();
        want.write(Resource::Advisory(3));
        assert_eq!(fp, want);
    }

    #[test]
    fn waiting_delete_does_not_see_rows_inserted_after_its_snapshot() {
        let mut d = db(3);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, lock(tag("a"), RowLock::ForUpdate));
        block(&mut d, 1, del(vec![("n", Value::Int(0))]));
        run(&mut d, 2, ins(2, "b", 0));
        run(&mut d, 0, Sql::Commit);
        assert_eq!(ready(&mut d, 1), rows(vec![row(1, "a", 0)]));
        assert_eq!(d.committed_rows("t"), vec![row(2, "b", 0)]);
    }

    #[test]
    fn on_conflict_on_a_partial_index_applies_only_inside_the_predicate() {
        let mut d = db(1);
        let job = |state| Sql::Insert {
            table: "jobs",
            row: vec![Value::Str("k"), Value::Str(state)],
            on_conflict: OnConflict::DoNothing { target: vec!["key"] },
        };
        assert_eq!(run(&mut d, 0, job("running")).rows().len(), 1);
        assert_eq!(run(&mut d, 0, job("running")), rows(vec![]));
        assert_eq!(run(&mut d, 0, job("done")).rows().len(), 1, "outside the predicate: no arbiter applies");
    }

    #[test]
    fn blocking_touches_the_waits_and_waking_touches_everything() {
        let mut d = db(2);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, add(vec![], 1));
        let mut fp = Footprint::default();
        assert_eq!(d.execute(1, &add(vec![], 1), &mut fp), Applied::Blocked);
        let mut waits = Footprint::default();
        waits.write(Resource::Waits);
        assert!(fp.conflicts(&waits), "waits feed deadlock detection");
        let mut table = Footprint::default();
        table.read(Resource::Table("t"));
        assert!(fp.conflicts(&table), "what it waits on");
        assert_ne!(fp, Footprint::GLOBAL);
        let mut fp = Footprint::default();
        d.execute(0, &Sql::Rollback, &mut fp);
        assert_eq!(fp, Footprint::GLOBAL);
        assert_eq!(ready(&mut d, 1), rows(vec![row(1, "a", 1)]));
    }

    #[test]
    fn independent_transactions_commute_to_equal_states() {
        let script = |first: ConnId| {
            let mut d = db(2);
            let second = 1 - first;
            run(&mut d, first, ins(10 + i64::from(first), ["x", "y"][usize::from(first)], 0));
            run(&mut d, second, ins(10 + i64::from(second), ["x", "y"][usize::from(second)], 0));
            d
        };
        let (a, b) = (script(0), script(1));
        assert_eq!(a.committed_rows("t").len(), 3);
        assert_ne!(a, b, "insertion order is observable");
        let mut a = a;
        let mut b = b;
        run(&mut a, 0, del(vec![("id", Value::Int(10))]));
        run(&mut b, 0, del(vec![("id", Value::Int(10))]));
        run(&mut a, 0, ins(10, "x", 0));
        run(&mut b, 0, ins(10, "x", 0));
        assert_eq!(a, b, "commit numbering does not depend on history");
    }

    /// Random statements from three sessions, with timeouts, injected errors and disconnects:
    /// the internal invariants hold throughout, and once every session has disconnected no
    /// lock, waiter or dead version remains.
    #[test]
    fn random_interleavings_keep_invariants() {
        let tags = ["a", "b", "c"];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..300 {
            let mut d = db(3);
            let mut fp = Footprint::default();
            for _ in 0..40 {
                let mut c = next(3) as ConnId;
                // Statements woken together race before anything else happens (as the explorer
                // enforces): one of them moves first.
                let woken: Vec<ConnId> = d.woken().collect();
                let racing = if woken.is_empty() { d.deadlocked().collect() } else { woken };
                if !racing.is_empty() {
                    c = racing[next(racing.len() as u64) as usize];
                    d.take_ready(c, &mut fp);
                    continue;
                }
                if d.sessions[usize::from(c)].pending.is_some() {
                    match next(4) {
                        0 => drop(d.cancel_wait(c, &mut fp)),
                        1 => d.disconnect(c, &mut fp),
                        _ => {}
                    }
                    continue;
                }
                if d.is_ready(c) {
                    d.take_ready(c, &mut fp);
                }
                let t = tags[next(3) as usize];
                let key = next(2) as i64;
                let scope = if next(2) == 0 { LockScope::Session } else { LockScope::Xact };
                let stmt = match next(16) {
                    0 | 1 => Sql::Begin,
                    2 => Sql::Commit,
                    3 => Sql::Rollback,
                    4 => ins(next(5) as i64, t, 0),
                    5 => upsert_add(next(5) as i64, 1),
                    6 => Sql::Insert {
                        table: "t",
                        row: row(9, t, 0),
                        on_conflict: OnConflict::DoNothing { target: vec!["tag"] },
                    },
                    7 => add(tag(t), 1),
                    8 => del(tag(t)),
                    9 => lock(
                        tag(t),
                        [RowLock::ForUpdate, RowLock::ForUpdateNowait, RowLock::ForUpdateSkipLocked][next(3) as usize],
                    ),
                    10 => sel(tag(t)),
                    11 => adv(key, scope),
                    12 => Sql::AdvisoryTryLock { key, scope },
                    13 => Sql::AdvisoryUnlock { key },
                    14 => Sql::SetLockTimeout(next(2) as u32),
                    _ => {
                        d.inject_error(c, &add(tag(t), 1), &mut fp);
                        continue;
                    }
                };
                d.execute(c, &stmt, &mut fp);
            }
            for c in 0..3 {
                d.disconnect(c, &mut fp);
            }
            assert!(d.advisory.is_empty() && d.wait_queue.is_empty());
            assert!(d.tables.iter().flatten().all(|r| r.locker.is_none() && r.versions.len() == 1));
        }
    }
}
