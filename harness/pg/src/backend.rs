//! The step-by-step controller as the world's database ([`RealDb`]), so that the explorers,
//! replay and conformance drive a real server exactly as they drive the simulator.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use racelab_harness::op::{Applied, ConnId, ErrorCode, Outcome, Row, Sql, TableId};
use racelab_harness::run::Backend;
use racelab_harness::sim::{RealDb, Schema};

use crate::{Cluster, PgError, Sessions};

/// [`Sessions`] behind the [`RealDb`] trait. Infrastructure errors cannot travel through the
/// trait's outcomes, so the first one is kept and every later call fails fast.
struct PgDb {
    sessions: Sessions,
    failure: Option<PgError>,
}

/// What an op returns once the server is lost: an error the actors handle like any other,
/// while the driver reads [`RealDb::failure`] and stops.
const LOST: Outcome = Outcome::Err(ErrorCode::CONNECTION_FAILURE);

impl PgDb {
    fn guard<T>(&mut self, lost: T, f: impl FnOnce(&mut Sessions) -> Result<T, PgError>) -> T {
        if self.failure.is_some() {
            return lost;
        }
        match f(&mut self.sessions) {
            Ok(v) => v,
            Err(e) => {
                self.failure = Some(e);
                SERVER_LOST.store(true, Ordering::SeqCst);
                lost
            }
        }
    }
}

impl RealDb for PgDb {
    fn reset(&mut self, _schema: &Schema, sessions: usize, seed: &[(TableId, Row)]) {
        assert_eq!(sessions, self.sessions.len(), "one controller per scenario");
        self.guard((), |s| s.reset(seed));
    }
    fn execute(&mut self, conn: ConnId, stmt: &Sql) -> Applied {
        self.guard(Applied::Done(LOST), |s| s.execute(conn, stmt))
    }
    fn is_ready(&self, conn: ConnId) -> bool {
        self.failure.is_none() && self.sessions.is_ready(conn)
    }
    fn take_ready(&mut self, conn: ConnId) -> Option<Outcome> {
        if self.failure.is_some() {
            return Some(LOST);
        }
        self.sessions.take_ready(conn)
    }
    fn cancel_wait(&mut self, conn: ConnId) -> Outcome {
        self.guard(LOST, |s| s.cancel_wait(conn))
    }
    fn inject_error(&mut self, conn: ConnId, stmt: &Sql) -> Outcome {
        self.guard(LOST, |s| s.inject_error(conn, stmt))
    }
    fn disconnect(&mut self, conn: ConnId) {
        self.guard((), |s| s.disconnect(conn));
    }
    fn committed_rows(&mut self, table: TableId) -> Vec<Row> {
        self.guard(Vec::new(), |s| s.committed_rows(table))
    }
    fn failure(&self) -> Option<String> {
        self.failure.as_ref().map(|e| e.to_string())
    }
}

static SERVER_LOST: AtomicBool = AtomicBool::new(false);

/// Record that a backend of this process lost its server (see [`server_lost`]).
pub(crate) fn mark_server_lost() {
    SERVER_LOST.store(true, Ordering::SeqCst);
}

/// Has some controller of this process lost its server (a connection terminated, the server
/// gone)? Models and explorers may then panic on the outcomes they were never meant to see;
/// the caller reports the failure instead of the panic.
pub fn server_lost() -> bool {
    SERVER_LOST.load(Ordering::SeqCst)
}

/// A `postgres` backend for a world with this schema and this many connections.
pub fn postgres(
    cluster: &Cluster,
    schema: &Schema,
    text_columns: &[(&str, &str)],
    sessions: usize,
) -> Result<Backend, PgError> {
    let sessions = Sessions::open(cluster, schema, text_columns, sessions)?;
    Ok(Backend::Real { name: "postgres", db: Arc::new(Mutex::new(PgDb { sessions, failure: None })) })
}
