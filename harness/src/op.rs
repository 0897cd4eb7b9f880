//! Operations that actors emit and the outcomes that backends return.
//!
//! An [`Op`] is pure data: it names what an actor wants done, never how. The simulated world
//! ([`crate::sim::World`]) and, later, a real PostgreSQL server execute the same ops.

use std::fmt;

use crate::sim::subsystem::{PartOp, PartOpBox};

/// Index of an actor within a scenario (at most [`MAX_ACTORS`]).
pub type ActorId = usize;
/// Index of a database connection (session) within a scenario.
pub type ConnId = u8;
/// A column, by name (ops name their columns so that they render as SQL as they are).
pub type Col = &'static str;
/// A table, by name.
pub type TableId = &'static str;
/// A simulated process id.
pub type Pid = u32;

/// Upper bound on actors per scenario; schedule tokens spend 5 bits on the actor.
pub const MAX_ACTORS: usize = 32;

/// A scalar value in a row, a file or a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Null,
    Int(i64),
    Str(&'static str),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

/// One row: values in column order.
pub type Row = Vec<Value>;

/// A conjunction of `column = value` tests.
pub type Filter = Vec<(Col, Value)>;

/// The right-hand side of `SET col = …`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expr {
    /// A constant.
    Value(Value),
    /// `col + n` on the row being updated.
    Add(Col, i64),
    /// `EXCLUDED.col` in `ON CONFLICT DO UPDATE`.
    Excluded(Col),
}

/// `FOR UPDATE` and its wait policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowLock {
    /// `FOR UPDATE`: wait for the holder.
    ForUpdate,
    /// `FOR UPDATE NOWAIT`: fail with 55P03 instead of waiting.
    ForUpdateNowait,
    /// `FOR UPDATE SKIP LOCKED`: leave locked rows out.
    ForUpdateSkipLocked,
}

/// What `INSERT` does when a unique index already holds the key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OnConflict {
    /// Plain `INSERT`: raise 23505.
    Error,
    /// `ON CONFLICT (cols) DO NOTHING`.
    DoNothing { target: Vec<Col> },
    /// `ON CONFLICT (cols) DO UPDATE SET …`.
    DoUpdate { target: Vec<Col>, set: Vec<(Col, Expr)> },
}

/// Scope of an advisory lock: released at session end or at transaction end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockScope {
    Session,
    Xact,
}

/// One SQL statement, structured so that it can be both simulated and rendered as SQL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Sql {
    Begin,
    /// `BEGIN ISOLATION LEVEL REPEATABLE READ`: one snapshot for the whole transaction, taken by
    /// its first statement; a write to a row that changed since fails with 40001.
    BeginRepeatableRead,
    Commit,
    Rollback,
    /// `SET lock_timeout = ms` (0 disables it).
    SetLockTimeout(u32),
    /// `SELECT * FROM table WHERE filter [FOR UPDATE …]`: returns the rows.
    Select {
        table: TableId,
        filter: Filter,
        lock: Option<RowLock>,
    },
    /// `INSERT INTO table VALUES (row) [ON CONFLICT …] RETURNING *`: returns the rows written.
    Insert {
        table: TableId,
        row: Row,
        on_conflict: OnConflict,
    },
    /// `UPDATE table SET … WHERE filter RETURNING *`: returns the rows written.
    Update {
        table: TableId,
        filter: Filter,
        set: Vec<(Col, Expr)>,
    },
    /// `DELETE FROM table WHERE filter RETURNING *`: returns the rows deleted.
    Delete {
        table: TableId,
        filter: Filter,
    },
    /// `pg_advisory_lock` / `pg_advisory_xact_lock`: waits; returns `Ok`.
    AdvisoryLock {
        key: i64,
        scope: LockScope,
    },
    /// `pg_try_advisory_lock` / `pg_try_advisory_xact_lock`: returns `Bool`.
    AdvisoryTryLock {
        key: i64,
        scope: LockScope,
    },
    /// `pg_advisory_unlock`: returns `Bool` (false when not held at session level).
    AdvisoryUnlock {
        key: i64,
    },
    /// `pg_advisory_unlock_all()`.
    AdvisoryUnlockAll,
}

/// Operations on the simulated operating system: processes, files and `flock`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OsOp {
    /// First op of a dormant actor: waits until some process spawns it. Returns its `Pid`.
    AwaitSpawn,
    /// Start the dormant actor as a new process. Returns the child's `Pid`.
    SpawnProcess { actor: ActorId },
    /// Start the dormant actor as a task inside the caller's own process. Returns `Ok`.
    SpawnTask { actor: ActorId },
    /// Read a whole file. Returns `Value` (`Value::Null` for an empty file) or `Err(ENOENT)`.
    ReadFile { path: &'static str },
    /// Replace a file's content. Returns `Ok`.
    WriteFile { path: &'static str, content: Value },
    /// Remove a file. Returns `Ok` or `Err(ENOENT)`.
    RemoveFile { path: &'static str },
    /// `kill(pid, 0)`: returns `Bool`.
    IsAlive { pid: Pid },
    /// `flock(LOCK_EX)`, blocking or `LOCK_NB` (then `Err(EWOULDBLOCK)` when held elsewhere).
    Flock { path: &'static str, nonblocking: bool },
    /// `flock(LOCK_UN)`. Returns `Ok`.
    Funlock { path: &'static str },
    /// The process exits normally; its flocks are released. Returns `Ok`.
    Exit,
}

/// Operations at an HTTP boundary between a client actor and a server actor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HttpOp {
    /// Client: send a request and wait for the response. Returns `Status` or `Err(ECONNRESET)`.
    Request { route: &'static str, arg: Value },
    /// Server: wait for the next request on `route`. Returns `Value(arg)`.
    Accept { route: &'static str },
    /// Server: answer the request it accepted last. Returns `Ok`.
    Respond { status: u16 },
}

/// A statement on one of the actor's database connections.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SqlOp {
    pub conn: ConnId,
    pub stmt: Sql,
}

/// What an operation does: which subsystem of the world runs it, and with what.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// For the database.
    Sql(SqlOp),
    /// For the operating system.
    Os(OsOp),
    /// For the HTTP boundary.
    Http(HttpOp),
    /// For a part the model added to its world ([`crate::sim::World::add_part`]).
    Part(PartOpBox),
    /// A step with no effect on the world (a decision, a sleep). It still yields a schedule point.
    Local,
}

impl PartOp for SqlOp {
    /// Transaction control and unlocking do not fail in the models; every other statement can.
    fn is_fallible(&self) -> bool {
        !matches!(
            self.stmt,
            Sql::Begin
                | Sql::BeginRepeatableRead
                | Sql::Rollback
                | Sql::SetLockTimeout(_)
                | Sql::AdvisoryUnlock { .. }
                | Sql::AdvisoryUnlockAll
        )
    }
}

impl PartOp for OsOp {
    fn is_fallible(&self) -> bool {
        matches!(
            self,
            OsOp::ReadFile { .. } | OsOp::WriteFile { .. } | OsOp::SpawnProcess { .. } | OsOp::SpawnTask { .. }
        )
    }
}

impl PartOp for HttpOp {
    fn is_fallible(&self) -> bool {
        matches!(self, HttpOp::Request { .. })
    }
}

impl fmt::Display for SqlOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::render::sql_args(&self.stmt))
    }
}
impl fmt::Display for OsOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::render::os_args(self))
    }
}
impl fmt::Display for HttpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::render::http_args(self))
    }
}

/// An operation together with the application-level name shown in timelines
/// (`find` for `SELECT … WHERE tag = $1`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Op {
    pub name: &'static str,
    pub kind: OpKind,
}

impl Op {
    pub fn sql(name: &'static str, conn: ConnId, stmt: Sql) -> Op {
        Op { name, kind: OpKind::Sql(SqlOp { conn, stmt }) }
    }
    pub fn os(name: &'static str, op: OsOp) -> Op {
        Op { name, kind: OpKind::Os(op) }
    }
    pub fn http(name: &'static str, op: HttpOp) -> Op {
        Op { name, kind: OpKind::Http(op) }
    }
    pub fn local(name: &'static str) -> Op {
        Op { name, kind: OpKind::Local }
    }

    /// May an injected error replace this op's outcome, or its reply be lost? Each subsystem's
    /// op type says ([`PartOp::is_fallible`]); pure local steps never fail.
    pub fn is_fallible(&self) -> bool {
        match &self.kind {
            OpKind::Sql(op) => op.is_fallible(),
            OpKind::Os(op) => op.is_fallible(),
            OpKind::Http(op) => op.is_fallible(),
            OpKind::Part(op) => op.op.fallible(),
            OpKind::Local => false,
        }
    }

    /// The label shown in a timeline cell, such as `find(tag=s1)`.
    pub fn label(&self) -> String {
        let args = match &self.kind {
            OpKind::Sql(op) => op.to_string(),
            OpKind::Os(op) => op.to_string(),
            OpKind::Http(op) => op.to_string(),
            OpKind::Part(op) => op.op.args(),
            OpKind::Local => String::new(),
        };
        format!("{}{args}", self.name)
    }
}

/// An error code: a PostgreSQL SQLSTATE (`23505`), an errno name (`EWOULDBLOCK`), or
/// `EIO`-style codes for injected faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub &'static str);

impl ErrorCode {
    pub const UNIQUE_VIOLATION: ErrorCode = ErrorCode("23505");
    pub const IN_FAILED_SQL_TRANSACTION: ErrorCode = ErrorCode("25P02");
    pub const NO_ACTIVE_SQL_TRANSACTION: ErrorCode = ErrorCode("25P01");
    pub const ACTIVE_SQL_TRANSACTION: ErrorCode = ErrorCode("25001");
    pub const DEADLOCK_DETECTED: ErrorCode = ErrorCode("40P01");
    pub const SERIALIZATION_FAILURE: ErrorCode = ErrorCode("40001");
    pub const LOCK_NOT_AVAILABLE: ErrorCode = ErrorCode("55P03");
    pub const QUERY_CANCELED: ErrorCode = ErrorCode("57014");
    pub const CONNECTION_FAILURE: ErrorCode = ErrorCode("08006");
    pub const IO_ERROR: ErrorCode = ErrorCode("58030");
    pub const ENOENT: ErrorCode = ErrorCode("ENOENT");
    pub const EEXIST: ErrorCode = ErrorCode("EEXIST");
    pub const EWOULDBLOCK: ErrorCode = ErrorCode("EWOULDBLOCK");
    pub const EIO: ErrorCode = ErrorCode("EIO");
    pub const ETIMEDOUT: ErrorCode = ErrorCode("ETIMEDOUT");
    pub const ECONNRESET: ErrorCode = ErrorCode("ECONNRESET");
    pub const EDEADLK: ErrorCode = ErrorCode("EDEADLK");

    /// PostgreSQL's condition name for a SQLSTATE, or the code itself.
    pub fn name(self) -> &'static str {
        match self.0 {
            "23505" => "unique_violation",
            "25P02" => "in_failed_sql_transaction",
            "25P01" => "no_active_sql_transaction",
            "25001" => "active_sql_transaction",
            "40P01" => "deadlock_detected",
            "40001" => "serialization_failure",
            "55P03" => "lock_not_available",
            "57014" => "query_canceled",
            "08006" => "connection_failure",
            "58030" => "io_error",
            other => other,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name() == self.0 {
            f.write_str(self.0)
        } else {
            write!(f, "{} {}", self.0, self.name())
        }
    }
}

/// The result of an operation, as the actor sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    /// Rows returned (by `SELECT`, or by `RETURNING *`).
    Rows(Vec<Row>),
    Bool(bool),
    Pid(Pid),
    Value(Value),
    /// An HTTP status received by a client.
    Status(u16),
    Err(ErrorCode),
}

impl Outcome {
    pub fn is_err(&self) -> bool {
        matches!(self, Outcome::Err(_))
    }
    /// The rows of a `Rows` outcome; empty for anything else.
    pub fn rows(&self) -> &[Row] {
        match self {
            Outcome::Rows(r) => r,
            _ => &[],
        }
    }
}

/// Result of asking a backend to apply an op.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Applied {
    Done(Outcome),
    /// The op waits for a lock, row, process or response held by another actor. The backend has
    /// queued it; its outcome arrives later through [`crate::sim::World::take_ready`].
    Blocked,
}

/// Resources an applied transition read and wrote, as a 64-bit Bloom-style set. Two
/// transitions commute when neither writes what the other touches. Collisions only make
/// more transitions dependent, which is safe.
///
/// It also says which actors, besides the one that moved, may now hold or wait for something
/// else ([`crate::sim::Subsystem::actor_signature`]), so that a symmetry's sort keys are made
/// again for those actors only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Footprint {
    pub reads: u64,
    pub writes: u64,
    /// Bit `a`: actor `a`'s share of the world may have changed.
    pub signatures: u32,
}

impl Footprint {
    /// Touches everything: transaction ends, crashes, injected faults.
    pub const GLOBAL: Footprint = Footprint { reads: u64::MAX, writes: u64::MAX, signatures: u32::MAX };

    pub fn read(&mut self, r: Resource) {
        self.reads |= r.bit();
    }
    pub fn write(&mut self, r: Resource) {
        self.writes |= r.bit();
    }
    pub fn global(&mut self) {
        *self = Footprint::GLOBAL;
    }
    /// What the world keeps about `actor` may have changed.
    pub fn signature_changed(&mut self, actor: ActorId) {
        const _: () = assert!(MAX_ACTORS <= 32, "one bit an actor");
        self.signatures |= 1 << actor;
    }
    /// What the world keeps about any actor may have changed.
    pub fn signatures_changed(&mut self) {
        self.signatures = u32::MAX;
    }
    pub fn conflicts(&self, other: &Footprint) -> bool {
        (self.writes & (other.reads | other.writes)) != 0 || (other.writes & self.reads) != 0
    }
}

/// Something in the world that transitions share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    Table(TableId),
    /// Transaction commit order: every snapshot reads it, every commit writes it.
    Commits,
    Advisory(i64),
    File(&'static str),
    Flock(&'static str),
    Processes,
    Http,
    /// Who waits for whom in the database (deadlock detection and the grant order read it).
    Waits,
    /// Anything of a model-defined part, by a key the part chooses (a lock id, a cache key).
    Custom(u64),
}

impl Resource {
    /// A fixed bit layout: 16 table bits, 1 commit bit, 16 advisory bits, 12 file bits,
    /// 12 flock bits, 2 more, and 5 for model-defined parts. Same resource, same bit, in every run.
    fn bit(self) -> u64 {
        let slot = match self {
            Resource::Table(t) => fnv(t) % 16,
            Resource::Commits => 16,
            Resource::Advisory(k) => 17 + k.rem_euclid(16) as u64,
            Resource::File(p) => 33 + fnv(p) % 12,
            Resource::Flock(p) => 45 + fnv(p) % 12,
            Resource::Processes => 57,
            Resource::Http => 58,
            // Shares the HTTP bit (every bit is taken); few models wait on both.
            Resource::Waits => 58,
            Resource::Custom(k) => 59 + k % 5,
        };
        1u64 << slot
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
