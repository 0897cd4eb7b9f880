//! The world's database: the simulator, or a real server behind [`RealDb`].
//!
//! Models build their world with the simulator (schema, seed rows) and never know which one runs
//! their statements. A stateless explorer may [`Database::attach`] a real server after `init`:
//! from then on every statement runs there, and properties read committed rows from there.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use crate::explore::state::ByteSink;

use crate::op::{ActorId, Applied, ConnId, ErrorCode, Footprint, Outcome, Row, Sql, SqlOp, TableId};

use super::db::{Db, Schema};
use super::subsystem::Subsystem;
use crate::symmetry::Renaming;

/// A real database server driven one statement at a time. Mirrors [`Db`]'s stepping API.
pub trait RealDb: Send {
    /// Start over: recreate `schema` with `seed` rows, and `sessions` fresh connections.
    fn reset(&mut self, schema: &Schema, sessions: usize, seed: &[(TableId, Row)]);
    fn execute(&mut self, conn: ConnId, stmt: &Sql) -> Applied;
    fn is_ready(&self, conn: ConnId) -> bool;
    fn take_ready(&mut self, conn: ConnId) -> Option<Outcome>;
    fn cancel_wait(&mut self, conn: ConnId) -> Outcome;
    fn inject_error(&mut self, conn: ConnId, stmt: &Sql) -> Outcome;
    fn disconnect(&mut self, conn: ConnId);
    fn committed_rows(&mut self, table: TableId) -> Vec<Row>;
    /// Sessions whose statements wait on a cycle that the server will break by failing one of
    /// them with 40P01, while the explorer has not yet picked which (see [`Db::deadlocked`]):
    /// each is ready, and [`RealDb::take_ready`] of one makes it the victim. A server that
    /// cannot realise the pick reports a [`RealDb::failure`].
    fn deadlocked(&self) -> Vec<ConnId> {
        Vec::new()
    }
    /// The first infrastructure failure (a lost server, a timeout), if any. Outcomes after one
    /// are meaningless, so whoever drives the backend must check this after every run.
    fn failure(&self) -> Option<String>;
}

/// A real server shared by the runs of one exploration.
pub type SharedDb = Arc<Mutex<dyn RealDb>>;

#[derive(Clone, Debug)]
pub struct Database {
    /// The simulator; with a real server attached, only its schema and session count are used.
    sim: Db,
    real: Option<Real>,
    /// The actor that owns each connection; its crash closes them. Fixed once init is over, so
    /// states share it and it is not hashed.
    conn_owner: Arc<Vec<ActorId>>,
    /// The connection each actor's statement waits on, indexed by actor.
    waiting_on: Vec<Option<ConnId>>,
}

#[derive(Clone)]
struct Real(SharedDb);

impl std::fmt::Debug for Real {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RealDb")
    }
}

/// A real server's state is outside the world: worlds with one attached compare by simulator
/// state only, and exhaustive search (which relies on equality) refuses them.
impl PartialEq for Database {
    fn eq(&self, other: &Self) -> bool {
        self.sim == other.sim
            && self.real.is_some() == other.real.is_some()
            && self.conn_owner == other.conn_owner
            && self.waiting_on == other.waiting_on
    }
}
impl Eq for Database {}
impl Hash for Database {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.sim.hash(state);
        self.waiting_on.hash(state);
    }
}

impl Database {
    pub fn new(schema: Schema) -> Database {
        Database { sim: Db::new(schema), real: None, conn_owner: Arc::default(), waiting_on: Vec::new() }
    }

    /// Open a connection owned by `actor`; it closes when the actor's process crashes.
    pub fn connect(&mut self, actor: ActorId) -> ConnId {
        assert!(actor < crate::op::MAX_ACTORS);
        let conn = self.open_session();
        assert_eq!(usize::from(conn), self.conn_owner.len());
        Arc::make_mut(&mut self.conn_owner).push(actor);
        // Sized once, during init, so that equal states have equal vectors.
        if self.waiting_on.len() <= actor {
            self.waiting_on.resize(actor + 1, None);
        }
        conn
    }

    /// How many connections the model opened.
    pub fn connections(&self) -> usize {
        self.conn_owner.len()
    }

    /// Run every statement from now on against `real`, starting from the simulator's committed
    /// rows (the model's seed data).
    pub fn attach(&mut self, real: SharedDb, sessions: usize) {
        let seed: Vec<(TableId, Row)> = self
            .sim
            .schema()
            .tables
            .iter()
            .flat_map(|t| self.sim.committed_rows(t.name).into_iter().map(move |r| (t.name, r)))
            .collect();
        real.lock().expect("real database lock").reset(self.sim.schema(), sessions, &seed);
        self.real = Some(Real(real));
    }

    pub fn is_simulated(&self) -> bool {
        self.real.is_none()
    }

    fn with_real<T>(&self, f: impl FnOnce(&mut dyn RealDb) -> T) -> Option<T> {
        self.real.as_ref().map(|r| f(&mut *r.0.lock().expect("real database lock")))
    }

    pub fn schema(&self) -> &Schema {
        self.sim.schema()
    }
    fn open_session(&mut self) -> ConnId {
        assert!(self.real.is_none(), "sessions are opened during init, before a server is attached");
        self.sim.open_session()
    }
    pub fn seed_row(&mut self, table: TableId, row: Row) {
        assert!(self.real.is_none(), "rows are seeded during init, before a server is attached");
        self.sim.seed_row(table, row);
    }
    fn execute(&mut self, conn: ConnId, stmt: &Sql, fp: &mut Footprint) -> Applied {
        match self.with_real(|r| r.execute(conn, stmt)) {
            Some(applied) => applied,
            None => self.sim.execute(conn, stmt, fp),
        }
    }
    fn conn_is_ready(&self, conn: ConnId) -> bool {
        self.with_real(|r| r.is_ready(conn)).unwrap_or_else(|| self.sim.is_ready(conn))
    }
    fn disconnect(&mut self, conn: ConnId, fp: &mut Footprint) {
        if self.with_real(|r| r.disconnect(conn)).is_none() {
            self.sim.disconnect(conn, fp);
        }
    }
    fn waiting_conn(&self, actor: ActorId) -> Option<ConnId> {
        self.waiting_on.get(actor).copied().flatten()
    }
    fn take_waiting_conn(&mut self, actor: ActorId) -> ConnId {
        self.waiting_on[actor].take().unwrap_or_else(|| panic!("actor {actor} waits on no connection"))
    }
    /// Actors whose statements race: those woken together (the simulator only: on a real server
    /// that race is over by the time the controller looks), else those on a wait-for cycle, one
    /// of which will be the deadlock's victim. A woken race is over within microseconds on a
    /// server, a deadlock check takes `deadlock_timeout`: woken statements go first.
    pub fn racing_actors(&self) -> Vec<ActorId> {
        let conns: Vec<ConnId> = match self.with_real(|r| r.deadlocked()) {
            Some(deadlocked) => deadlocked,
            None => {
                let woken: Vec<ConnId> = self.sim.woken().collect();
                if woken.is_empty() {
                    self.sim.deadlocked().collect()
                } else {
                    woken
                }
            }
        };
        let mut actors: Vec<ActorId> = conns.into_iter().map(|c| self.conn_owner[usize::from(c)]).collect();
        actors.sort_unstable();
        actors.dedup();
        actors
    }

    /// What `actor`'s sessions hold and wait for, independent of which identical actor it is
    /// (see [`Db::conn_signature`]).
    pub(crate) fn actor_signature(&self, actor: ActorId, r: &Renaming, out: &mut ByteSink<'_>) {
        let conns = self.conn_owner.iter().enumerate().filter(|&(_, &o)| o == actor);
        conns.clone().count().hash(out);
        for (c, _) in conns {
            self.sim.conn_signature(c as ConnId, r, out);
        }
    }

    /// The owner of each connection, indexed by connection.
    pub fn conn_owners(&self) -> &[ActorId] {
        &self.conn_owner
    }

    /// The rows of `table` as a new snapshot sees them.
    pub fn committed_rows(&self, table: TableId) -> Vec<Row> {
        self.with_real(|r| r.committed_rows(table)).unwrap_or_else(|| self.sim.committed_rows(table))
    }
}

impl Subsystem for Database {
    type Op = SqlOp;

    fn name(&self) -> &'static str {
        "database"
    }

    /// Another session changes only when a wait ends (a grant, a wake, a deadlock victim) or a
    /// transaction aborts, which all make the footprint global, or when settling renumbers its
    /// snapshot, which says so.
    fn reports_signature_changes(&self) -> bool {
        true
    }

    fn apply(&mut self, actor: ActorId, op: &SqlOp, fp: &mut Footprint) -> Applied {
        let owner = self.conn_owner.get(usize::from(op.conn)).copied();
        assert_eq!(owner, Some(actor), "connection {} is not actor {actor}'s", op.conn);
        let applied = self.execute(op.conn, &op.stmt, fp);
        if applied == Applied::Blocked {
            self.waiting_on[actor] = Some(op.conn);
        }
        applied
    }

    fn is_ready(&self, actor: ActorId) -> bool {
        self.waiting_conn(actor).is_some_and(|c| self.conn_is_ready(c))
    }

    fn take_ready(&mut self, actor: ActorId, fp: &mut Footprint) -> Option<Outcome> {
        let conn = self.waiting_conn(actor)?;
        let outcome = match self.with_real(|r| r.take_ready(conn)) {
            Some(outcome) => outcome,
            None => self.sim.take_ready(conn, fp),
        }?;
        self.waiting_on[actor] = None;
        Some(outcome)
    }

    fn cancel_wait(&mut self, actor: ActorId, fp: &mut Footprint) -> Outcome {
        let conn = self.take_waiting_conn(actor);
        match self.with_real(|r| r.cancel_wait(conn)) {
            Some(outcome) => outcome,
            None => self.sim.cancel_wait(conn, fp),
        }
    }

    fn inject_error(&mut self, _actor: ActorId, op: &SqlOp, fp: &mut Footprint) -> Outcome {
        match self.with_real(|r| r.inject_error(op.conn, &op.stmt)) {
            Some(outcome) => outcome,
            None => self.sim.inject_error(op.conn, &op.stmt, fp),
        }
    }

    /// The statement ran to completion on the server, but the client gave up on it first: a
    /// client-side `statement_timeout` or cancel that arrived too late (57014), or, for a lock,
    /// `lock_timeout` firing after the grant (55P03, PostgreSQL bug #17686). The server keeps
    /// what the statement did: a commit stays committed, a lock stays held.
    fn lose_reply(&mut self, _actor: ActorId, op: &SqlOp, _outcome: Outcome, fp: &mut Footprint) -> Outcome {
        fp.global();
        match op.stmt {
            Sql::AdvisoryLock { .. } => Outcome::Err(ErrorCode::LOCK_NOT_AVAILABLE),
            _ => Outcome::Err(ErrorCode::QUERY_CANCELED),
        }
    }

    fn on_crash(&mut self, dead: &[ActorId], fp: &mut Footprint) {
        for &actor in dead {
            if let Some(w) = self.waiting_on.get_mut(actor) {
                *w = None;
            }
            for conn in 0..self.conn_owner.len() {
                if self.conn_owner[conn] == actor {
                    self.disconnect(conn as ConnId, fp);
                }
            }
        }
    }

    fn renamable(&self) -> Result<(), String> {
        match self.real {
            Some(_) => Err("a real database server cannot be renamed".to_string()),
            None => Ok(()),
        }
    }

    /// Connection ownership is unchanged: a renaming sends each connection to the one at the
    /// same position of the new owner.
    fn rename(&mut self, r: &Renaming) {
        assert!(self.real.is_none());
        // Without a connection no statement ever ran: nothing here names an actor.
        if self.conn_owner.is_empty() {
            return;
        }
        self.sim.rename(r);
        for conn in self.waiting_on.iter_mut().flatten() {
            *conn = r.conn(*conn);
        }
        if self.waiting_on.len() == r.len() {
            r.permute(&mut self.waiting_on);
        } else {
            // Sized by the highest actor that connected: pad, permute, trim.
            let n = self.waiting_on.len();
            self.waiting_on.resize(r.len(), None);
            r.permute(&mut self.waiting_on);
            assert!(
                self.waiting_on[n..].iter().all(Option::is_none),
                "a renaming moved a wait past the connected actors"
            );
            self.waiting_on.truncate(n);
        }
    }

    fn fixed_by(&self, r: &Renaming) -> bool {
        // See `rename`.
        self.conn_owner.is_empty() || {
            let mut renamed = self.clone();
            renamed.rename(r);
            renamed == *self
        }
    }

    fn describe(&self) -> Vec<String> {
        let locks = if self.is_simulated() { self.sim.describe_locks() } else { Vec::new() };
        self.schema()
            .tables
            .iter()
            .map(|table| {
                let shown: Vec<String> = self
                    .committed_rows(table.name)
                    .iter()
                    .map(|r| {
                        let cells: Vec<String> = table.columns.iter().zip(r).map(|(c, v)| format!("{c}={v}")).collect();
                        format!("({})", cells.join(", "))
                    })
                    .collect();
                let rows = if shown.is_empty() { "no rows".into() } else { shown.join(" ") };
                format!("{}: {rows}", table.name)
            })
            .chain(locks)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{Expr, LockScope, Value};
    use crate::sim::db::TableDef;

    fn apply(db: &mut Database, actor: ActorId, stmt: Sql) -> Applied {
        db.apply(actor, &SqlOp { conn: actor as ConnId, stmt }, &mut Footprint::default())
    }

    fn bump(id: i64) -> Sql {
        Sql::Update { table: "t", filter: vec![("id", Value::Int(id))], set: vec![("n", Expr::Add("n", 1))] }
    }

    #[test]
    fn statements_woken_together_race_before_a_deadlock_check() {
        let mut db =
            Database::new(Schema { tables: vec![TableDef { name: "t", columns: vec!["id", "n"], unique: vec![] }] });
        db.seed_row("t", vec![Value::Int(1), Value::Int(0)]);
        for actor in 0..5 {
            db.connect(actor);
        }
        let done = Applied::Done(Outcome::Ok);
        // Actors 3 and 4 deadlock on advisory locks; actors 1 and 2 wait for actor 0's row.
        for (actor, key) in [(3, 30), (4, 40)] {
            assert_eq!(apply(&mut db, actor, Sql::Begin), done);
            assert_eq!(apply(&mut db, actor, Sql::AdvisoryLock { key, scope: LockScope::Xact }), done);
        }
        assert_eq!(apply(&mut db, 0, Sql::Begin), done);
        assert!(matches!(apply(&mut db, 0, bump(1)), Applied::Done(_)));
        assert_eq!(apply(&mut db, 1, bump(1)), Applied::Blocked);
        assert_eq!(apply(&mut db, 2, bump(1)), Applied::Blocked);
        assert_eq!(apply(&mut db, 3, Sql::AdvisoryLock { key: 40, scope: LockScope::Xact }), Applied::Blocked);
        assert_eq!(apply(&mut db, 4, Sql::AdvisoryLock { key: 30, scope: LockScope::Xact }), Applied::Blocked);
        assert_eq!(db.racing_actors(), [3, 4], "the deadlock's members race for the victim");
        assert_eq!(apply(&mut db, 0, Sql::Commit), done);
        assert_eq!(db.racing_actors(), [1, 2], "the woken statements go first");
        assert!(db.take_ready(2, &mut Footprint::default()).is_some());
        assert_eq!(db.racing_actors(), [3, 4], "then the deadlock check");
        assert_eq!(db.take_ready(4, &mut Footprint::default()), Some(Outcome::Err(ErrorCode::DEADLOCK_DETECTED)));
        assert!(db.racing_actors().is_empty());
        assert_eq!(db.take_ready(3, &mut Footprint::default()), Some(Outcome::Ok));
    }
}
