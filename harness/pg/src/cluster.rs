//! A PostgreSQL server to run scenarios on, with no setup: a throwaway cluster of its own
//! ([`Cluster::embedded`]) or a scratch database on a server someone else runs
//! ([`Cluster::external`], from `--database-url` / `DATABASE_URL`).
//!
//! The embedded cluster lives in a fresh temporary directory: `initdb` with trust
//! authentication, then `postgres` started directly as a child process (so that racelab owns
//! its pid) listening only on a Unix socket inside that directory, with durability switched
//! off (`fsync`, `synchronous_commit`, `full_page_writes`) and a short `deadlock_timeout`.
//! PostgreSQL refuses to run as root, so as root both programs run as the `postgres` system
//! user if there is one, else as `nobody`, each with shared memory of its own that dies with it
//! (see [`crate::sandbox`]).
//!
//! Cleanup, from the gentlest case to the hardest:
//! - Dropping the [`Cluster`] stops the server (immediate shutdown, `SIGQUIT`; `SIGKILL` if it
//!   has not exited within 5 s) and removes the directory. Immediate shutdown rather than
//!   `SIGTERM`: `SIGTERM` is PostgreSQL's "smart" shutdown, which waits for clients to leave,
//!   and the data is thrown away anyway.
//! - `SIGINT` / `SIGTERM` to racelab: after [`install_interrupt_cleanup`], a handler stops
//!   every live cluster, removes their directories (and drops external scratch databases),
//!   then exits with status 130.
//! - `SIGKILL` to racelab: the server still dies, because it is started with
//!   `PR_SET_PDEATHSIG = SIGQUIT`; only the temporary directory is left behind. The parent
//!   that `PR_SET_PDEATHSIG` watches is the spawning *thread*, so servers are spawned from one
//!   helper thread that lives as long as the process, never from the caller's thread (which
//!   may be a short-lived test thread).
//!
//! All functions here block; call them from synchronous code, not from inside an async
//! runtime.

use std::fs;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Config, NoTls};

use crate::error::{error_text, PgError};
use crate::owner::{self, Owner};
use crate::sandbox;

/// The port number only names the socket file (`.s.PGSQL.<port>`); nothing listens on TCP.
const SOCKET_PORT: u16 = 5432;
/// The role `initdb` creates; it is the cluster's superuser.
const SUPERUSER: &str = "racelab";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// `deadlock_timeout` of the embedded server. The controller waits this long (plus a margin)
/// after a statement blocks, so that its deadlock check has run: see `session.rs`.
pub const DEADLOCK_TIMEOUT_MS: u64 = 20;

/// A PostgreSQL server with a scratch database that racelab may use as it likes.
pub struct Cluster {
    kind: Kind,
    config: Config,
    target: String,
}

enum Kind {
    Embedded(Embedded),
    External { admin: Box<Config>, dbname: String, id: u64 },
}

struct Embedded {
    child: Child,
    dir: Option<tempfile::TempDir>,
    id: u64,
}

impl Cluster {
    /// `DATABASE_URL` if it is set (and not empty), else a new embedded cluster.
    pub fn from_env() -> Result<Cluster, PgError> {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => Cluster::external_from("DATABASE_URL", &url),
            _ => Cluster::embedded(),
        }
    }

    /// Start a throwaway cluster in a new temporary directory. First removes the cluster
    /// directories that killed racelab runs left behind (see [`crate::owner`]).
    pub fn embedded() -> Result<Cluster, PgError> {
        let bin = find_binaries()?;
        let run_as = if unsafe { libc::geteuid() } == 0 { Some(unprivileged_user()?) } else { None };
        let parent = cluster_parent(run_as.as_ref())?;
        owner::remove_stale_dirs(&parent);
        if parent != std::env::temp_dir() {
            owner::remove_stale_dirs(&std::env::temp_dir());
        }
        let owner = Owner::current().ok_or_else(|| {
            PgError::io("reading this process's start time and boot id", std::io::Error::other("/proc unreadable"))
        })?;
        let id = next_id();
        // Until the cluster is built, an early return unregisters what is registered.
        let registered = Registered(id);
        let dir = {
            // Registered under the lock, so that an interrupt either sees the directory or
            // comes before it exists.
            let mut live = registry().lock().unwrap_or_else(|p| p.into_inner());
            let dir = tempfile::Builder::new()
                .prefix(owner::DIR_PREFIX)
                .tempdir_in(&parent)
                .map_err(|e| PgError::io(format!("creating a directory for the cluster in {}", parent.display()), e))?;
            live.push(Live::Dir { id, dir: dir.path().to_path_buf() });
            dir
        };
        let root = dir.path().to_path_buf();
        fs::write(root.join(owner::OWNER_FILE), owner.tag())
            .map_err(|e| PgError::io(format!("writing {}", root.join(owner::OWNER_FILE).display()), e))?;
        if let Some(u) = &run_as {
            chown(&root, u)?;
        }
        let data = root.join("data");
        let log = root.join("postgres.log");

        // initdb
        let mut cmd = Command::new(bin.join("initdb"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C", "--no-instructions"])
            .current_dir(&root)
            .env_remove("PGDATA")
            .stdin(Stdio::null());
        if let Some(u) = &run_as {
            sandbox::privately_as(&mut cmd, u.uid, u.gid);
        }
        let shown = format!("{:?}", cmd);
        // Its own process group, so that an interrupt ends it and the backend it runs alike;
        // dying with racelab, like the server.
        cmd.process_group(0).stdout(Stdio::piped()).stderr(Stdio::piped());
        die_with_parent(&mut cmd, libc::SIGKILL);
        let out = spawn_registered(cmd, id, true)
            .and_then(|child| child.wait_with_output())
            .map_err(|e| PgError::io(format!("running {}", bin.join("initdb").display()), e));
        unregister_process(id);
        let out = out?;
        if !out.status.success() {
            let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if stderr.trim().is_empty() {
                stderr = String::from_utf8_lossy(&out.stdout).into_owned();
            }
            return Err(PgError::Initdb { command: shown, status: out.status.to_string(), stderr });
        }

        // postgres
        let logfile = fs::File::create(&log).map_err(|e| PgError::io(format!("creating {}", log.display()), e))?;
        let logfile2 = logfile.try_clone().map_err(|e| PgError::io("duplicating the log file handle", e))?;
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D").arg(&data).arg("-k").arg(&root).arg("-p").arg(SOCKET_PORT.to_string());
        for setting in [
            "listen_addresses=".to_string(),
            "fsync=off".to_string(),
            "synchronous_commit=off".to_string(),
            "full_page_writes=off".to_string(),
            format!("deadlock_timeout={DEADLOCK_TIMEOUT_MS}ms"),
            "max_connections=100".to_string(),
            "autovacuum=off".to_string(),
            "jit=off".to_string(),
            "max_parallel_workers_per_gather=0".to_string(),
            "logging_collector=off".to_string(),
            "log_min_messages=fatal".to_string(),
            "log_min_error_statement=panic".to_string(),
        ] {
            cmd.arg("-c").arg(setting);
        }
        cmd.current_dir(&root).env_remove("PGDATA").stdin(Stdio::null()).stdout(logfile).stderr(logfile2);
        if let Some(u) = &run_as {
            sandbox::privately_as(&mut cmd, u.uid, u.gid);
        }
        die_with_parent(&mut cmd, libc::SIGQUIT);
        let child = spawn_registered(cmd, id, false)
            .map_err(|e| PgError::io(format!("starting {}", bin.join("postgres").display()), e))?;
        let mut config = Config::new();
        config.host_path(&root).port(SOCKET_PORT).user(SUPERUSER).dbname("postgres");
        config.application_name("racelab").connect_timeout(Duration::from_secs(5));
        let target = format!("{}/.s.PGSQL.{SOCKET_PORT}", root.display());
        // From here on the cluster's own drop unregisters.
        std::mem::forget(registered);
        let mut cluster = Cluster { kind: Kind::Embedded(Embedded { child, dir: Some(dir), id }), config, target };
        cluster.wait_until_ready(&log)?;
        Ok(cluster)
    }

    /// Use a server someone else runs: connect with `url` (a `postgresql://` URL or a
    /// `key=value` string), create a scratch database `racelab_<pid>_<n>`, and drop it again
    /// (`WITH (FORCE)`) when the cluster is dropped. Nothing is written anywhere else.
    /// Only unencrypted connections are supported (Unix sockets, or TCP without TLS).
    ///
    /// The scratch database carries racelab's owner tag as its comment; scratch databases
    /// whose owner (on this machine) is gone are dropped first, and only those.
    pub fn external(url: &str) -> Result<Cluster, PgError> {
        Cluster::external_from("the database URL", url)
    }

    /// [`Cluster::external`], naming where the URL came from (`--database-url`,
    /// `DATABASE_URL`) in the message when it cannot be parsed.
    pub fn external_from(source: &str, url: &str) -> Result<Cluster, PgError> {
        let admin: Config = url.parse().map_err(|e: tokio_postgres::Error| PgError::BadUrl {
            source: source.to_string(),
            message: e.to_string(),
        })?;
        let target = describe(&admin);
        let owner = Owner::current().ok_or_else(|| {
            PgError::io("reading this process's start time and boot id", std::io::Error::other("/proc unreadable"))
        })?;
        let n = next_id();
        let dbname = format!("racelab_{}_{n}", std::process::id());
        let create = format!("CREATE DATABASE {dbname}");
        let comment = format!("COMMENT ON DATABASE {dbname} IS '{}'", owner.tag());
        {
            // Registered (under the lock) before it is created: an interrupt waits for the
            // creation to end and then drops whatever exists.
            let mut live = registry().lock().unwrap_or_else(|p| p.into_inner());
            live.push(Live::Database { id: n, admin: Box::new(admin.clone()), dbname: dbname.clone() });
            let made = block_on(async {
                let client = connect(&admin, &target).await?;
                drop_stale_databases(&client).await;
                client.batch_execute(&create).await.map_err(|e| PgError::sql(format!("{create} on {target}"), &e))?;
                client.batch_execute(&comment).await.map_err(|e| PgError::sql(format!("{comment} on {target}"), &e))
            })
            .and_then(|r| r);
            if let Err(e) = made {
                live.retain(|l| l.id() != n);
                drop(live);
                let _ = drop_database(&admin, &dbname);
                return Err(e);
            }
        }
        let mut config = admin.clone();
        config.dbname(&dbname);
        let target = describe(&config);
        Ok(Cluster { kind: Kind::External { admin: Box::new(admin), dbname, id: n }, config, target })
    }

    /// Connection settings for the scratch database.
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// Where the scratch database is, for messages (no password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The server's process id, for an embedded cluster.
    pub fn server_pid(&self) -> Option<u32> {
        match &self.kind {
            Kind::Embedded(e) => Some(e.child.id()),
            Kind::External { .. } => None,
        }
    }

    /// The cluster's temporary directory (data, socket and log), for an embedded cluster.
    pub fn dir(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Embedded(e) => e.dir.as_ref().map(|d| d.path()),
            Kind::External { .. } => None,
        }
    }

    fn wait_until_ready(&mut self, log: &Path) -> Result<(), PgError> {
        let Kind::Embedded(e) = &mut self.kind else { return Ok(()) };
        let deadline = Instant::now() + START_TIMEOUT;
        let config = self.config.clone();
        let rt = runtime()?;
        loop {
            if let Ok(Some(status)) = e.child.try_wait() {
                return Err(PgError::ServerDidNotStart {
                    reason: format!("postgres exited with {status}"),
                    log: log.to_path_buf(),
                    log_tail: tail(log),
                });
            }
            let attempt = rt.block_on(async {
                let (client, conn) = config.connect(NoTls).await?;
                let task = tokio::spawn(conn);
                let r = client.simple_query("SELECT 1").await;
                drop(client);
                let _ = task.await;
                r.map(|_| ())
            });
            match attempt {
                Ok(()) => return Ok(()),
                Err(err) if Instant::now() >= deadline => {
                    return Err(PgError::ServerDidNotStart {
                        reason: format!(
                            "no connection within {} s (last attempt: {})",
                            START_TIMEOUT.as_secs(),
                            error_text(&err)
                        ),
                        log: log.to_path_buf(),
                        log_tail: tail(log),
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        match &mut self.kind {
            // Unregistered only once done: an interrupt meanwhile finishes the job.
            Kind::Embedded(e) => {
                stop_server(&mut e.child);
                if let Some(dir) = e.dir.take() {
                    let _ = dir.close();
                }
                unregister(e.id);
            }
            Kind::External { admin, dbname, id } => {
                let _ = drop_database(admin, dbname);
                unregister(*id);
            }
        }
    }
}

/// Stop every live cluster and remove its directory when racelab gets SIGINT or SIGTERM,
/// then exit with status 130. Call once, early; later calls do nothing. SIGKILL cannot be
/// caught: servers then die through `PR_SET_PDEATHSIG`, and their directories and scratch
/// databases stay until the next run removes them (see [`crate::owner`]).
///
/// While the handler cleans up, the rest of the program may see its server vanish; callers
/// check [`interrupted`] before reporting such a failure, and wait for the exit instead.
pub fn install_interrupt_cleanup() -> Result<(), PgError> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            ctrlc::set_handler(|| {
                INTERRUPTED.store(true, Ordering::SeqCst);
                // The cleanup kills children whose pipes the main thread may be writing to: a
                // SIGPIPE there must not end racelab before it exits with 130.
                // SAFETY: changing a signal disposition; the process exits right after.
                unsafe {
                    libc::signal(libc::SIGPIPE, libc::SIG_IGN);
                }
                // Hold the registry until the exit: nothing new is made meanwhile.
                let mut live = registry().lock().unwrap_or_else(|p| p.into_inner());
                clean(std::mem::take(&mut *live));
                let others = ALSO_ON_INTERRUPT.lock().unwrap_or_else(|p| p.into_inner()).clone();
                for cleanup in others {
                    cleanup();
                }
                std::process::exit(130);
            })
            .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(PgError::Interrupt)
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Cleanups of other backends (real files and processes) that the one process-wide handler
/// runs too: a process has one SIGINT handler, so the backends share it.
static ALSO_ON_INTERRUPT: std::sync::Mutex<Vec<fn()>> = std::sync::Mutex::new(Vec::new());

/// Run `cleanup` as well when an interrupt ends racelab (before the exit with 130).
pub fn also_on_interrupt(cleanup: fn()) {
    let mut others = ALSO_ON_INTERRUPT.lock().unwrap_or_else(|p| p.into_inner());
    assert!(others.len() < 16, "a handful of backends at most");
    if !others.contains(&cleanup) {
        others.push(cleanup);
    }
}

/// Has a SIGINT or SIGTERM started the cleanup? The process is then about to exit with 130.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Stop every live server and drop every scratch database this process made.
pub fn cleanup_all() {
    let live = std::mem::take(&mut *registry().lock().unwrap_or_else(|p| p.into_inner()));
    clean(live);
}

/// Processes first (so that nothing writes into a directory being removed), then
/// directories, then databases.
fn clean(live: Vec<Live>) {
    for l in &live {
        match l {
            Live::Server { pid, .. } => stop_pid(*pid),
            Live::Process { pid, .. } => kill_group(*pid),
            _ => {}
        }
    }
    for l in live {
        match l {
            Live::Dir { dir, .. } => remove_dir(&dir),
            Live::Database { admin, dbname, .. } => {
                let _ = drop_database(&admin, &dbname);
            }
            Live::Server { .. } | Live::Process { .. } => {}
        }
    }
}

/// Remove a directory that a process killed a moment ago may still have been writing to.
fn remove_dir(dir: &Path) {
    for _ in 0..10 {
        if fs::remove_dir_all(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- live clusters, for the interrupt handler ----

/// What racelab made and must end; entries of one cluster share its id.
enum Live {
    /// A cluster's directory.
    Dir { id: u64, dir: PathBuf },
    /// A running server, stopped with an immediate shutdown.
    Server { id: u64, pid: libc::pid_t },
    /// A helper (`initdb`) leading its own process group, killed with the whole group.
    Process { id: u64, pid: libc::pid_t },
    /// A scratch database on an external server.
    Database { id: u64, admin: Box<Config>, dbname: String },
}

impl Live {
    fn id(&self) -> u64 {
        match self {
            Live::Dir { id, .. } | Live::Server { id, .. } | Live::Process { id, .. } | Live::Database { id, .. } => {
                *id
            }
        }
    }
}

fn registry() -> &'static Mutex<Vec<Live>> {
    static LIVE: Mutex<Vec<Live>> = Mutex::new(Vec::new());
    &LIVE
}

fn unregister(id: u64) {
    registry().lock().unwrap_or_else(|p| p.into_inner()).retain(|l| l.id() != id);
}

fn unregister_process(id: u64) {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|l| !matches!(l, Live::Process { id: i, .. } if *i == id));
}

/// Unregisters a cluster being built when building it fails.
struct Registered(u64);

impl Drop for Registered {
    fn drop(&mut self) {
        unregister(self.0);
    }
}

/// Spawn `cmd` (from the keeper thread) and register it under `id` in one step, so that an
/// interrupt either finds it registered or comes before it exists.
fn spawn_registered(cmd: Command, id: u64, helper: bool) -> std::io::Result<Child> {
    let mut live = registry().lock().unwrap_or_else(|p| p.into_inner());
    let child = spawn_from_keeper(cmd)?;
    let pid = child.id() as libc::pid_t;
    live.push(if helper { Live::Process { id, pid } } else { Live::Server { id, pid } });
    Ok(child)
}

/// The child gets `signal` when racelab dies, even by `SIGKILL`.
fn die_with_parent(cmd: &mut Command, signal: libc::c_int) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("racelab exited while starting a PostgreSQL program"));
            }
            Ok(())
        });
    }
}

/// Kill a process group led by a child of ours and reap the leader.
fn kill_group(pid: libc::pid_t) {
    unsafe {
        libc::killpg(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

// ---- stopping ----

fn stop_server(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    // Immediate shutdown.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGQUIT) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Like [`stop_server`] for a pid without its `Child` (in the signal handler).
fn stop_pid(pid: libc::pid_t) {
    unsafe { libc::kill(pid, libc::SIGQUIT) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        let mut status = 0;
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r != 0 {
            return; // reaped, or not our child any more
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Drop the scratch databases whose owner tag says their racelab process is gone. Failures
/// are ignored: this is housekeeping, and the database may be gone already.
async fn drop_stale_databases(client: &Client) {
    let query = "SELECT datname, pg_catalog.shobj_description(oid, 'pg_database') FROM pg_catalog.pg_database \
                 WHERE datname LIKE 'racelab\\_%' LIMIT 10000";
    let Ok(rows) = tokio::time::timeout(Duration::from_secs(10), client.query(query, &[])).await else { return };
    for row in rows.into_iter().flatten() {
        let (name, comment): (String, Option<String>) = (row.get(0), row.get(1));
        let stale = comment.as_deref().and_then(Owner::parse).is_some_and(|o| o.is_gone());
        // The name is racelab's own pattern (racelab_<pid>_<n>), so it needs no quoting.
        if stale && is_scratch_name(&name) {
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = tokio::time::timeout(Duration::from_secs(10), client.batch_execute(&sql)).await;
        }
    }
}

/// `racelab_<digits>_<digits>`.
fn is_scratch_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("racelab_") else { return false };
    let mut parts = rest.split('_');
    let digits = |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
}

fn drop_database(admin: &Config, dbname: &str) -> Result<(), PgError> {
    let target = describe(admin);
    let sql = format!("DROP DATABASE IF EXISTS {dbname} WITH (FORCE)");
    block_on(async {
        let client = connect(admin, &target).await?;
        client.batch_execute(&sql).await.map_err(|e| PgError::sql(format!("{sql} on {target}"), &e))
    })?
}

// ---- spawning ----

/// Spawn `cmd` from a thread that lives as long as the process, so that the child's
/// `PR_SET_PDEATHSIG` fires when the process dies, not when the calling thread ends.
fn spawn_from_keeper(cmd: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("racelab-pg-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the racelab-pg spawner thread");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    keeper
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    answer.recv().map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

// ---- finding things ----

/// The first directory that holds both `initdb` and `postgres`: `$RACELAB_PG_BINDIR`, then
/// `PATH`, then `/usr/lib/postgresql/<version>/bin` (highest version first), then
/// `/usr/pgsql-<version>/bin` and `/usr/local/pgsql/bin`.
fn find_binaries() -> Result<PathBuf, PgError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("RACELAB_PG_BINDIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let mut searched = Vec::new();
    for (parent, prefix, suffix) in [("/usr/lib/postgresql", "", "bin"), ("/usr", "pgsql-", "bin")] {
        let mut versioned: Vec<(Vec<u64>, PathBuf)> = fs::read_dir(parent)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let v = name.strip_prefix(prefix)?;
                let key: Vec<u64> = v.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
                Some((key, e.path().join(suffix)))
            })
            .collect();
        versioned.sort_by(|a, b| b.0.cmp(&a.0));
        searched.push(PathBuf::from(format!("{parent}/{prefix}<version>/{suffix}")));
        dirs.extend(versioned.into_iter().map(|(_, p)| p));
    }
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    searched.push(PathBuf::from("/usr/local/pgsql/bin"));
    dirs.into_iter()
        .find(|d| is_executable(&d.join("initdb")) && is_executable(&d.join("postgres")))
        .ok_or(PgError::MissingBinaries { searched })
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

struct User {
    name: String,
    uid: u32,
    gid: u32,
}

fn unprivileged_user() -> Result<User, PgError> {
    ["postgres", "nobody"].into_iter().find_map(lookup_user).ok_or(PgError::NoUnprivilegedUser)
}

fn lookup_user(name: &str) -> Option<User> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; the result points into `pwd`/`buf`.
    let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some(User { name: name.to_string(), uid: pwd.pw_uid, gid: pwd.pw_gid })
}

/// Where cluster directories go: the temporary directory, unless the unprivileged user the
/// server runs as cannot enter it (a private `TMPDIR`, mode 0700, as `mktemp -d` makes it);
/// then `/tmp`, which every user can enter.
fn cluster_parent(run_as: Option<&User>) -> Result<PathBuf, PgError> {
    let tmp = std::env::temp_dir();
    let Some(user) = run_as else { return Ok(tmp) };
    if can_enter(&tmp, user) {
        return Ok(tmp);
    }
    let fallback = PathBuf::from("/tmp");
    if can_enter(&fallback, user) {
        return Ok(fallback);
    }
    Err(PgError::io(
        format!(
            "choosing a directory for the cluster: user {} (who runs the server) cannot enter {} or /tmp",
            user.name,
            tmp.display()
        ),
        std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    ))
}

/// Can `user` reach `dir` (search permission on it and every ancestor)? Supplementary groups
/// are not considered, so this may say no where the answer is yes, never the other way.
fn can_enter(dir: &Path, user: &User) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = dir.canonicalize() else { return false };
    dir.ancestors().all(|d| {
        let Ok(m) = fs::metadata(d) else { return false };
        let mode = m.mode();
        if m.uid() == user.uid {
            mode & 0o100 != 0
        } else if m.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    })
}

fn chown(path: &Path, user: &User) -> Result<(), PgError> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .map_err(|e| PgError::io(format!("handing {} to user {}", path.display(), user.name), e))
}

/// The last 20 lines of the server log.
fn tail(log: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(log) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(8192)));
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        s = String::from_utf8_lossy(&bytes).into_owned();
    }
    let lines: Vec<&str> = s.lines().collect();
    let t = lines[lines.len().saturating_sub(20)..].join("\n");
    if t.is_empty() {
        "(empty)".into()
    } else {
        t
    }
}

/// `user@host:port/dbname`, without the password.
pub(crate) fn describe(c: &Config) -> String {
    use tokio_postgres::config::Host;
    let host = match c.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        c.get_user().unwrap_or("(default user)"),
        c.get_dbname().unwrap_or("(default database)")
    )
}

// ---- async helpers shared with the controller ----

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, PgError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PgError::io("starting a tokio runtime", e))
}

fn block_on<F: Future>(f: F) -> Result<F::Output, PgError> {
    Ok(runtime()?.block_on(f))
}

/// Connect and drive the connection on the current runtime; bounded by 10 s.
pub(crate) async fn connect(config: &Config, target: &str) -> Result<Client, PgError> {
    let attempt = tokio::time::timeout(Duration::from_secs(10), config.connect(NoTls)).await;
    match attempt {
        Err(_) => Err(PgError::Timeout { what: format!("connecting to {target}") }),
        Ok(Err(e)) => Err(PgError::connect(target, &e)),
        Ok(Ok((client, conn))) => {
            tokio::spawn(conn);
            Ok(client)
        }
    }
}
