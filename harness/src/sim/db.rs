//! A PostgreSQL-like database at READ COMMITTED. (Stub: the full simulator replaces it.)

use crate::op::{Applied, Col, ConnId, Footprint, Outcome, Row, Sql, TableId, Value};

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

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Db {
    schema: Schema,
    sessions: u8,
}

impl Db {
    pub fn new(schema: Schema) -> Db {
        Db { schema, sessions: 0 }
    }
    pub fn schema(&self) -> &Schema {
        &self.schema
    }
    /// Open a new session; returns its connection id (0, 1, 2, … in order).
    pub fn open_session(&mut self) -> ConnId {
        self.sessions += 1;
        self.sessions - 1
    }
    /// Insert a row as if by an earlier, committed transaction (initial data).
    pub fn seed_row(&mut self, _table: TableId, _row: Row) {}
    pub fn execute(&mut self, _conn: ConnId, _stmt: &Sql, _fp: &mut Footprint) -> Applied {
        Applied::Done(Outcome::Ok)
    }
    pub fn is_ready(&self, _conn: ConnId) -> bool {
        false
    }
    pub fn take_ready(&mut self, _conn: ConnId, _fp: &mut Footprint) -> Option<Outcome> {
        None
    }
    pub fn cancel_wait(&mut self, _conn: ConnId, _fp: &mut Footprint) -> Outcome {
        Outcome::Err(crate::op::ErrorCode::QUERY_CANCELED)
    }
    pub fn inject_error(&mut self, _conn: ConnId, _stmt: &Sql, _fp: &mut Footprint) -> Outcome {
        Outcome::Err(crate::op::ErrorCode::IO_ERROR)
    }
    pub fn disconnect(&mut self, _conn: ConnId, _fp: &mut Footprint) {}
    /// The rows of `table` as a new snapshot sees them, in insertion order.
    pub fn committed_rows(&self, _table: TableId) -> Vec<Row> {
        Vec::new()
    }
}
