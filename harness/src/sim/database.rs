//! The world's database: the simulator, or a real server behind [`RealDb`].
//!
//! Models build their world with the simulator (schema, seed rows) and never know which one runs
//! their statements. A stateless explorer may [`Database::attach`] a real server after `init`:
//! from then on every statement runs there, and properties read committed rows from there.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use crate::op::{Applied, ConnId, Footprint, Outcome, Row, Sql, TableId};

use super::db::{Db, Schema};

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
        self.sim == other.sim && self.real.is_some() == other.real.is_some()
    }
}
impl Eq for Database {}
impl Hash for Database {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.sim.hash(state);
    }
}

impl Database {
    pub fn new(schema: Schema) -> Database {
        Database { sim: Db::new(schema), real: None }
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
    pub fn open_session(&mut self) -> ConnId {
        assert!(self.real.is_none(), "sessions are opened during init, before a server is attached");
        self.sim.open_session()
    }
    pub fn seed_row(&mut self, table: TableId, row: Row) {
        assert!(self.real.is_none(), "rows are seeded during init, before a server is attached");
        self.sim.seed_row(table, row);
    }
    pub fn execute(&mut self, conn: ConnId, stmt: &Sql, fp: &mut Footprint) -> Applied {
        match self.with_real(|r| r.execute(conn, stmt)) {
            Some(applied) => applied,
            None => self.sim.execute(conn, stmt, fp),
        }
    }
    pub fn is_ready(&self, conn: ConnId) -> bool {
        self.with_real(|r| r.is_ready(conn)).unwrap_or_else(|| self.sim.is_ready(conn))
    }
    pub fn take_ready(&mut self, conn: ConnId, fp: &mut Footprint) -> Option<Outcome> {
        match self.with_real(|r| r.take_ready(conn)) {
            Some(outcome) => outcome,
            None => self.sim.take_ready(conn, fp),
        }
    }
    pub fn cancel_wait(&mut self, conn: ConnId, fp: &mut Footprint) -> Outcome {
        match self.with_real(|r| r.cancel_wait(conn)) {
            Some(outcome) => outcome,
            None => self.sim.cancel_wait(conn, fp),
        }
    }
    pub fn inject_error(&mut self, conn: ConnId, stmt: &Sql, fp: &mut Footprint) -> Outcome {
        match self.with_real(|r| r.inject_error(conn, stmt)) {
            Some(outcome) => outcome,
            None => self.sim.inject_error(conn, stmt, fp),
        }
    }
    pub fn disconnect(&mut self, conn: ConnId, fp: &mut Footprint) {
        if self.with_real(|r| r.disconnect(conn)).is_none() {
            self.sim.disconnect(conn, fp);
        }
    }
    /// The rows of `table` as a new snapshot sees them.
    pub fn committed_rows(&self, table: TableId) -> Vec<Row> {
        self.with_real(|r| r.committed_rows(table)).unwrap_or_else(|| self.sim.committed_rows(table))
    }
}
