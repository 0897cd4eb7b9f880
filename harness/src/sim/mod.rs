//! The simulated world: a PostgreSQL-like database, an operating system with processes,
//! files and `flock`, and an HTTP boundary. It is `Clone + Eq + Hash`, so that explorers can
//! fork it and remember which states they have seen.
//!
//! Each subsystem applies one op atomically. An op that must wait is queued inside its
//! subsystem the way the real system queues it; when the subsystem later grants it, the
//! outcome is parked until the explorer collects it with [`World::take_ready`].

pub mod database;
pub mod db;
pub mod http;
pub mod os;

use crate::op::{ActorId, Applied, ConnId, ErrorCode, Footprint, Op, OpKind, Outcome};

pub use database::{Database, RealDb, SharedDb};
pub use db::{Db, Schema, TableDef, UniqueIndex};
pub use http::Http;
pub use os::Os;

/// Which subsystem holds an actor's waiting op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum WaitsIn {
    Db(ConnId),
    Os,
    Http,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct World {
    pub db: Database,
    pub os: Os,
    pub http: Http,
    /// Owner actor of each database connection.
    conn_owner: Vec<ActorId>,
    /// Where each actor's op waits, if it does.
    waits_in: Vec<Option<WaitsIn>>,
    /// What the transition being applied has touched. Not part of the state proper.
    touched: Footprint,
}

impl World {
    /// A world with the given schema, no rows, no connections and no processes, for `actors`
    /// actors.
    pub fn new(schema: Schema, actors: usize) -> World {
        assert!(actors <= crate::op::MAX_ACTORS, "at most {} actors", crate::op::MAX_ACTORS);
        World {
            db: Database::new(schema),
            os: Os::new(actors),
            http: Http::new(actors),
            conn_owner: Vec::new(),
            waits_in: vec![None; actors],
            touched: Footprint::default(),
        }
    }

    /// Open a database connection owned by `actor`; it closes when the actor's process crashes.
    pub fn connect(&mut self, actor: ActorId) -> ConnId {
        assert!(actor < self.waits_in.len());
        let conn = self.db.open_session();
        assert_eq!(usize::from(conn), self.conn_owner.len());
        self.conn_owner.push(actor);
        conn
    }

    /// Run the database part of this world on a real server from now on (stateless explorers only).
    pub fn attach_real_db(&mut self, real: SharedDb) {
        self.db.attach(real, self.conn_owner.len());
    }

    /// How many database connections the model opened.
    pub fn connections(&self) -> usize {
        self.conn_owner.len()
    }

    pub fn actor_count(&self) -> usize {
        self.waits_in.len()
    }

    /// Apply `actor`'s op atomically.
    pub fn apply(&mut self, actor: ActorId, op: &Op) -> Applied {
        assert!(self.waits_in[actor].is_none(), "actor {actor} applies an op while waiting");
        let (applied, waits_in) = match &op.kind {
            OpKind::Sql { conn, stmt } => {
                assert_eq!(self.conn_owner[usize::from(*conn)], actor, "connection {conn} is not actor {actor}'s");
                (self.db.execute(*conn, stmt, &mut self.touched), WaitsIn::Db(*conn))
            }
            OpKind::Os(o) => (self.os.apply(actor, o, &mut self.touched), WaitsIn::Os),
            OpKind::Http(h) => (self.http.apply(actor, h, &mut self.touched), WaitsIn::Http),
            OpKind::Local => return Applied::Done(Outcome::Ok),
        };
        if applied == Applied::Blocked {
            self.waits_in[actor] = Some(waits_in);
        }
        applied
    }

    /// Is `actor`'s op queued (granted or not)?
    pub fn is_waiting(&self, actor: ActorId) -> bool {
        self.waits_in[actor].is_some()
    }

    /// Has `actor`'s queued op been granted, so that its outcome can be collected?
    pub fn is_ready(&self, actor: ActorId) -> bool {
        match self.waits_in[actor] {
            None => false,
            Some(WaitsIn::Db(c)) => self.db.is_ready(c),
            Some(WaitsIn::Os) => self.os.is_ready(actor),
            Some(WaitsIn::Http) => self.http.is_ready(actor),
        }
    }

    /// Is `actor` a not-yet-spawned process or task? Dormant actors never count as deadlocked.
    pub fn is_dormant(&self, actor: ActorId) -> bool {
        self.waits_in[actor] == Some(WaitsIn::Os) && self.os.is_dormant(actor)
    }

    /// Is `actor` not stuck even though it waits: not spawned yet, or a server idle in `accept`?
    /// Idle actors never count towards a deadlock.
    pub fn is_idle(&self, actor: ActorId) -> bool {
        self.is_dormant(actor) || (self.waits_in[actor] == Some(WaitsIn::Http) && self.http.is_idle(actor))
    }

    /// Collect the outcome of `actor`'s granted op.
    pub fn take_ready(&mut self, actor: ActorId) -> Option<Outcome> {
        let outcome = match self.waits_in[actor]? {
            WaitsIn::Db(c) => self.db.take_ready(c, &mut self.touched),
            WaitsIn::Os => self.os.take_ready(actor, &mut self.touched),
            WaitsIn::Http => self.http.take_ready(actor, &mut self.touched),
        }?;
        self.waits_in[actor] = None;
        Some(outcome)
    }

    /// A timeout fires on `actor`'s waiting op: it is dequeued and fails.
    pub fn cancel_wait(&mut self, actor: ActorId) -> Outcome {
        self.touched.global();
        let outcome = match self.waits_in[actor].take().expect("cancel_wait on an actor that does not wait") {
            WaitsIn::Db(c) => self.db.cancel_wait(c, &mut self.touched),
            WaitsIn::Os => self.os.cancel_wait(actor, &mut self.touched),
            WaitsIn::Http => self.http.cancel_wait(actor, &mut self.touched),
        };
        assert!(outcome.is_err());
        outcome
    }

    /// `actor`'s op fails with an injected error instead of running. Errors inside a
    /// transaction abort it, as any PostgreSQL error does.
    pub fn inject_error(&mut self, _actor: ActorId, op: &Op) -> Outcome {
        assert!(op.is_fallible());
        self.touched.global();
        match &op.kind {
            OpKind::Sql { conn, stmt } => self.db.inject_error(*conn, stmt, &mut self.touched),
            OpKind::Os(_) => Outcome::Err(ErrorCode::EIO),
            OpKind::Http(_) => Outcome::Err(ErrorCode::ECONNRESET),
            OpKind::Local => unreachable!("local ops are not fallible"),
        }
    }

    /// `actor`'s process crashes. Returns every actor that dies with it (itself included): the
    /// other tasks of its process. Their connections close, their locks and flocks are released,
    /// and requests they were serving fail.
    pub fn crash(&mut self, actor: ActorId) -> Vec<ActorId> {
        self.touched.global();
        let dead = self.os.crash(actor);
        assert!(dead.contains(&actor));
        for &a in &dead {
            self.waits_in[a] = None;
            for conn in 0..self.conn_owner.len() {
                if self.conn_owner[conn] == a {
                    self.db.disconnect(conn as ConnId, &mut self.touched);
                }
            }
            self.http.crash(a, &mut self.touched);
        }
        dead
    }

    /// What the transitions applied since the last call touched.
    pub fn take_footprint(&mut self) -> Footprint {
        std::mem::take(&mut self.touched)
    }
}

impl World {
    /// The parts of the state a reader of a counterexample needs: committed table contents,
    /// files, flocks and live processes.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = self.os.describe();
        for table in &self.db.schema().tables {
            let rows = self.db.committed_rows(table.name);
            let shown: Vec<String> = rows
                .iter()
                .map(|r| {
                    let cells: Vec<String> = table.columns.iter().zip(r).map(|(c, v)| format!("{c}={v}")).collect();
                    format!("({})", cells.join(", "))
                })
                .collect();
            lines.push(format!(
                "{}: {}",
                table.name,
                if shown.is_empty() { "no rows".into() } else { shown.join(" ") }
            ));
        }
        lines
    }
}
