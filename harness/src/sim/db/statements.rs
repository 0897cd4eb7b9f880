//! Running one statement: snapshots and visibility, `SELECT … FOR UPDATE`, `UPDATE` and
//! `DELETE` with the READ COMMITTED re-check of the newest row version, `INSERT` against unique
//! indexes (waiting for in-progress inserters), `ON CONFLICT`, and advisory locks.

use super::*;

impl Db {
    pub(super) fn reads_snapshot(stmt: &Sql) -> bool {
        matches!(stmt, Sql::Select { .. } | Sql::Update { .. } | Sql::Delete { .. })
    }

    /// Run (or re-run) a data or advisory statement and settle its implicit transaction if it
    /// completes. `None` when it now waits.
    pub(super) fn attempt(
        &mut self,
        conn: ConnId,
        stmt: &Sql,
        snapshot: Option<Seq>,
        fp: &mut Footprint,
    ) -> Option<Outcome> {
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
    pub(super) fn find_conflict(
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
}
