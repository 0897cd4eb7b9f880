//! The step-by-step controller as the world's database ([`RealDb`]), so that the explorers,
//! replay and conformance drive a real server exactly as they drive the simulator.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use racelab_harness::op::{Applied, ConnId, ErrorCode, Outcome, Row, Sql, TableId};
use racelab_harness::run::Backend;
use racelab_harness::sim::{RealDb, Schema};

use crate::{Cluster, PgError, Pin, Sessions};

/// [`Sessions`] behind the [`RealDb`] trait. Infrastructure errors cannot travel through the
/// trait's outcomes, so the first one is kept and every later call fails fast.
///
/// The deadlock victim: the explorer picks it among the members of a cycle after PostgreSQL has
/// already broken the cycle (with its 1 ms `deadlock_timeout`, by failing the statement that
/// closed it). When the pick is another member, the run so far is repeated from its reset with
/// that victim pinned ([`Pin`]): every call since the reset is made again, and must give what it
/// gave the first time, and then the pick. The cost falls on those picks only.
struct PgDb {
    sessions: Sessions,
    failure: Option<PgError>,
    /// The seed rows of the run, for repeating it.
    seed: Vec<(TableId, Row)>,
    /// Every call since the reset that changed the server, with what it returned.
    calls: Vec<Call>,
    /// Victims pinned for this run.
    pins: Vec<Pin>,
}

/// A call to the server, with its result, as [`PgDb`] repeats it.
#[derive(Clone, Debug, PartialEq)]
enum Call {
    Execute(ConnId, Sql, Applied),
    TakeReady(ConnId, Option<Outcome>),
    CancelWait(ConnId, Outcome),
    InjectError(ConnId, Sql, Outcome),
    Disconnect(ConnId),
}

/// How often a run is repeated for one pick of a victim before giving up: each repeat after the
/// first doubles the pinned victim's `deadlock_timeout`.
const PIN_ATTEMPTS: u32 = 4;

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

impl PgDb {
    /// Make `conn`, a member of a deadlock, its victim (see [`PgDb`]).
    fn pick_victim(&mut self, conn: ConnId) -> Result<Outcome, PgError> {
        for _ in 0..PIN_ATTEMPTS {
            let pin = match self.sessions.pick_victim(conn) {
                Ok(outcome) => return Ok(outcome),
                Err(pin) => pin,
            };
            match self.pins.iter_mut().find(|p| p.victim == pin.victim) {
                // Pinned already, and still not the victim: it checked before the cycle closed.
                Some(p) => {
                    p.delay = (p.delay * 2).max(pin.delay);
                    for o in pin.others {
                        if !p.others.contains(&o) {
                            p.others.push(o);
                        }
                    }
                }
                None => self.pins.push(pin),
            }
            self.repeat()?;
        }
        Err(PgError::Timeout {
            what: format!(
                "PostgreSQL to pick session {conn} as a deadlock's victim ({PIN_ATTEMPTS} runs with its deadlock check pinned)"
            ),
        })
    }

    /// Run every call since the reset again, with the pinned victims.
    fn repeat(&mut self) -> Result<(), PgError> {
        let seed: Vec<(&str, Row)> = self.seed.iter().map(|(t, r)| (*t, r.clone())).collect();
        self.sessions.reset(&seed)?;
        self.sessions.pin_victims(self.pins.clone())?;
        for (k, call) in self.calls.clone().into_iter().enumerate() {
            let s = &mut self.sessions;
            let again = match &call {
                Call::Execute(conn, stmt, _) => Call::Execute(*conn, stmt.clone(), s.execute(*conn, stmt)?),
                Call::TakeReady(conn, _) => {
                    let outcome = if s.deadlocked().contains(conn) {
                        Some(s.pick_victim(*conn).map_err(|_| unrepeated(k, &call, "another deadlock victim"))?)
                    } else {
                        s.take_ready(*conn)
                    };
                    Call::TakeReady(*conn, outcome)
                }
                Call::CancelWait(conn, _) => Call::CancelWait(*conn, s.cancel_wait(*conn)?),
                Call::InjectError(conn, stmt, _) => {
                    Call::InjectError(*conn, stmt.clone(), s.inject_error(*conn, stmt)?)
                }
                Call::Disconnect(conn) => {
                    s.disconnect(*conn)?;
                    Call::Disconnect(*conn)
                }
            };
            if again != call {
                return Err(unrepeated(k, &call, &format!("{again:?}")));
            }
        }
        Ok(())
    }
}

fn unrepeated(k: usize, call: &Call, got: &str) -> PgError {
    PgError::Sql {
        what: "repeating a run to pin a deadlock's victim".into(),
        message: format!("PostgreSQL did not repeat call {k} ({call:?}): it gave {got}"),
    }
}

impl RealDb for PgDb {
    fn reset(&mut self, _schema: &Schema, sessions: usize, seed: &[(TableId, Row)]) {
        assert_eq!(sessions, self.sessions.len(), "one controller per scenario");
        self.seed = seed.to_vec();
        self.calls.clear();
        self.pins.clear();
        self.guard((), |s| s.reset(seed));
    }
    fn execute(&mut self, conn: ConnId, stmt: &Sql) -> Applied {
        let applied = self.guard(Applied::Done(LOST), |s| s.execute(conn, stmt));
        self.calls.push(Call::Execute(conn, stmt.clone(), applied.clone()));
        applied
    }
    fn is_ready(&self, conn: ConnId) -> bool {
        self.failure.is_none() && self.sessions.is_ready(conn)
    }
    fn take_ready(&mut self, conn: ConnId) -> Option<Outcome> {
        if self.failure.is_some() {
            return Some(LOST);
        }
        let outcome = if self.sessions.deadlocked().contains(&conn) {
            match self.pick_victim(conn) {
                Ok(outcome) => Some(outcome),
                Err(e) => {
                    self.failure = Some(e);
                    SERVER_LOST.store(true, Ordering::SeqCst);
                    return Some(LOST);
                }
            }
        } else {
            self.sessions.take_ready(conn)
        };
        self.calls.push(Call::TakeReady(conn, outcome.clone()));
        outcome
    }
    fn cancel_wait(&mut self, conn: ConnId) -> Outcome {
        let outcome = self.guard(LOST, |s| s.cancel_wait(conn));
        self.calls.push(Call::CancelWait(conn, outcome.clone()));
        outcome
    }
    fn inject_error(&mut self, conn: ConnId, stmt: &Sql) -> Outcome {
        let outcome = self.guard(LOST, |s| s.inject_error(conn, stmt));
        self.calls.push(Call::InjectError(conn, stmt.clone(), outcome.clone()));
        outcome
    }
    fn disconnect(&mut self, conn: ConnId) {
        self.guard((), |s| s.disconnect(conn));
        self.calls.push(Call::Disconnect(conn));
    }
    fn deadlocked(&self) -> Vec<ConnId> {
        if self.failure.is_some() {
            return Vec::new();
        }
        self.sessions.deadlocked()
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
    let db = PgDb { sessions, failure: None, seed: Vec::new(), calls: Vec::new(), pins: Vec::new() };
    Ok(Backend::Real { name: "postgres", db: Arc::new(Mutex::new(db)) })
}
