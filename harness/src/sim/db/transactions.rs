//! Ending transactions and waiting: commit and rollback, the wait-for graph and its cycles,
//! and waking the statements a transaction's end frees.

use super::*;

impl Db {
    /// Did `conn`'s transaction write, lock or take a transaction-scope advisory lock? Ending a
    /// transaction without effects changes nothing that others can see.
    pub(super) fn has_effects(&self, conn: ConnId) -> bool {
        self.tables.iter().flatten().any(|r| {
            r.locker == Some(conn)
                || r.versions.iter().any(|v| v.xmin.is_active(conn) || v.xmax.is_some_and(|x| x.is_active(conn)))
        }) || self.advisory.values().any(|h| h.conn == conn && h.xact > 0)
    }

    /// Commit or roll back `conn`'s transaction. The caller sets the session's block state.
    pub(super) fn end_tx(&mut self, conn: ConnId, commit: bool, fp: &mut Footprint) {
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
    pub(super) fn abort(&mut self, conn: ConnId, fp: &mut Footprint) {
        fp.global();
        self.end_tx(conn, false, fp);
        let s = &mut self.sessions[usize::from(conn)];
        if s.block == Block::Open {
            s.block = Block::Failed;
        }
    }

    /// The statement completed: its writes become visible to the transaction's next statements.
    pub(super) fn statement_done(&mut self, conn: ConnId) {
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

    pub(super) fn tx_active(&self, conn: ConnId) -> bool {
        let s = &self.sessions[usize::from(conn)];
        s.block == Block::Open || s.pending.is_some()
    }

    /// The session a wait is for: the transaction's session, or the advisory lock's holder.
    pub(super) fn blocker(&self, wait: Wait, waiter: ConnId) -> Option<ConnId> {
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
    pub(super) fn in_cycle(&self, conn: ConnId) -> bool {
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
    pub(super) fn wake(&mut self, fp: &mut Footprint) {
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
}
