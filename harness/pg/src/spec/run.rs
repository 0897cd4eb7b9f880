//! Running a spec against a server, the way PostgreSQL's isolation tester does.
//!
//! Each session gets its own connection, and a control connection runs the
//! global setup and teardown and asks the server whether a session is blocked
//! (`pg_isolation_test_session_is_blocked`).  A step is sent, then its
//! connection is polled: if nothing arrives for 10 ms the control connection
//! asks whether the session waits for a lock held by another session of the
//! spec; if it does, the step is reported `<waiting ...>` and the permutation
//! goes on; steps that were waiting are polled again after every later step and
//! reported `<... completed>` when they finish.
//!
//! The transcript reproduces libpq's timing of output: a notice is printed as
//! soon as it is read, except that what arrives after a step's first result is
//! only read once the step is reported complete (libpq parses no further until
//! its result is fetched).  The session connections are driven by hand, in one
//! task, so that notices and results keep the order the server sent them in.

use std::future::{poll_fn, Future};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::Stream;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{
    AsyncMessage, Client, Config, Connection, NoTls, Notification, SimpleQueryMessage, SimpleQueryStream, Socket,
    Statement,
};

use super::format::{self, Notice};
use super::{parse_file, Blocker, PermutationStep, Spec, SpecError};

/// How to connect and how long to wait.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// `datestyle` for every connection (libpq's `PGDATESTYLE`).
    pub datestyle: Option<String>,
    /// `timezone` for every connection (libpq's `PGTZ`).
    pub timezone: Option<String>,
    /// Extra command-line options for every backend (libpq's `PGOPTIONS`).
    pub options: Option<String>,
    /// After this long a step is cancelled, after twice this long the run
    /// gives up (the tester's default is 360 s).
    pub step_timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { datestyle: None, timezone: None, options: None, step_timeout: Duration::from_secs(360) }
    }
}

impl RunOptions {
    /// Options from the libpq environment variables `PGDATESTYLE`, `PGTZ` and
    /// `PGOPTIONS`, as the isolation tester (through libpq) honours them.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        RunOptions {
            datestyle: var("PGDATESTYLE"),
            timezone: var("PGTZ"),
            options: var("PGOPTIONS"),
            ..Self::default()
        }
    }

    /// The backend `options` string: the config's own, then these.
    fn backend_options(&self, base: Option<&str>) -> Option<String> {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(base.map(str::to_string));
        parts.extend(self.options.clone());
        if let Some(d) = &self.datestyle {
            parts.push(format!("-c datestyle={}", escape_option(d)));
        }
        if let Some(t) = &self.timezone {
            parts.push(format!("-c timezone={}", escape_option(t)));
        }
        let joined = parts.join(" ");
        (!joined.trim().is_empty()).then_some(joined)
    }
}

/// Escapes a value for the backend's `options` (blanks split arguments, a
/// backslash takes the next character literally).
fn escape_option(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if c.is_whitespace() || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Parses and runs the spec at `path`, returning the transcript; connection
/// settings from `PGDATESTYLE`, `PGTZ` and `PGOPTIONS` apply.
pub fn run_spec_file(config: &Config, path: &Path) -> Result<String, SpecError> {
    run_spec_file_with(config, path, &RunOptions::from_env())
}

/// [`run_spec_file`] with explicit options.
pub fn run_spec_file_with(config: &Config, path: &Path, options: &RunOptions) -> Result<String, SpecError> {
    let spec = parse_file(path)?;
    run_spec_with(config, &spec, options)
}

/// Runs a parsed spec, returning the transcript; connection settings from
/// `PGDATESTYLE`, `PGTZ` and `PGOPTIONS` apply.
pub fn run_spec(config: &Config, spec: &Spec) -> Result<String, SpecError> {
    run_spec_with(config, spec, &RunOptions::from_env())
}

/// Runs a parsed spec with explicit options, in a private current-thread
/// tokio runtime.
pub fn run_spec_with(config: &Config, spec: &Spec, options: &RunOptions) -> Result<String, SpecError> {
    let mut all = String::new();
    run_spec_streaming(config, spec, options, &mut |chunk| {
        all.push_str(chunk);
        Ok(())
    })?;
    Ok(all)
}

/// Runs a parsed spec, handing the transcript to `sink` as it goes (at least once per
/// permutation), so that a spec with a great many permutations shows output at once and
/// holds none of it. On failure, what was printed before it has been handed over.
pub fn run_spec_streaming(
    config: &Config,
    spec: &Spec,
    options: &RunOptions,
    sink: &mut dyn FnMut(&str) -> Result<(), SpecError>,
) -> Result<(), SpecError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SpecError::Server { what: "starting the tokio runtime".into(), error: e.to_string() })?;
    runtime.block_on(async {
        let mut out = String::new();
        let result = run(config, spec, options, &mut out, sink).await;
        if !out.is_empty() {
            sink(&out)?;
        }
        result
    })
}

/// What libpq reports when the server closes a connection (a terminated backend); the
/// tester prints it as an error result, followed by a blank line.
const CONNECTION_CLOSED: &str = "server closed the connection unexpectedly\n\tThis probably means the server \
                                 terminated abnormally\n\tbefore or while processing the request.\n\n";

const STEP_NONBLOCK: u8 = 1;
const STEP_RETRY: u8 = 2;

/// One event read from a session's connection while a query runs.
enum Ev {
    Notice(String),
    Columns(Vec<String>),
    Row(Vec<Option<String>>),
    Complete,
    Error(String),
}

/// The query a session is running.
struct Active {
    /// Index of the step in the permutation; `None` for a setup or teardown.
    pstep: Option<usize>,
    stream: Pin<Box<SimpleQueryStream>>,
    done: bool,
    /// The first result (command, rows or error) has arrived: libpq would say
    /// the connection is no longer busy.
    first_result: bool,
    /// Events read but not yet printed.
    pending: Vec<Ev>,
    /// Whether the tester would be reading this connection yet: libpq reads
    /// nothing between sending a query and the first wait for its result, so
    /// what arrives before that is held back in `early`.
    reading: bool,
    early: Vec<Ev>,
}

struct Sess {
    name: String,
    client: Client,
    conn: Connection<Socket, NoTlsStream>,
    pid: i32,
    active: Option<Active>,
    total_notices: u64,
    notifications: Vec<Notification>,
    /// The server closed the connection (its backend was terminated).
    closed: bool,
}

impl Sess {
    /// The connection is gone: a running query ends with libpq's error for that.
    fn close(&mut self, out: &mut String) {
        self.closed = true;
        if self.active.as_ref().is_some_and(|a| !a.done) {
            self.record(Ev::Error(CONNECTION_CLOSED.to_string()), out);
            if let Some(a) = self.active.as_mut() {
                a.done = true;
            }
        }
    }

    /// Polls the connection and the running query; `Ready` once something
    /// arrived (or on failure), `Pending` when nothing did.
    fn poll_pump(&mut self, cx: &mut Context<'_>, out: &mut String) -> Poll<Result<(), SpecError>> {
        if self.closed {
            // Nothing more will come; a query sent meanwhile has failed already.
            return if self.active.as_ref().is_some_and(|a| !a.done) {
                self.close(out);
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            };
        }
        let mut progressed = false;
        loop {
            let mut moved = self.drain_stream(cx, out);
            match self.conn.poll_message(cx) {
                Poll::Ready(Some(Ok(AsyncMessage::Notice(n)))) => {
                    self.drain_stream(cx, out);
                    let notice = Notice {
                        severity: n.severity(),
                        message: n.message(),
                        detail: n.detail(),
                        hint: n.hint(),
                        internal_query: match n.position() {
                            Some(tokio_postgres::error::ErrorPosition::Internal { query, .. }) => Some(query),
                            _ => None,
                        },
                    };
                    let text = format::notice(&self.name, &notice);
                    self.record(Ev::Notice(text), out);
                    moved = true;
                }
                Poll::Ready(Some(Ok(AsyncMessage::Notification(n)))) => {
                    self.drain_stream(cx, out);
                    self.notifications.push(n);
                    moved = true;
                }
                Poll::Ready(Some(Ok(_))) => moved = true,
                // The server ended the session (as PostgreSQL's tester sees it, the running
                // step gets libpq's error and the permutation goes on).
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                    self.drain_stream(cx, out);
                    self.close(out);
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => {}
            }
            if !moved {
                break;
            }
            progressed = true;
        }
        if progressed {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    /// Takes whatever the running query's stream has ready.
    fn drain_stream(&mut self, cx: &mut Context<'_>, out: &mut String) -> bool {
        let mut moved = false;
        while let Some(active) = self.active.as_mut().filter(|a| !a.done) {
            let ev = match active.stream.as_mut().poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => {
                    active.done = true;
                    moved = true;
                    continue;
                }
                Poll::Ready(Some(Ok(SimpleQueryMessage::RowDescription(cols)))) => {
                    Ev::Columns(cols.iter().map(|c| c.name().to_string()).collect())
                }
                Poll::Ready(Some(Ok(SimpleQueryMessage::Row(row)))) => {
                    Ev::Row((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect())
                }
                Poll::Ready(Some(Ok(SimpleQueryMessage::CommandComplete(_)))) => Ev::Complete,
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(e))) => match e.as_db_error() {
                    Some(db) => Ev::Error(format::error(db.severity(), db.message())),
                    None if e.is_closed() => {
                        // The connection is gone; nothing more will come.
                        active.done = true;
                        self.closed = true;
                        Ev::Error(CONNECTION_CLOSED.to_string())
                    }
                    None => {
                        active.done = true;
                        Ev::Error(format!("{e}\n"))
                    }
                },
            };
            moved = true;
            self.record(ev, out);
        }
        moved
    }

    /// Notes an event: a notice before the first result is printed at once
    /// (libpq's notice processor), everything else waits to be printed.
    fn record(&mut self, ev: Ev, out: &mut String) {
        let Some(active) = self.active.as_mut() else {
            if let Ev::Notice(text) = ev {
                out.push_str(&text);
                self.total_notices += 1;
            }
            return;
        };
        if !active.reading {
            active.early.push(ev);
            return;
        }
        let setup = active.pstep.is_none();
        if !active.first_result || setup {
            match ev {
                Ev::Notice(text) => {
                    out.push_str(&text);
                    self.total_notices += 1;
                    return;
                }
                Ev::Complete | Ev::Error(_) => active.first_result = true,
                _ => {}
            }
        }
        active.pending.push(ev);
    }

    /// Sends a query and pushes it to the server.
    async fn start(&mut self, pstep: Option<usize>, sql: &str, out: &mut String) -> Result<(), SpecError> {
        let stream = self.client.simple_query_raw(sql).await.map_err(|e| SpecError::Server {
            what: format!("failed to send query for session {}", self.name),
            error: describe(&e),
        })?;
        self.active = Some(Active {
            pstep,
            stream: Box::pin(stream),
            done: false,
            first_result: false,
            pending: Vec::new(),
            reading: false,
            early: Vec::new(),
        });
        // Push the query out now, as PQsendQuery does; anything read on the
        // way waits in `early`.
        self.pump_now(out).await
    }

    /// Starts reading the running query's output, as the tester does when it
    /// first waits for a step: what was held back is handled now, in order.
    fn begin_reading(&mut self, out: &mut String) {
        let Some(active) = self.active.as_mut().filter(|a| !a.reading) else { return };
        active.reading = true;
        for ev in std::mem::take(&mut active.early) {
            self.record(ev, out);
        }
    }

    /// One poll without waiting: writes what is queued, reads what is there.
    async fn pump_now(&mut self, out: &mut String) -> Result<(), SpecError> {
        poll_fn(|cx| match self.poll_pump(cx, out) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => Poll::Ready(Ok(())),
        })
        .await
    }

    /// Waits until something arrives.
    async fn pump(&mut self, out: &mut String) -> Result<(), SpecError> {
        poll_fn(|cx| self.poll_pump(cx, out)).await
    }
}

/// An error's text, with the server's message when there is one.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// Drives a connection while `fut` (a request on its client) runs.
async fn drive<T>(conn: &mut Connection<Socket, NoTlsStream>, fut: impl Future<Output = T>) -> Result<T, SpecError> {
    let mut fut = std::pin::pin!(fut);
    poll_fn(|cx| loop {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match conn.poll_message(cx) {
            Poll::Ready(Some(Ok(_))) => continue,
            Poll::Ready(Some(Err(e))) => {
                return Poll::Ready(Err(SpecError::Server { what: "connection".into(), error: describe(&e) }))
            }
            Poll::Ready(None) => {
                return Poll::Ready(Err(SpecError::Server {
                    what: "connection".into(),
                    error: "the server closed the connection".into(),
                }))
            }
            Poll::Pending => {
                return match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => Poll::Ready(Ok(v)),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    })
    .await
}

type ResultSet = (Vec<String>, Vec<Vec<Option<String>>>);

/// The last result of a batch, as libpq's `PQexec` keeps it: `Ok(Some(set))`
/// when it returned rows, `Ok(None)` for a command, `Err(message)` for an error.
fn last_result(events: Vec<Ev>) -> Result<Option<ResultSet>, String> {
    let mut current: Option<ResultSet> = None;
    let mut last: Result<Option<ResultSet>, String> = Ok(None);
    for ev in events {
        match ev {
            Ev::Columns(cols) => current = Some((cols, Vec::new())),
            Ev::Row(r) => {
                if let Some((_, rows)) = current.as_mut() {
                    rows.push(r)
                }
            }
            Ev::Complete => last = Ok(current.take()),
            Ev::Error(e) => last = Err(e),
            Ev::Notice(_) => {}
        }
    }
    last
}

struct Runner<'a> {
    spec: &'a Spec,
    options: &'a RunOptions,
    control: Client,
    blocked: Statement,
    sessions: Vec<Sess>,
    out: &'a mut String,
}

/// `(session index, step index)` of every step, by name.
fn step_index(spec: &Spec, name: &str) -> (usize, usize) {
    for (i, s) in spec.sessions.iter().enumerate() {
        if let Some(j) = s.steps.iter().position(|st| st.name == name) {
            return (i, j);
        }
    }
    unreachable!("step names are checked when parsing")
}

async fn connect(
    config: &Config,
    options: &RunOptions,
    who: &str,
) -> Result<(Client, Connection<Socket, NoTlsStream>), SpecError> {
    let mut cfg = config.clone();
    if let Some(o) = options.backend_options(config.get_options()) {
        cfg.options(&o);
    }
    let app = config.get_application_name().unwrap_or("racelab-pg-spec");
    cfg.application_name(format!("{app}/{who}"));
    cfg.connect(NoTls).await.map_err(|e| SpecError::Connect { what: who.to_string(), error: describe(&e) })
}

async fn run(
    config: &Config,
    spec: &Spec,
    options: &RunOptions,
    out: &mut String,
    sink: &mut dyn FnMut(&str) -> Result<(), SpecError>,
) -> Result<(), SpecError> {
    for w in &spec.warnings {
        out.push_str(w);
        out.push('\n');
    }
    out.push_str(&format::parsed(spec.sessions.len()));

    let (control, control_conn) = connect(config, options, "control connection").await?;
    let control_task = tokio::spawn(control_conn);
    let mut sessions = Vec::new();
    for s in &spec.sessions {
        let (client, mut conn) = connect(config, options, &s.name).await?;
        let rows = drive(&mut conn, client.query_one("SELECT pg_catalog.pg_backend_pid()", &[]))
            .await?
            .map_err(|e| SpecError::Server { what: "backend pid query".into(), error: describe(&e) })?;
        let pid: i32 = rows.get(0);
        sessions.push(Sess {
            name: s.name.clone(),
            client,
            conn,
            pid,
            active: None,
            total_notices: 0,
            notifications: Vec::new(),
            closed: false,
        });
    }
    let pids: Vec<String> = sessions.iter().map(|s| s.pid.to_string()).collect();
    let query = format!("SELECT pg_catalog.pg_isolation_test_session_is_blocked($1, '{{{}}}')", pids.join(","));
    let blocked = control
        .prepare(&query)
        .await
        .map_err(|e| SpecError::Server { what: "prepare of lock wait query failed".into(), error: describe(&e) })?;

    let mut runner = Runner { spec, options, control, blocked, sessions, out };
    let mut result = Ok(());
    for perm in spec.effective_permutations() {
        result = runner.run_permutation(&perm).await;
        if result.is_err() {
            break;
        }
        sink(runner.out)?;
        runner.out.clear();
    }
    drop(runner);
    control_task.abort();
    result
}

impl Runner<'_> {
    async fn run_permutation(&mut self, perm: &[PermutationStep]) -> Result<(), SpecError> {
        let spec = self.spec;
        self.out.push_str(&format::starting_permutation(perm.iter().map(|p| p.name.as_str())));

        for sql in &spec.setup {
            match self.exec_control(sql).await {
                Ok(()) => {}
                Err(error) => return Err(SpecError::Setup { what: "setup".into(), error }),
            }
        }
        for (i, s) in spec.sessions.iter().enumerate() {
            if let Some(sql) = &s.setup {
                if let Err(error) = self.exec_session(i, sql).await? {
                    return Err(SpecError::Setup { what: format!("setup of session {}", s.name), error });
                }
            }
        }

        let mut waiting: Vec<usize> = Vec::new();
        let mut targets: Vec<Vec<u64>> = perm.iter().map(|p| vec![0; p.blockers.len()]).collect();
        for (k, pstep) in perm.iter().enumerate() {
            let (s, st) = step_index(spec, &pstep.name);
            // A session still busy with an earlier step must finish it first.
            if self.sessions[s].active.is_some() {
                let start = Instant::now();
                while let Some(old) = self.sessions[s].active.as_ref().and_then(|a| a.pstep) {
                    if !self.try_complete_step(perm, &targets, old, STEP_RETRY).await? {
                        waiting.retain(|&w| w != old);
                    }
                    self.try_complete_steps(perm, &targets, &mut waiting, STEP_NONBLOCK | STEP_RETRY).await?;
                    if self.sessions[s].active.is_some() && start.elapsed() > 2 * self.options.step_timeout {
                        return Err(SpecError::Timeout {
                            step: perm[old].name.clone(),
                            seconds: start.elapsed().as_secs(),
                        });
                    }
                }
            }
            let sql = &spec.sessions[s].steps[st].sql;
            let sess = &mut self.sessions[s];
            sess.start(Some(k), sql, self.out).await?;
            for (b, blocker) in pstep.blockers.iter().enumerate() {
                if let Blocker::Notices { step, count } = blocker {
                    let (os, _) = step_index(spec, step);
                    targets[k][b] = u64::from(*count) + self.sessions[os].total_notices;
                }
            }
            let must_wait = self.try_complete_step(perm, &targets, k, STEP_NONBLOCK).await?;
            self.try_complete_steps(perm, &targets, &mut waiting, STEP_NONBLOCK | STEP_RETRY).await?;
            if must_wait {
                waiting.push(k);
            }
        }
        self.try_complete_steps(perm, &targets, &mut waiting, STEP_RETRY).await?;
        if !waiting.is_empty() {
            return Err(SpecError::Server {
                what: "permutation".into(),
                error: "failed to complete permutation due to mutually-blocking steps".into(),
            });
        }

        for (i, s) in spec.sessions.iter().enumerate() {
            if let Some(sql) = &s.teardown {
                if let Err(e) = self.exec_session(i, sql).await? {
                    // The tester reports this on stderr and goes on.
                    self.out.push_str(&format!("teardown of session {} failed: {e}", s.name));
                }
            }
        }
        if let Some(sql) = &spec.teardown {
            if let Err(e) = self.exec_control(sql).await {
                self.out.push_str(&format!("teardown failed: {e}"));
            }
        }
        Ok(())
    }

    /// Runs a batch on the control connection, printing its last result if it
    /// returned rows (notices there are not shown).
    async fn exec_control(&mut self, sql: &str) -> Result<(), String> {
        let messages = match self.control.simple_query(sql).await {
            Ok(m) => m,
            Err(e) => {
                return Err(match e.as_db_error() {
                    Some(db) => format::error(db.severity(), db.message()),
                    None => format!("{e}\n"),
                })
            }
        };
        let events = messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::RowDescription(cols) => {
                    Some(Ev::Columns(cols.iter().map(|c| c.name().to_string()).collect()))
                }
                SimpleQueryMessage::Row(row) => {
                    Some(Ev::Row((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect()))
                }
                SimpleQueryMessage::CommandComplete(_) => Some(Ev::Complete),
                _ => None,
            })
            .collect();
        if let Ok(Some((cols, rows))) = last_result(events) {
            self.out.push_str(&format::result_set(&cols, &rows));
        }
        Ok(())
    }

    /// Runs a setup or teardown batch on a session's connection: notices are
    /// printed as they come, the last result if it returned rows.
    async fn exec_session(&mut self, s: usize, sql: &str) -> Result<Result<(), String>, SpecError> {
        let sess = &mut self.sessions[s];
        sess.start(None, sql, self.out).await?;
        sess.begin_reading(self.out);
        let start = Instant::now();
        while !sess.active.as_ref().is_some_and(|a| a.done) {
            match tokio::time::timeout(self.options.step_timeout, sess.pump(self.out)).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(SpecError::Timeout {
                        step: format!("setup of {}", sess.name),
                        seconds: start.elapsed().as_secs(),
                    })
                }
            }
        }
        let active = sess.active.take().expect("active");
        Ok(match last_result(active.pending) {
            Ok(Some((cols, rows))) => {
                self.out.push_str(&format::result_set(&cols, &rows));
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        })
    }

    /// Tries to complete the waiting steps, removing those that completed; as
    /// long as some still-waiting step has a blocking marker and something
    /// changed, tries again.
    async fn try_complete_steps(
        &mut self,
        perm: &[PermutationStep],
        targets: &[Vec<u64>],
        waiting: &mut Vec<usize>,
        flags: u8,
    ) -> Result<(), SpecError> {
        loop {
            let before = waiting.len();
            let notices_before: u64 = self.sessions.iter().map(|s| s.total_notices).sum();
            let mut have_blocker = false;
            let mut w = 0;
            while w < waiting.len() {
                if self.try_complete_step(perm, targets, waiting[w], flags).await? {
                    have_blocker |= !perm[waiting[w]].blockers.is_empty();
                    w += 1;
                } else {
                    waiting.remove(w);
                }
            }
            let notices_after: u64 = self.sessions.iter().map(|s| s.total_notices).sum();
            if !(have_blocker && (waiting.len() < before || notices_after != notices_before)) {
                return Ok(());
            }
        }
    }

    /// Is some blocking marker of step `k` still unsatisfied?
    fn step_has_blocker(&self, perm: &[PermutationStep], targets: &[Vec<u64>], k: usize) -> bool {
        perm[k].blockers.iter().enumerate().any(|(b, blocker)| match blocker {
            Blocker::Once => false,
            Blocker::OtherStep(other) => {
                let (os, ost) = step_index(self.spec, other);
                self.sessions[os]
                    .active
                    .as_ref()
                    .and_then(|a| a.pstep)
                    .is_some_and(|p| step_index(self.spec, &perm[p].name) == (os, ost))
            }
            Blocker::Notices { step, .. } => {
                let (os, _) = step_index(self.spec, step);
                self.sessions[os].total_notices < targets[k][b]
            }
        })
    }

    async fn is_blocked(&mut self, pid: i32) -> Result<bool, SpecError> {
        let row = self
            .control
            .query_one(&self.blocked, &[&pid])
            .await
            .map_err(|e| SpecError::Server { what: "lock wait query failed".into(), error: describe(&e) })?;
        Ok(row.get::<_, bool>(0))
    }

    /// Waits for step `k` (already sent) to complete, or — with
    /// `STEP_NONBLOCK` — to block on a lock; a step with an unsatisfied
    /// blocking marker is not reported complete either.  Returns whether the
    /// step is still running.  `STEP_RETRY` marks a second or later call.
    async fn try_complete_step(
        &mut self,
        perm: &[PermutationStep],
        targets: &[Vec<u64>],
        k: usize,
        flags: u8,
    ) -> Result<bool, SpecError> {
        let spec = self.spec;
        let pstep = &perm[k];
        let (s, st) = step_index(spec, &pstep.name);
        let sql = &spec.sessions[s].steps[st].sql;

        if flags & STEP_RETRY == 0 && pstep.blockers.contains(&Blocker::Once) {
            self.out.push_str(&format::step_waiting(&pstep.name, sql));
            return Ok(true);
        }

        self.sessions[s].begin_reading(self.out);
        let start = Instant::now();
        let mut canceled = false;
        let poll = Duration::from_millis(10);
        while !self.sessions[s].active.as_ref().is_some_and(|a| a.first_result) {
            let sess = &mut self.sessions[s];
            if let Ok(r) = tokio::time::timeout(poll, sess.pump(self.out)).await {
                r?;
                continue;
            }
            // Nothing for 10 ms: is the session waiting for a lock?
            if flags & STEP_NONBLOCK != 0 {
                let pid = self.sessions[s].pid;
                if self.is_blocked(pid).await? {
                    // Collect what arrived meanwhile (notices, or even the result).
                    let sess = &mut self.sessions[s];
                    sess.pump_now(self.out).await?;
                    if sess.active.as_ref().is_some_and(|a| a.first_result) {
                        break;
                    }
                    if flags & STEP_RETRY == 0 {
                        self.out.push_str(&format::step_waiting(&pstep.name, sql));
                    }
                    return Ok(true);
                }
            }
            let waited = start.elapsed();
            if waited > self.options.step_timeout && !canceled {
                let token = self.sessions[s].client.cancel_token();
                if token.cancel_query(NoTls).await.is_ok() {
                    self.out.push_str(&format!(
                        "isolationtester: canceling step {} after {} seconds\n",
                        pstep.name,
                        waited.as_secs()
                    ));
                    canceled = true;
                }
            }
            if waited > 2 * self.options.step_timeout {
                return Err(SpecError::Timeout { step: pstep.name.clone(), seconds: waited.as_secs() });
            }
        }

        if self.step_has_blocker(perm, targets, k) {
            if flags & STEP_RETRY == 0 {
                self.out.push_str(&format::step_waiting(&pstep.name, sql));
            }
            return Ok(true);
        }

        if flags & STEP_RETRY != 0 {
            self.out.push_str(&format::step_completed(&pstep.name));
        } else {
            self.out.push_str(&format::step(&pstep.name, sql));
        }

        // Print the results, reading the rest of the step's output.
        let mut current: Option<ResultSet> = None;
        loop {
            let sess = &mut self.sessions[s];
            let active = sess.active.as_mut().expect("active step");
            let events = std::mem::take(&mut active.pending);
            let done = active.done;
            for ev in events {
                match ev {
                    Ev::Notice(text) => {
                        self.out.push_str(&text);
                        sess.total_notices += 1;
                    }
                    Ev::Columns(cols) => current = Some((cols, Vec::new())),
                    Ev::Row(r) => {
                        if let Some((_, rows)) = current.as_mut() {
                            rows.push(r);
                        }
                    }
                    Ev::Complete => {
                        if let Some((cols, rows)) = current.take() {
                            self.out.push_str(&format::result_set(&cols, &rows));
                        }
                    }
                    Ev::Error(text) => self.out.push_str(&text),
                }
            }
            if done {
                break;
            }
            match tokio::time::timeout(2 * self.options.step_timeout, sess.pump(self.out)).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(SpecError::Timeout { step: pstep.name.clone(), seconds: start.elapsed().as_secs() })
                }
            }
        }

        // Report NOTIFY messages that arrived, naming the sending session.
        let sess = &mut self.sessions[s];
        sess.active = None;
        sess.pump_now(self.out).await?;
        let notifications = std::mem::take(&mut self.sessions[s].notifications);
        for n in notifications {
            let sender = self
                .sessions
                .iter()
                .find(|o| o.pid == n.process_id())
                .map(|o| o.name.clone())
                .unwrap_or_else(|| format!("PID {}", n.process_id()));
            self.out.push_str(&format::notify(&spec.sessions[s].name, n.channel(), n.payload(), &sender));
        }
        Ok(false)
    }
}

/// The database PostgreSQL's regression driver runs its isolation schedule in; some specs
/// name it (`intra-grant-inplace-db`).
pub const REGRESSION_DATABASE: &str = "isolation_regression";

/// Create [`REGRESSION_DATABASE`] afresh on the server `config` reaches (as the driver does)
/// and return settings that connect to it. For a throwaway cluster only: it drops a database
/// of that name.
pub fn regression_database(config: &Config) -> Result<Config, SpecError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SpecError::Server { what: "starting the tokio runtime".into(), error: e.to_string() })?;
    runtime.block_on(async {
        let (client, conn) = config
            .connect(NoTls)
            .await
            .map_err(|e| SpecError::Connect { what: "creating the regression database".into(), error: describe(&e) })?;
        let task = tokio::spawn(conn);
        for sql in
            [format!("DROP DATABASE IF EXISTS {REGRESSION_DATABASE}"), format!("CREATE DATABASE {REGRESSION_DATABASE}")]
        {
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| SpecError::Setup { what: sql.clone(), error: describe(&e) })?;
        }
        drop(client);
        let _ = task.await;
        Ok::<_, SpecError>(())
    })?;
    let mut c = config.clone();
    c.dbname(REGRESSION_DATABASE);
    Ok(c)
}
