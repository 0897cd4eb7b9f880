//! Connections: bounded control round trips, opening the sessions, and terminating what still
//! runs.

use super::*;

/// `f`, a control round trip, within [`CONTROL_TIMEOUT`], its error named after `what`.
pub(crate) async fn bounded<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, PgError> {
    match tokio::time::timeout(CONTROL_TIMEOUT, f).await {
        Err(_) => Err(PgError::Timeout { what: what.to_string() }),
        Ok(Err(e)) => Err(PgError::sql(what, &e)),
        Ok(Ok(v)) => Ok(v),
    }
}

/// Open sessions for the given connection ids, all at once.
pub(super) async fn open_conns(
    config: &Config,
    target: &str,
    ids: std::ops::Range<usize>,
    checked: &Option<Arc<Notify>>,
) -> Result<Vec<Conn>, PgError> {
    try_join_all(ids.map(|i| async move {
        let mut config = config.clone();
        config.application_name(format!("racelab-c{i}"));
        let checks = Arc::new(AtomicU64::new(0));
        let client = connect_counting_checks(&config, target, checks.clone(), checked.clone()).await?;
        let row =
            bounded("reading the backend pid", client.query_one("SELECT pg_catalog.pg_backend_pid()", &[])).await?;
        Ok::<_, PgError>(Conn {
            client: Arc::new(client),
            pid: row.get(0),
            checks,
            running: None,
            ready: None,
            in_transaction: false,
        })
    }))
    .await
}

/// Connect a session, counting the messages that say its deadlock check ran without finding
/// a deadlock (`log_lock_waits`: "still waiting for", or "avoided deadlock" after
/// rearranging the queue). Other notices are dropped. Bounded like [`connect`].
async fn connect_counting_checks(
    config: &Config,
    target: &str,
    checks: Arc<AtomicU64>,
    checked: Option<Arc<Notify>>,
) -> Result<Client, PgError> {
    let attempt = tokio::time::timeout(CONTROL_TIMEOUT, config.connect(tokio_postgres::NoTls)).await;
    let (client, mut conn) = match attempt {
        Err(_) => return Err(PgError::Timeout { what: format!("connecting to {target}") }),
        Ok(Err(e)) => return Err(PgError::connect(target, &e)),
        Ok(Ok(pair)) => pair,
    };
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notice(n))
                    if n.message().contains(" still waiting for ")
                        || n.message().contains(" avoided deadlock for ") =>
                {
                    checks.fetch_add(1, Ordering::SeqCst);
                    if let Some(notify) = &checked {
                        notify.notify_waiters();
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    Ok(client)
}

/// Terminate the backends `pids` and wait until none of them is left; with `everyone`, also
/// until no other client of this database but the control connection is left.
pub(super) async fn terminate_and_wait(control: &Client, pids: &[i32], everyone: bool) -> Result<(), PgError> {
    let pids = pids.to_vec();
    bounded(
        "terminating sessions",
        control.execute("SELECT pg_catalog.pg_terminate_backend(p) FROM unnest($1::int4[]) AS p", &[&pids]),
    )
    .await?;
    let deadline = Instant::now() + CONTROL_TIMEOUT;
    loop {
        let row = bounded(
            "waiting for sessions to end",
            control.query_one(
                "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE pid = ANY($1::int4[]) \
                 OR ($2 AND datname = current_database() AND pid <> pg_backend_pid() \
                     AND backend_type = 'client backend')",
                &[&pids, &everyone],
            ),
        )
        .await?;
        if row.get::<_, i64>(0) == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(PgError::Timeout { what: format!("sessions {pids:?} to end") });
        }
        tokio::time::sleep(POLL).await;
    }
}
