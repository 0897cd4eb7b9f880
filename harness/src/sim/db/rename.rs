//! Renaming a database state under a symmetry: sessions trade places, and the values identical
//! actors own trade places in rows, pending statements and parked outcomes (see
//! [`crate::symmetry`]). Each struct is destructured in full, so a new field cannot be
//! forgotten here.

use std::hash::Hash;

use crate::explore::state::ByteSink;

use super::{Db, Hold, LogicalRow, Pending, Session, Version, Wait, Xid};
use crate::op::ConnId;
use crate::symmetry::Renaming;

impl Db {
    /// What session `conn` holds and waits for, as a fingerprint that does not depend on which
    /// of a group of identical actors owns it (`r` is [`Renaming::abstracting`] for the owner):
    /// its transaction block, pending statement, parked outcome, place in the wait queue and
    /// advisory holds. Sorting identical actors by it as well as by their own state leaves fewer
    /// ties, so equivalent states more often get the same canonical key.
    pub(crate) fn conn_signature(&self, conn: ConnId, r: &Renaming, out: &mut ByteSink<'_>) {
        let session = &self.sessions[usize::from(conn)];
        if session.pending.is_none() && session.ready.is_none() {
            session.hash(out);
        } else {
            // Only what names other actors is renamed, so only then is the session copied.
            let mut session = session.clone();
            if let Some(Pending { stmt, wait, .. }) = &mut session.pending {
                r.sql(stmt);
                *wait = match *wait {
                    Wait::Tx(c) => Wait::Tx(r.conn(c)),
                    Wait::Advisory(key) => Wait::Advisory(r.int(key)),
                };
            }
            if let Some(outcome) = &mut session.ready {
                r.outcome(outcome);
            }
            session.hash(out);
        }
        self.wait_queue.iter().position(|&c| c == conn).hash(out);
        // In the order of the renamed keys, so that the signature does not depend on which
        // member holds them.
        let holds =
            self.advisory.iter().filter(|(_, h)| h.conn == conn).map(|(&key, h)| (r.int(key), h.session, h.xact));
        let count = holds.clone().count();
        count.hash(out);
        if count <= 1 {
            holds.for_each(|hold| hold.hash(out));
        } else {
            let mut sorted: Vec<_> = holds.collect();
            sorted.sort_unstable();
            sorted.into_iter().for_each(|hold| hold.hash(out));
        }
    }

    pub(crate) fn rename(&mut self, r: &Renaming) {
        let Db { catalog: _, tables, sessions, advisory, wait_queue, seq: _ } = self;
        for row in tables.iter_mut().flatten() {
            let LogicalRow { versions, locker } = row;
            for Version { values, xmin, xmax } in versions {
                r.row(values);
                *xmin = rename_xid(r, *xmin);
                *xmax = xmax.map(|x| rename_xid(r, x));
            }
            *locker = locker.map(|c| r.conn(c));
        }
        for session in sessions.iter_mut() {
            let Session {
                block: _,
                repeatable_read: _,
                tx_snapshot: _,
                lock_timeout: _,
                lock_timeout_before: _,
                pending,
                woken: _,
                ready,
            } = session;
            if let Some(Pending { stmt, snapshot: _, wait }) = pending {
                r.sql(stmt);
                *wait = match *wait {
                    Wait::Tx(c) => Wait::Tx(r.conn(c)),
                    Wait::Advisory(key) => Wait::Advisory(r.int(key)),
                };
            }
            if let Some(outcome) = ready {
                r.outcome(outcome);
            }
        }
        r.permute_conns(sessions);
        *advisory = std::mem::take(advisory)
            .into_iter()
            .map(|(key, Hold { conn, session, xact })| (r.int(key), Hold { conn: r.conn(conn), session, xact }))
            .collect();
        for c in wait_queue.iter_mut() {
            *c = r.conn(*c);
        }
    }
}

fn rename_xid(r: &Renaming, xid: Xid) -> Xid {
    match xid {
        Xid::Committed(seq) => Xid::Committed(seq),
        Xid::Active { conn, current } => Xid::Active { conn: r.conn(conn), current },
    }
}
