//! [`FreeSessions`]: sessions that actors drive concurrently from threads of their own, for
//! `racelab stress`. Unlike [`crate::Sessions`] there is no controller: a statement that waits
//! for a lock blocks its thread until the server grants the lock, and deadlocks are the
//! server's to find.
//!
//! Each connection has a private current-thread runtime and is only driven while its thread
//! runs a statement, so threads never contend for anything of racelab's. A control connection
//! (with its own runtime) resets the tables between rounds and reads committed rows.
//!
//! Deadlocks PostgreSQL cannot see (a client waiting for its own second connection) are ended
//! by the stress runner's watchdog through [`FreeDb::cancel_all`]; the sessions'
//! `statement_timeout` is only a backstop.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use racelab_harness::op::{ConnId, ErrorCode, Outcome, Row, Sql, TableId};
use racelab_harness::sim::Schema;
use racelab_harness::stress::FreeDb;
use tokio::runtime::Runtime;
use tokio_postgres::{Client, Config};

use crate::cluster::{connect, runtime, Cluster};
use crate::error::PgError;
use crate::session::{bounded, CONTROL_TIMEOUT};
use crate::sql::{self, Types};

/// The sessions' `statement_timeout`.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

struct Slot {
    rt: Runtime,
    client: Client,
    pid: i32,
}

/// Connections for concurrent actors, as many as the model opens (made at the first reset),
/// plus a control connection.
pub struct FreeSessions {
    schema: Schema,
    types: Types,
    config: Config,
    target: String,
    control: Mutex<Slot>,
    conns: RwLock<Vec<Mutex<Slot>>>,
    /// Server pids of `conns`, readable while they run statements.
    pids: Mutex<Vec<i32>>,
    failure: Mutex<Option<PgError>>,
}

/// Back to the session's initial state between rounds; see [`crate::Sessions::reset`].
const RECYCLE_SQL: &str = "ROLLBACK; RESET ALL; SELECT pg_catalog.pg_advisory_unlock_all()";

impl FreeSessions {
    /// Create the schema (dropping tables of the same names first) and the control connection.
    pub fn open(cluster: &Cluster, schema: &Schema, text_columns: &[(&str, &str)]) -> Result<FreeSessions, PgError> {
        let types = Types::new(schema, text_columns)?;
        let target = cluster.target().to_string();
        let mut config = cluster.config();
        config.options(format!(
            "-c statement_timeout={}ms -c lock_timeout=0 -c idle_in_transaction_session_timeout=0 \
             -c client_min_messages=error",
            STATEMENT_TIMEOUT.as_millis()
        ));
        let control = open_slot(&config, &target, "racelab-stress-control".to_string())?;
        let mut ddl = sql::drop_sql(schema);
        ddl.extend(sql::schema_sql(schema, text_columns));
        control.rt.block_on(bounded("creating the schema", control.client.batch_execute(&ddl.join(";\n"))))?;
        Ok(FreeSessions {
            schema: schema.clone(),
            types,
            config,
            target,
            control: Mutex::new(control),
            conns: RwLock::new(Vec::new()),
            pids: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
        })
    }

    fn fail(&self, e: PgError) {
        crate::backend::mark_server_lost();
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.is_none() {
            *failure = Some(e);
        }
    }

    fn failed(&self) -> bool {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

fn open_slot(config: &Config, target: &str, name: String) -> Result<Slot, PgError> {
    let rt = runtime()?;
    let mut config = config.clone();
    config.application_name(name);
    let (client, pid) = rt.block_on(async {
        let client = connect(&config, target).await?;
        let row =
            bounded("reading the backend pid", client.query_one("SELECT pg_catalog.pg_backend_pid()", &[])).await?;
        Ok::<_, PgError>((client, row.get(0)))
    })?;
    Ok(Slot { rt, client, pid })
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

impl FreeDb for FreeSessions {
    fn reset(&self, _schema: &Schema, sessions: usize, seed: &[(TableId, Row)]) {
        assert!(sessions < usize::from(ConnId::MAX), "too many sessions");
        if self.failed() {
            return;
        }
        let mut conns = self.conns.write().unwrap_or_else(|p| p.into_inner());
        while conns.len() < sessions {
            match open_slot(&self.config, &self.target, format!("racelab-stress-c{}", conns.len())) {
                Ok(slot) => {
                    self.pids.lock().unwrap_or_else(|p| p.into_inner()).push(slot.pid);
                    conns.push(Mutex::new(slot));
                }
                Err(e) => return self.fail(e),
            }
        }
        // Every session in parallel (each on its own thread, as each has its own runtime),
        // then the tables.
        let results: Vec<Result<(), PgError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = conns
                .iter()
                .map(|slot| {
                    scope.spawn(move || {
                        let slot = lock(slot);
                        slot.rt.block_on(bounded("recycling a session", slot.client.simple_query(RECYCLE_SQL)))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)).map(|_| ())).collect()
        });
        if let Some(e) = results.into_iter().find_map(Result::err) {
            return self.fail(e);
        }
        let mut batch = String::new();
        let tables: Vec<&str> = self.schema.tables.iter().map(|t| t.name).collect();
        // DELETE rather than TRUNCATE, as in `Sessions::reset`: no cache invalidation that
        // every session would pay for in the round.
        for t in &tables {
            batch.push_str(&format!("DELETE FROM {t};\n"));
        }
        for (table, row) in seed {
            let values: Vec<String> = row.iter().map(|&v| sql::literal(v)).collect();
            batch.push_str(&format!("INSERT INTO {table} VALUES ({});\n", values.join(", ")));
        }
        let control = lock(&self.control);
        if let Err(e) =
            control.rt.block_on(bounded("emptying and seeding the tables", control.client.batch_execute(&batch)))
        {
            self.fail(e);
        }
    }

    fn execute(&self, conn: ConnId, stmt: &Sql) -> Outcome {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        let slot = lock(&conns[usize::from(conn)]);
        let text = sql::render(stmt, &self.schema);
        // The sessions' statement_timeout bounds every wait; this bounds a lost server.
        let r = slot.rt.block_on(async {
            let r = tokio::time::timeout(STATEMENT_TIMEOUT + CONTROL_TIMEOUT, slot.client.simple_query(&text)).await;
            if matches!(r, Ok(Err(_))) {
                // Wait for ReadyForQuery: the failed transaction's locks are gone after it.
                let _ = tokio::time::timeout(CONTROL_TIMEOUT, slot.client.simple_query("")).await;
            }
            r
        });
        match r {
            Err(_) => {
                self.fail(PgError::Timeout { what: format!("a statement on stress session {conn}") });
                Outcome::Err(ErrorCode::CONNECTION_FAILURE)
            }
            Ok(Ok(msgs)) => sql::decode(stmt, &msgs, &self.types).unwrap_or_else(|e| {
                self.fail(e);
                Outcome::Err(ErrorCode::CONNECTION_FAILURE)
            }),
            Ok(Err(e)) => {
                if sql::connection_lost(&e) {
                    self.fail(PgError::sql(format!("stress session {conn}"), &e));
                }
                sql::error_outcome(&e)
            }
        }
    }

    fn committed_rows(&self, table: TableId) -> Vec<Row> {
        let control = lock(&self.control);
        let text = format!("SELECT * FROM {table} ORDER BY 1");
        let read = control.rt.block_on(bounded("reading committed rows", control.client.simple_query(&text)));
        let stmt = Sql::Select { table, filter: vec![], lock: None };
        match read.and_then(|msgs| sql::decode(&stmt, &msgs, &self.types)) {
            Ok(Outcome::Rows(rows)) => rows,
            Ok(other) => {
                self.fail(PgError::Decode(format!("expected rows, got {other:?}")));
                Vec::new()
            }
            Err(e) => {
                self.fail(e);
                Vec::new()
            }
        }
    }

    fn cancel_all(&self) {
        let pids = self.pids.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let control = lock(&self.control);
        let sql = "SELECT pg_catalog.pg_cancel_backend(p) FROM unnest($1::int4[]) AS p";
        if let Err(e) =
            control.rt.block_on(bounded("cancelling stuck statements", control.client.execute(sql, &[&pids])))
        {
            self.fail(e);
        }
    }

    fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|e| e.to_string())
    }
}

/// Closing a connection ends its backend, which rolls back and releases its locks; dropping
/// the slots closes them all.
impl Drop for FreeSessions {
    fn drop(&mut self) {
        let conns = std::mem::take(self.conns.get_mut().unwrap_or_else(|p| p.into_inner()));
        for slot in conns {
            let slot = slot.into_inner().unwrap_or_else(|p| p.into_inner());
            drop(slot.client);
            // Let the connection task see the closed client and send Terminate.
            slot.rt.block_on(tokio::task::yield_now());
        }
    }
}

/// A stress backend for a model with this schema.
pub fn free_sessions(
    cluster: &Cluster,
    schema: &Schema,
    text_columns: &[(&str, &str)],
) -> Result<Arc<dyn FreeDb>, PgError> {
    Ok(Arc::new(FreeSessions::open(cluster, schema, text_columns)?))
}
