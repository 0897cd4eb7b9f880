//! Settling: after every action, wait until each statement in flight has completed or is
//! blocked on another of the sessions (asked of the server as PostgreSQL's isolation tester
//! does), and collect the deadlocks PostgreSQL broke meanwhile.

use super::*;

/// A statement PostgreSQL failed with 40P01 during a settle.
pub(super) struct Broken {
    pub(super) victim: usize,
    pub(super) victim_ordinal: u32,
    /// Server pids on the cycle, from the error's detail.
    pub(super) members: Vec<i32>,
    /// The statement each session was running when the settle ended: `(conn, ordinal)`.
    pub(super) running: Vec<(usize, u32)>,
}

/// Returns whether a statement that completed may have changed committed rows, and the
/// deadlocks PostgreSQL broke.
pub(super) async fn settle(
    control: &Client,
    status: &Statement,
    conns: &mut [Conn],
    grace: Duration,
    types: &Types,
    checked: Option<&Notify>,
) -> Result<(bool, Vec<Broken>), PgError> {
    let start = Instant::now();
    let limit = STATEMENT_TIMEOUT + CONTROL_TIMEOUT;
    let mut cycle_since: Option<Instant> = None;
    loop {
        let unfinished: Vec<usize> = (0..conns.len()).filter(|&c| !is_finished(&conns[c])).collect();
        if unfinished.is_empty() {
            break;
        }
        // Give statements that are not known to wait a moment to complete.
        let busy = unfinished.iter().any(|&c| conns[c].running.as_ref().is_some_and(|r| r.blocked.is_none()));
        if busy {
            // A statement that will wait reports its deadlock check within about a
            // millisecond, if the sessions report them: until then there is nothing to ask.
            let seen = total_checks(conns);
            let quiet = if checked.is_some() { QUIET_RUN } else { POLL };
            wait_any_or_check(conns, &unfinished, quiet, checked, seen).await;
            if unfinished.iter().all(|&c| is_finished(&conns[c])) {
                continue;
            }
        }
        let all_pids: Vec<i32> = conns.iter().map(|c| c.pid).collect();
        let seen = total_checks(conns);
        let asked: Vec<i32> = unfinished.iter().map(|&c| conns[c].pid).collect();
        let rows = bounded("asking which sessions are blocked", control.query(status, &[&asked, &all_pids])).await?;
        let now = Instant::now();
        let mut settled = true;
        let mut wait_until = now + POLL;
        let mut edges: Vec<(usize, usize)> = Vec::new();
        for row in rows {
            let pid: i32 = row.get(0);
            let blocked: bool = row.get(1);
            let mut blockers: Vec<i32> = row.get(2);
            blockers.sort_unstable();
            let Some(c) = conns.iter().position(|x| x.pid == pid) else { continue };
            if conns[c].running.as_ref().is_none_or(Running::is_finished) {
                continue;
            }
            let checks = conns[c].checks.load(Ordering::SeqCst);
            let Some(r) = conns[c].running.as_mut() else { continue };
            if !blocked {
                r.blocked = None;
                r.checks_before = checks;
                settled = false;
                continue;
            }
            let since = match &r.blocked {
                Some((since, who)) if *who == blockers => *since,
                Some(_) => {
                    // Another wait (or the same with other holders): wait for a check after now.
                    r.blocked = Some((now, blockers.clone()));
                    r.checks_before = checks;
                    now
                }
                None => {
                    r.blocked = Some((now, blockers.clone()));
                    now
                }
            };
            // Its deadlock check has run (reported), or must have by now.
            let checked = checks > r.checks_before;
            if !checked && now < since + grace {
                settled = false;
                wait_until = wait_until.max(since + grace);
            }
            for b in &blockers {
                if let Some(j) = all_pids.iter().position(|p| p == b) {
                    edges.push((c, j));
                }
            }
        }
        // A statement that completed while the status query ran may have released locks after
        // the server answered it: the answer is stale, ask again.
        if unfinished.iter().any(|&c| is_finished(&conns[c])) {
            continue;
        }
        if settled && has_cycle(conns.len(), &edges) {
            // PostgreSQL will break it; wait for that, within reason.
            let since = *cycle_since.get_or_insert(now);
            if now < since + CYCLE_LIMIT {
                settled = false;
                wait_until = now + POLL;
            }
        } else {
            cycle_since = None;
        }
        if settled {
            break;
        }
        if start.elapsed() > limit {
            return Err(PgError::Timeout { what: format!("statements to complete or block within {limit:?}") });
        }
        // Nothing can change while every statement waits, except that one fails (deadlock,
        // lock_timeout) or completes: wait for that, or until the next check is due.
        let still: Vec<usize> = unfinished.into_iter().filter(|&c| !is_finished(&conns[c])).collect();
        let left = wait_until.saturating_duration_since(Instant::now()).max(Duration::from_micros(100));
        wait_any_or_check(conns, &still, left, checked, seen).await;
    }
    // Collect what completed.
    let mut changed = false;
    let mut broken = Vec::new();
    let running: Vec<(usize, u32)> =
        conns.iter().enumerate().filter_map(|(c, x)| x.running.as_ref().map(|r| (c, r.ordinal))).collect();
    for (c, conn) in conns.iter_mut().enumerate() {
        if conn.running.as_ref().is_some_and(Running::is_finished) {
            let r = conn.running.take().expect("checked");
            let out = match r.done {
                Some(out) => out,
                None => r.task.await,
            };
            let outcome = match out {
                Ok(Ok(msgs)) => sql::decode(&r.stmt, &msgs, types)?,
                // A session the server ended (or a broken connection) is a lost server, not an
                // outcome for the model.
                Ok(Err(e)) if sql::connection_lost(&e) => return Err(PgError::sql("running a statement", &e)),
                Ok(Err(e)) => {
                    let outcome = sql::error_outcome(&e);
                    if outcome == Outcome::Err(ErrorCode::DEADLOCK_DETECTED) {
                        let detail = e.as_db_error().and_then(|d| d.detail()).unwrap_or_default();
                        let members = cycle_pids(detail);
                        broken.push(Broken { victim: c, victim_ordinal: r.ordinal, members, running: running.clone() });
                    }
                    outcome
                }
                Err(e) => return Err(PgError::Sql { what: "a statement task".into(), message: e.to_string() }),
            };
            changed |= match r.stmt {
                Sql::Commit => true,
                _ => !conn.in_transaction && !outcome.is_err() && may_change_committed_rows(&r.stmt),
            };
            match r.stmt {
                Sql::Begin if !outcome.is_err() => conn.in_transaction = true,
                Sql::Commit | Sql::Rollback => conn.in_transaction = false,
                _ => {}
            }
            conn.ready = Some(outcome);
        }
    }
    Ok((changed, broken))
}

/// The server pids in a deadlock's detail: "Process 12 waits for ShareLock on transaction 7;
/// blocked by process 34." per edge of the cycle.
fn cycle_pids(detail: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = detail
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("Process ")?;
            rest.split(|ch: char| !ch.is_ascii_digit()).next()?.parse().ok()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Statements that can never change what a new snapshot sees: the rest may (a write in
/// autocommit, a COMMIT).
fn may_change_committed_rows(stmt: &Sql) -> bool {
    !matches!(
        stmt,
        Sql::Begin
            | Sql::Rollback
            | Sql::SetLockTimeout(_)
            | Sql::Select { .. }
            | Sql::AdvisoryLock { .. }
            | Sql::AdvisoryTryLock { .. }
            | Sql::AdvisoryUnlock { .. }
            | Sql::AdvisoryUnlockAll
    )
}

fn total_checks(conns: &[Conn]) -> u64 {
    conns.iter().map(|c| c.checks.load(Ordering::SeqCst)).sum()
}

/// [`wait_any`], and also wake when a session reports a deadlock check that was not yet in
/// `seen` (the count of checks when the caller last looked).
async fn wait_any_or_check(conns: &mut [Conn], which: &[usize], limit: Duration, checked: Option<&Notify>, seen: u64) {
    let Some(notify) = checked else {
        return wait_any(conns, which, limit).await;
    };
    let notified = notify.notified();
    tokio::pin!(notified);
    // Registered before the count is read, so a report in between still wakes it.
    notified.as_mut().enable();
    if total_checks(conns) != seen {
        return;
    }
    tokio::select! {
        () = wait_any(conns, which, limit) => {}
        () = notified => {}
    }
}

/// Run `text` on a session. PostgreSQL sends an error to the client *before* it aborts the
/// transaction and releases its locks (only `ReadyForQuery` comes after that), and
/// tokio-postgres reports the error as soon as it arrives. After an error, an empty query on
/// the same connection waits for `ReadyForQuery`, so that when the statement counts as
/// completed its locks are gone, as in the simulator.
pub(super) async fn run(client: &Client, text: &str) -> QueryResult {
    let r = client.simple_query(text).await;
    if r.is_err() {
        let _ = client.simple_query("").await;
    }
    r
}

fn is_finished(c: &Conn) -> bool {
    !matches!(&c.running, Some(r) if !r.is_finished())
}

impl Running {
    fn is_finished(&self) -> bool {
        self.done.is_some() || self.task.is_finished()
    }
}

/// Wait until one of the statements on `which` completes (keeping its result in `done`), or
/// `limit` passes.
async fn wait_any(conns: &mut [Conn], which: &[usize], limit: Duration) {
    let futs: Vec<_> = conns
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| which.contains(i))
        .filter_map(|(i, c)| c.running.as_mut().filter(|r| r.done.is_none()).map(|r| (i, &mut r.task)))
        .map(|(i, task)| Box::pin(async move { (i, task.await) }))
        .collect();
    if futs.is_empty() {
        return;
    }
    if let Ok(((i, out), _, rest)) = tokio::time::timeout(limit, select_all(futs)).await {
        drop(rest);
        if let Some(r) = conns[i].running.as_mut() {
            r.done = Some(out);
        }
    }
}

fn has_cycle(n: usize, edges: &[(usize, usize)]) -> bool {
    // Colour-marking DFS over a tiny graph.
    fn visit(v: usize, n: usize, edges: &[(usize, usize)], state: &mut [u8]) -> bool {
        state[v] = 1;
        for &(a, b) in edges {
            if a == v && b < n && (state[b] == 1 || (state[b] == 0 && visit(b, n, edges, state))) {
                return true;
            }
        }
        state[v] = 2;
        false
    }
    let mut state = vec![0u8; n];
    (0..n).any(|v| state[v] == 0 && visit(v, n, edges, &mut state))
}
