//! The `racelab` command line, as a library: a crate with races of its own calls [`main`] with
//! its catalogue and gets every subcommand and backend. The project's own binary is one such
//! caller (`src/main.rs`).
//!
//! ```no_run
//! use racelab::App;
//! fn main() -> std::process::ExitCode {
//!     racelab::main(App::new("my-races", Vec::new, concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios")))
//! }
//! ```

mod pg_spec;
mod stress;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use racelab_harness::catalogue::RaceDef;
use racelab_harness::run::{Backend as RunBackend, Checked, Mode, Verdict};
use racelab_harness::scenario::{self, Scenario};
use racelab_harness::token;
use serde_json::json;

mod diagram;
mod junit;
mod play;
mod report;
mod scale;
mod walk;

#[derive(Parser)]
#[command(name = "racelab", version, about = "Explore production races as buggy and fixed state machines")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the catalogue: races, variants, seeds, invariants and scenario files.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: ScenarioDir,
    },
    /// Explore scenarios and compare each verdict with the one its file expects.
    Check {
        /// `race/variant`, a whole `race`, or `all`.
        #[arg(default_value = "all")]
        ids: Vec<String>,
        #[arg(long, value_enum, default_value_t = Backend::Sim)]
        backend: Backend,
        /// racelab's explorers; loom or shuttle on the same model (simulator only); or turmoil's
        /// simulated hosts and network (seeded sampling).
        #[arg(long, value_enum, default_value_t = Engine::Racelab)]
        engine: Engine,
        /// Default: the scenario file's `[explore]` mode, else exhaustive.
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// Seed for random and PCT schedules; with turmoil, the first seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Schedules per scenario: for random and PCT (default 1000); for dpor, the executions
        /// it may run before the verdict is `inconclusive` (default 1000000); for loom and shuttle's DFS,
        /// the executions they may run before the verdict is `inconclusive` (default 100000);
        /// with turmoil, seeds per scenario (default: the scenario file's `[turmoil] seeds`).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        schedules: Option<u64>,
        /// PCT bug depth d.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=10))]
        depth: u32,
        #[arg(long)]
        json: bool,
        /// Also write the verdicts as JUnit XML to FILE, one test case per scenario.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        #[command(flatten)]
        dir: ScenarioDir,
        #[command(flatten)]
        db: DatabaseArg,
        #[command(flatten)]
        scale: ScaleArgs,
    },
    /// Combine the shares of `check --shard i/n --json` runs (their JSON Lines files) into the
    /// verdict one unsharded run gives.
    Merge {
        #[arg(required = true, value_name = "FILE.jsonl")]
        files: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: ScenarioDir,
    },
    /// Replay a schedule token and print its timeline.
    Replay {
        id: String,
        token: String,
        #[arg(long, value_enum, default_value_t = Backend::Sim)]
        backend: Backend,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: ScenarioDir,
        #[command(flatten)]
        db: DatabaseArg,
    },
    /// Run every explored schedule of the database scenarios on the simulator and on
    /// PostgreSQL, and compare them step by step: rows, SQLSTATEs, waits.
    Conform {
        #[arg(default_value = "all")]
        ids: Vec<String>,
        /// At most this many schedules per scenario.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        schedules: u64,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: ScenarioDir,
        #[command(flatten)]
        db: DatabaseArg,
    },
    /// Run PostgreSQL isolation-test specs (the format of PostgreSQL's src/test/isolation) and
    /// print their output as PostgreSQL's isolation tester does. Every spec runs, even after
    /// one fails; exit 1 if one errs or differs from its expected output.
    PgSpec {
        #[arg(required = true, value_name = "FILE.spec")]
        files: Vec<PathBuf>,
        /// Write each output to DIR/<name>.out instead of standard output.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// Compare each output with DIR/<name>.out (or an alternative DIR/<name>_N.out, as
        /// PostgreSQL's regression driver accepts).
        #[arg(long, value_name = "DIR")]
        expected_dir: Option<PathBuf>,
        #[command(flatten)]
        db: DatabaseArg,
    },
    /// Write a database scenario's schedule as a PostgreSQL isolation-test spec: its shortest
    /// counterexample on the simulator, the schedule of --token, or, for a scenario that holds,
    /// its first explored schedule.
    ExportSpec {
        id: String,
        /// Write the spec to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Export this schedule token instead.
        #[arg(long)]
        token: Option<String>,
        #[command(flatten)]
        dir: ScenarioDir,
    },
    /// Write a static site (offline) and Markdown: every race, its seed, its verdicts, and per
    /// variant the shortest counterexample as a sequence diagram or what was explored.
    Report {
        #[arg(default_value = "all")]
        ids: Vec<String>,
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR", default_value = "reports/site")]
        out: PathBuf,
        /// Also explore the database scenarios on PostgreSQL and show that verdict.
        #[arg(long, value_enum, default_value_t = Backend::Sim)]
        backend: Backend,
        #[command(flatten)]
        dir: ScenarioDir,
        #[command(flatten)]
        db: DatabaseArg,
    },
    /// Be the scheduler: a local page where you pick who moves next and which fault strikes.
    Play {
        /// The scenario to start on (`race/variant`, or a race for its first variant).
        id: Option<String>,
        /// Port on 127.0.0.1 (default: any free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        #[command(flatten)]
        dir: ScenarioDir,
    },
    /// Run database scenarios' actors freely and concurrently on a real server, round after
    /// round, and check the invariants after each round: operations/s and violations found.
    Stress {
        /// `race/variant`, a whole `race`, or `all`.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Concurrent clients: the model's worker count is raised to this, up to what it allows.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        clients: u64,
        /// Run rounds until this many operations have run.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        ops: u64,
        /// Stress needs a real server: only `postgres`.
        #[arg(long, value_enum, default_value_t = Backend::Postgres)]
        backend: Backend,
        #[command(flatten)]
        dir: ScenarioDir,
        #[command(flatten)]
        db: DatabaseArg,
    },
    /// Show the shortest counterexample, or what was explored for a variant that holds.
    Explain {
        id: String,
        #[arg(long, value_enum, default_value_t = Backend::Sim)]
        backend: Backend,
        #[command(flatten)]
        dir: ScenarioDir,
        #[command(flatten)]
        db: DatabaseArg,
    },
}

#[derive(clap::Args)]
struct ScenarioDir {
    /// Directory of scenario files (default: the catalogue's own, else ./scenarios).
    #[arg(long = "scenarios", value_name = "DIR")]
    path: Option<PathBuf>,
}

/// Budgets, progress, shards and threads of exhaustive searches on the simulator.
#[derive(clap::Args)]
struct ScaleArgs {
    /// Stop each scenario's exploration after SECS seconds with an `inconclusive` verdict and
    /// the counts so far (exhaustive searches).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    time_limit: Option<u64>,
    /// Print a progress line on standard error (on a terminal it is printed anyway when one
    /// scenario is checked).
    #[arg(long)]
    progress: bool,
    /// Explore only share i of n of each scenario's state space (1 ≤ i ≤ n), for `racelab merge`.
    #[arg(long, value_name = "i/n", value_parser = parse_share_arg)]
    shard: Option<(u32, u32)>,
    /// Explore on N threads (the same result for every N).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256), conflicts_with = "shard")]
    threads: Option<u16>,
    /// Do not reduce by the model's declared symmetry of identical workers (to cross-check it,
    /// or to count every state).
    #[arg(long)]
    no_symmetry: bool,
}

fn parse_share_arg(text: &str) -> Result<(u32, u32), String> {
    racelab_harness::explore::budget::parse_share(text)
}

#[derive(clap::Args)]
struct DatabaseArg {
    /// A PostgreSQL server to use (racelab creates and drops a scratch database of its own
    /// there); default: $DATABASE_URL, else a throwaway cluster from the installed binaries.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

impl DatabaseArg {
    fn cluster(&self) -> Result<racelab_pg::Cluster, BadInput> {
        racelab_pg::install_interrupt_cleanup().map_err(|e| BadInput(e.to_string()))?;
        let cluster = match &self.database_url {
            Some(url) => racelab_pg::Cluster::external_from("--database-url", url),
            None => racelab_pg::Cluster::from_env(),
        };
        cluster.map_err(|e| BadInput(e.to_string()))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// The deterministic in-process simulation.
    Sim,
    /// A real PostgreSQL server, one statement at a time (database scenarios only).
    Postgres,
    /// Real files and processes: file ops as syscalls in a private directory, one worker
    /// process per actor (file scenarios only).
    Real,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Every schedule within the bounds (`dfs` names it for shuttle).
    #[value(alias = "dfs")]
    Exhaustive,
    Random,
    Pct,
    /// Source-DPOR with sleep sets (simulator): one execution per trace or a few more.
    Dpor,
}

/// Executions `--mode dpor` may run per scenario unless `--schedules` says otherwise.
const DEFAULT_DPOR_EXECUTIONS: u64 = 1_000_000;

/// A failure to report: exit 2 for bad input.
pub(crate) struct BadInput(String);

/// Standard output could not be written (a full disk, a closed file): a failure to report,
/// not a panic as `println!` would make it.
fn stdout_failed(e: std::io::Error) -> BadInput {
    BadInput(format!("writing to standard output: {e}"))
}

/// `writeln!` to standard output, returning [`BadInput`] from the enclosing function when the
/// write fails.
macro_rules! say {
    ($w:expr) => {
        writeln!($w).map_err(stdout_failed)?
    };
    ($w:expr, $($arg:tt)*) => {
        writeln!($w, $($arg)*).map_err(stdout_failed)?
    };
}

// After `say!`, which it uses.
mod engine;

pub use engine::Engine;

/// What a racelab command line serves: a name for messages, the catalogue, and where its
/// scenario files live when `--scenarios` is not given.
#[derive(Clone)]
pub struct App {
    /// The program name shown in messages (`racelab: unknown id …`).
    pub name: &'static str,
    /// Builds the catalogue. A function, so that it is built once per run.
    pub catalogue: fn() -> Vec<RaceDef>,
    /// Default scenario directory when `--scenarios` is absent (else `./scenarios`).
    pub scenarios: PathBuf,
}

impl App {
    pub fn new(name: &'static str, catalogue: fn() -> Vec<RaceDef>, scenarios: impl Into<PathBuf>) -> App {
        App { name, catalogue, scenarios: scenarios.into() }
    }
}

/// Parse the process's arguments and run one racelab command on `app`'s catalogue. Exit codes: 0
/// when every verdict is the expected one, 1 when one differs, 2 on bad input.
pub fn main(app: App) -> ExitCode {
    // Started as a real-backend worker (a spawned daemon): serve its steps and exit.
    racelab_real::serve_if_worker();
    // Die quietly on a closed pipe (`racelab check all | head`), as command-line tools do.
    // SAFETY: setting a signal disposition at startup, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    quiet_panics_when_the_server_is_gone();
    // From the first moment, so that an interrupt during start-up also ends with 130 and cleans
    // up whatever was made by then.
    racelab_pg::also_on_interrupt(racelab_real::cleanup_all);
    if let Err(e) = racelab_pg::install_interrupt_cleanup() {
        eprintln!("{}: {e}", app.name);
        return ExitCode::from(2);
    }
    let matches = Cli::command().name(app.name).bin_name(app.name).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = run(cli, &app);
    // An interrupt's cleanup may have made this run fail; it ends the process with 130.
    wait_for_interrupt_exit();
    match result {
        Ok(code) => code,
        Err(BadInput(message)) => {
            eprintln!("{}: {message}", app.name);
            ExitCode::from(2)
        }
    }
}

/// Parse a command line (the program name first) without running it: `Err` with clap's
/// message for one that `main` would reject. For property tests of the argument parser.
pub fn parse_args(app: &App, args: &[String]) -> Result<(), String> {
    let matches =
        Cli::command().name(app.name).bin_name(app.name).try_get_matches_from(args).map_err(|e| e.to_string())?;
    Cli::from_arg_matches(&matches).map(|_| ()).map_err(|e| e.to_string())
}

/// While the SIGINT/SIGTERM handler cleans up, servers vanish under the running command,
/// which may then fail or panic: this thread waits for the handler's exit instead (bounded,
/// in case the handler itself is stuck).
fn wait_for_interrupt_exit() {
    for _ in 0..6000 {
        if !racelab_pg::interrupted() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A panic caused by a lost server (the models meet outcomes they were never meant to see) or
/// by an interrupt's cleanup is not a bug of racelab: it is reported as the failure it is
/// (exit 2) or ends with the interrupt (130), without a panic trace. Other panics print as
/// usual.
fn quiet_panics_when_the_server_is_gone() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        wait_for_interrupt_exit();
        if !racelab_pg::server_lost() {
            default(info);
        }
    }));
}

/// Run `f` on a backend; a panic while the server is lost is that failure (exit 2).
fn guarded<T>(backends: &Backends, backend: &RunBackend, f: impl FnOnce() -> T) -> Result<T, BadInput> {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    backends.healthy(backend)?;
    match r {
        Ok(v) => Ok(v),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn run(cli: Cli, app: &App) -> Result<ExitCode, BadInput> {
    let stdout = std::io::stdout();
    let w = &mut stdout.lock();
    let code = run_command(cli, app, w)?;
    w.flush().map_err(stdout_failed)?;
    Ok(code)
}

fn run_command(cli: Cli, app: &App, w: &mut dyn Write) -> Result<ExitCode, BadInput> {
    let catalogue = (app.catalogue)();
    let load = |dir: &ScenarioDir, catalogue: &[RaceDef]| load(dir, catalogue, &app.scenarios);
    match cli.command {
        Command::List { json, dir } => list(w, &catalogue, &load(&dir, &catalogue)?, json),
        Command::Check { ids, backend, engine, mode, seed, schedules, depth, json, junit, dir, db, scale } => {
            let scenarios = load(&dir, &catalogue)?;
            let selected = select(&scenarios, &catalogue, &ids)?;
            if engine == Engine::Turmoil {
                if backend != Backend::Sim || mode.is_some() {
                    return Err(BadInput("--engine turmoil runs its own hosts: drop --backend and --mode".into()));
                }
                return engine::check_turmoil(w, &selected, seed, schedules, json);
            }
            let engine_budget = schedules.unwrap_or(engine::DEFAULT_ENGINE_BUDGET);
            let dpor_executions = schedules.unwrap_or(DEFAULT_DPOR_EXECUTIONS);
            let schedules = schedules.unwrap_or(1000);
            let mode = mode.map(|mode| match mode {
                ModeArg::Exhaustive => Mode::Exhaustive,
                ModeArg::Random => Mode::Random { seed, schedules },
                ModeArg::Pct => Mode::Pct { seed, schedules, depth },
                ModeArg::Dpor => Mode::Dpor { executions: dpor_executions },
            });
            let junit = junit.as_deref().map(junit::JunitFile::create).transpose()?;
            if (scale.shard.is_some() || scale.threads.is_some())
                && (backend != Backend::Sim || mode.as_ref().is_some_and(|m| *m != Mode::Exhaustive))
            {
                return Err(BadInput("--shard and --threads need the exhaustive mode on the simulator".into()));
            }
            if backend != Backend::Sim && mode.as_ref().is_some_and(|m| matches!(m, Mode::Dpor { .. })) {
                return Err(BadInput("--mode dpor forks simulated states: it needs --backend sim".into()));
            }
            let backends = Backends::new(backend, &db)?;
            let backend_name = match backend {
                Backend::Sim => "sim",
                Backend::Postgres => "postgres",
                Backend::Real => "real",
            };
            let run_engine =
                engine.engine(mode.as_ref().unwrap_or(&Mode::Exhaustive), backend_name).map_err(BadInput)?;
            let how = (mode.as_ref(), engine, run_engine, engine_budget);
            if backend == Backend::Sim {
                scale::catch_interrupts();
            }
            let code = check(w, app.name, &selected, how, &backends, (json, junit), &scale)?;
            Ok(if scale::interrupted() { ExitCode::from(130) } else { code })
        }
        Command::Merge { files, json, dir } => {
            let scenarios = load(&dir, &catalogue)?;
            merge(w, app.name, &scenarios, &files, json)
        }
        Command::Replay { id, token, backend, json, dir, db } => {
            let scenarios = load(&dir, &catalogue)?;
            // Bad input is rejected before any server starts.
            let s = replay_scenario(&scenarios, &catalogue, &id)?;
            let schedule = token::decode(&id, &token).map_err(|e| BadInput(e.to_string()))?;
            let backends = Backends::new(backend, &db)?;
            replay(w, s, &schedule, &token, &backends, json)
        }
        Command::Explain { id, backend, dir, db } => {
            let scenarios = load(&dir, &catalogue)?;
            let selected = select(&scenarios, &catalogue, std::slice::from_ref(&id))?;
            let backends = Backends::new(backend, &db)?;
            for s in &selected {
                let Some(b) = backends.for_scenario(s)? else { continue };
                let checked = guarded(&backends, &b, || s.model.check(&s.id, &s.mode, &s.bounds, &b))?;
                print_text(w, app.name, s, &s.mode, &checked, true)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Conform { ids, schedules, json, dir, db } => {
            let scenarios = load(&dir, &catalogue)?;
            let selected = select(&scenarios, &catalogue, &ids)?;
            let backends = Backends::new(Backend::Postgres, &db)?;
            conform(w, &selected, schedules as usize, &backends, json)
        }
        Command::PgSpec { files, out_dir, expected_dir, db } => {
            pg_spec::run(w, &files, out_dir.as_deref(), expected_dir.as_deref(), &db)
        }
        Command::Report { ids, out, backend, dir, db } => {
            let scenarios = load(&dir, &catalogue)?;
            let selected = select(&scenarios, &catalogue, &ids)?;
            let backends = Backends::new(backend, &db)?;
            report::run(&catalogue, &selected, &backends, &out)
        }
        Command::Play { id, port, dir } => {
            let scenarios = load(&dir, &catalogue)?;
            let start = match &id {
                Some(id) => {
                    let first = select(&scenarios, &catalogue, std::slice::from_ref(id))?[0].id.clone();
                    scenarios.iter().position(|s| s.id == first).expect("selected from these scenarios")
                }
                None => 0,
            };
            play::serve(scenarios, &catalogue, start, port, app.name)
        }
        Command::Stress { ids, clients, ops, backend, dir, db } => {
            let scenarios = load(&dir, &catalogue)?;
            let selected = select(&scenarios, &catalogue, &ids)?;
            if backend != Backend::Postgres {
                return Err(BadInput("stress runs actors on a real server: use --backend postgres".into()));
            }
            stress::run(w, &selected, clients as usize, ops, &db)
        }
        Command::ExportSpec { id, out, token, dir } => {
            export_spec(w, &load(&dir, &catalogue)?, &catalogue, &id, token.as_deref(), out.as_deref())
        }
    }
}

/// The backend each scenario runs on. A PostgreSQL cluster is started once, and each database
/// scenario gets its own controller on it.
struct Backends {
    cluster: Option<racelab_pg::Cluster>,
    /// `--backend real`: each file scenario gets a private directory.
    real_files: bool,
}

impl Backends {
    fn new(backend: Backend, db: &DatabaseArg) -> Result<Backends, BadInput> {
        Ok(Backends {
            cluster: if backend == Backend::Postgres { Some(db.cluster()?) } else { None },
            real_files: backend == Backend::Real,
        })
    }

    /// `None` for a scenario this backend cannot run (no database on `postgres`).
    fn for_scenario(&self, s: &Scenario) -> Result<Option<RunBackend>, BadInput> {
        if self.real_files {
            if !s.model.runs_on_real_os() {
                eprintln!("racelab: {} needs more than files and processes; skipped on real", s.id);
                return Ok(None);
            }
            return racelab_real::files_backend().map(Some).map_err(|e| BadInput(format!("{}: {e}", s.id)));
        }
        let Some(cluster) = &self.cluster else { return Ok(Some(RunBackend::Sim)) };
        let Some(shape) = s.model.database_shape(&s.bounds) else {
            eprintln!("racelab: {} has no database; skipped on postgres", s.id);
            return Ok(None);
        };
        racelab_pg::postgres(cluster, &shape.schema, &shape.text_columns, shape.sessions)
            .map(Some)
            .map_err(|e| BadInput(format!("{}: {e}", s.id)))
    }

    /// A run on a server that failed underneath is no verdict.
    fn healthy(&self, backend: &RunBackend) -> Result<(), BadInput> {
        if let RunBackend::Real { db, .. } = backend {
            // A panic while the server was lost may have poisoned the lock; the failure is still there.
            if let Some(failure) = db.lock().unwrap_or_else(|p| p.into_inner()).failure() {
                return Err(BadInput(format!("postgres: {failure}")));
            }
        }
        Ok(())
    }
}

fn load(dir: &ScenarioDir, catalogue: &[RaceDef], default: &Path) -> Result<Vec<Scenario>, BadInput> {
    // The catalogue's own scenarios first: a `./scenarios` of another project would name races
    // this catalogue does not have.
    let path = match &dir.path {
        Some(p) => p.clone(),
        None if default.is_dir() => default.to_path_buf(),
        None => PathBuf::from("scenarios"),
    };
    scenario::load_dir(&path, catalogue).map_err(|e| BadInput(e.to_string()))
}

/// Resolve ids: `all`, a race, or `race/variant`, keeping scenario-file order without repeats.
fn select<'s>(scenarios: &'s [Scenario], catalogue: &[RaceDef], ids: &[String]) -> Result<Vec<&'s Scenario>, BadInput> {
    let mut chosen: Vec<&Scenario> = Vec::new();
    for id in ids {
        let matches: Vec<&Scenario> =
            scenarios.iter().filter(|s| id == "all" || s.id == *id || s.race == *id).collect();
        if matches.is_empty() {
            let known_race = catalogue.iter().any(|r| r.id == id.as_str() || id.split('/').next() == Some(r.id));
            let hint = if known_race {
                "it is in the catalogue, but no scenario file names it".to_string()
            } else {
                let known: Vec<&str> = catalogue.iter().map(|r| r.id).collect();
                format!("known races: {}", known.join(", "))
            };
            return Err(BadInput(format!("unknown id `{id}`: {hint}")));
        }
        for m in matches {
            if !chosen.iter().any(|c| c.id == m.id) {
                chosen.push(m);
            }
        }
    }
    Ok(chosen)
}

fn list(w: &mut dyn Write, catalogue: &[RaceDef], scenarios: &[Scenario], json: bool) -> Result<ExitCode, BadInput> {
    for race in catalogue {
        for variant in &race.variants {
            let id = format!("{}/{}", race.id, variant.id);
            let file = scenarios.iter().find(|s| s.id == id);
            if json {
                let line = json!({
                    "id": id,
                    "race": race.id,
                    "variant": variant.id,
                    "seed": race.seed,
                    "invariant": race.invariant,
                    "summary": variant.summary,
                    "scenario": file.map(|s| s.path.display().to_string()),
                    "expected": file.map(|s| s.expected),
                });
                say!(w, "{line}");
            } else {
                let expected = file.map(|s| s.expected.to_string()).unwrap_or_else(|| "no scenario".into());
                say!(w, "{id:<48} {expected:<12} {}", variant.summary);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(
    w: &mut dyn Write,
    program: &str,
    selected: &[&Scenario],
    // The mode asked for (else each scenario's own), the engine asked for, the model checker
    // behind it (none for racelab's own explorers) and an exhaustive engine's execution budget.
    (mode, engine, run_engine, engine_budget): (Option<&Mode>, Engine, Option<racelab_engines::Engine>, u64),
    backends: &Backends,
    (json, junit): (bool, Option<junit::JunitFile>),
    scale: &ScaleArgs,
) -> Result<ExitCode, BadInput> {
    // On a terminal, several scenarios get a bar of scenarios; one gets the search's own line.
    let terminal = std::io::stderr().is_terminal();
    let show_progress = scale.progress || (terminal && selected.len() == 1);
    let bar = if terminal && selected.len() > 1 && !show_progress {
        let bar = ProgressBar::new(selected.len() as u64);
        bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("a valid template"));
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut mismatches = 0;
    let mut ran = 0;
    let mut cases = Vec::new();
    let mut backend_name = "sim";
    for s in selected {
        bar.set_message(s.id.clone());
        let Some(backend) = backends.for_scenario(s)? else {
            cases.push(junit::Case::skipped(s));
            continue;
        };
        let mode = match run_engine {
            // loom and shuttle run the mode given (exhaustive when none is), not a file's sampling.
            Some(_) => mode.unwrap_or(&Mode::Exhaustive),
            None => mode.unwrap_or(&s.mode),
        };
        if scale.shard.is_some() && *mode != Mode::Exhaustive {
            // Only an exhaustive search splits into shares; a sampled scenario is run whole,
            // without --shard.
            eprintln!("{program}: {} is sampled ({}), not split into shares; skipped", s.id, mode.name());
            continue;
        }
        let options = scale::options(scale, &s.id, show_progress);
        let checked = guarded(backends, &backend, || match run_engine {
            Some(e) => engine::check_with_engine(s, e, mode, engine_budget),
            None => s.model.check_with(&s.id, mode, &s.bounds, &backend, &options),
        })?;
        scale::clear_progress(show_progress);
        backend_name = backend.name();
        cases.push(junit::Case::ran(s, &checked));
        bar.inc(1);
        ran += 1;
        // A share alone is no verdict: `merge` compares.
        let share_alone = checked.shares.as_ref().is_some_and(|sh| sh.index.is_some());
        if checked.verdict != s.expected && !share_alone {
            mismatches += 1;
        }
        if json {
            let mut line = json_line(s, mode, backend.name(), &checked);
            line["engine"] = json!(engine.name());
            line["mode"] = json!(engine::mode_name(run_engine, mode));
            if run_engine.is_some_and(|e| e.exhaustive()) {
                // The executions loom or shuttle's DFS could run; more would be needed for `holds`
                // wherever `stats.executions` reached it.
                line["budget"] = json!(engine_budget);
            }
            say!(w, "{line}");
        } else {
            bar.suspend(|| print_text(w, program, s, mode, &checked, false))?;
        }
    }
    bar.finish_and_clear();
    if let Some(file) = junit {
        let modes = mode.map_or("each scenario's mode", |m| m.name());
        file.write(&format!("racelab check ({backend_name}, {modes})"), &cases, terminal_width())?;
    }
    if !json {
        say!(w, "{ran} scenarios, {} as expected, {mismatches} not", ran - mismatches);
    }
    Ok(if mismatches == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn json_line(s: &Scenario, mode: &Mode, backend: &str, c: &Checked) -> serde_json::Value {
    let mut line = json_line_counted(s, mode, backend, c);
    for name in c.uncounted {
        line["stats"][*name] = serde_json::Value::Null;
    }
    line
}

fn json_line_counted(s: &Scenario, mode: &Mode, backend: &str, c: &Checked) -> serde_json::Value {
    let cx = c.counterexample.as_ref();
    json!({
        "id": s.id,
        "engine": "racelab",
        "backend": backend,
        "mode": mode.name(),
        "verdict": c.verdict,
        "expected": s.expected,
        "invariant": cx.map(|x| &x.invariant),
        "detail": cx.map(|x| &x.detail),
        "token": cx.map(|x| &x.token),
        "steps": cx.map(|x| x.steps),
        "reason": c.reason,
        "complete": c.complete,
        "bounds": c.bounds,
        "pct_guarantee": c.pct_guarantee,
        "shares": c.shares.as_ref().map(scale::shares_json),
        "stats": {
            "executions": c.stats.executions,
            "final_states": c.stats.final_states,
            "states": c.stats.states,
            "transitions": c.stats.transitions,
            "pruned": c.stats.pruned,
            "depth": c.stats.depth,
            "elapsed_ms": c.elapsed_ms,
        },
    })
}

fn print_text(
    w: &mut dyn Write,
    program: &str,
    s: &Scenario,
    mode: &Mode,
    c: &Checked,
    explain: bool,
) -> Result<(), BadInput> {
    let share_alone = c.shares.as_ref().is_some_and(|sh| sh.index.is_some());
    let mark = if share_alone {
        "share"
    } else if c.verdict == s.expected {
        "ok"
    } else {
        "MISMATCH"
    };
    let count = |name: &str, n: u64| {
        if c.uncounted.contains(&name) {
            format!("{} not counted", name.replace('_', " "))
        } else {
            format!("{n} {}", name.replace('_', " "))
        }
    };
    say!(
        w,
        "{:<48} {:<12} expected {:<12} {mark}  [{}, {}, {} ms]",
        s.id,
        c.verdict,
        s.expected,
        count("states", c.stats.states),
        count("executions", c.stats.executions),
        c.elapsed_ms
    );
    if let Some(shares) = &c.shares {
        let which = shares
            .index
            .map_or(format!("{} shares merged", shares.count), |i| format!("share {} of {}", i + 1, shares.count));
        say!(w, "  {which} (frontier at depth {}); counts are sums over shares", shares.split_depth);
    }
    if let Some(cx) = &c.counterexample {
        say!(w, "\n{}\n", cx.timeline.render(terminal_width()));
        say!(w, "violated: {}: {}", cx.invariant, cx.detail);
        for line in &cx.final_state {
            say!(w, "  {line}");
        }
        say!(w, "replay:   {program} replay {} {}\n", s.id, cx.token);
    } else if explain || c.verdict != s.expected {
        let b = &c.bounds;
        let preemptions = b.preemptions.map_or("unbounded".to_string(), |p| p.to_string());
        say!(
            w,
            "  explored ({}): {} actors, crashes ≤ {}, errors ≤ {}, timeouts ≤ {}, lost replies ≤ {}, power losses ≤ {}, \
             preemptions {}, depth ≤ {}",
            mode.name(),
            s.model.actor_names().len(),
            b.crashes,
            b.errors,
            b.timeouts,
            b.lost_replies,
            b.power_losses,
            preemptions,
            b.max_depth
        );
        say!(
            w,
            "  {} states, {} executions, {} distinct final states, {} transitions ({} skipped by sleep sets), \
             longest {} steps; complete: {}",
            c.stats.states,
            c.stats.executions,
            c.stats.final_states,
            c.stats.transitions,
            c.stats.pruned,
            c.stats.depth,
            c.complete
        );
        if let Some(reason) = &c.reason {
            say!(w, "  inconclusive: {reason}");
        }
        if let Some(g) = c.pct_guarantee {
            say!(w, "  PCT: each schedule finds a bug of the chosen depth with probability ≥ {g:.2e}");
        }
        say!(w);
    }
    Ok(())
}

/// `racelab merge`: read the shares' JSON Lines, group them by scenario, merge each group.
fn merge(
    w: &mut dyn Write,
    program: &str,
    scenarios: &[Scenario],
    files: &[PathBuf],
    json: bool,
) -> Result<ExitCode, BadInput> {
    // Per scenario (in scenario-file order, whatever the order of the files): its shares.
    let mut groups: Vec<Vec<racelab_harness::run::ShareOutcome>> = scenarios.iter().map(|_| Vec::new()).collect();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| BadInput(format!("{}: {e}", file.display())))?;
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let at = |msg: String| BadInput(format!("{}:{}: {msg}", file.display(), n + 1));
            let share = scale::parse_share_line(line).map_err(at)?;
            let k = scenarios
                .iter()
                .position(|s| s.id == share.id)
                .ok_or_else(|| at(format!("no scenario file names `{}`", share.id)))?;
            let ours = serde_json::to_value(&scenarios[k].bounds).expect("bounds serialize");
            if share.bounds != ours {
                return Err(at(format!("`{}` was explored under other bounds than its scenario file's", share.id)));
            }
            let group = &mut groups[k];
            let new = share.outcome.shard;
            if let Some(other) = group.first().map(|o| o.shard) {
                if (other.count, other.split_depth) != (new.count, new.split_depth) {
                    return Err(at(format!(
                        "`{}`: share of {} (frontier depth {}) mixed with shares of {} (depth {})",
                        share.id, new.count, new.split_depth, other.count, other.split_depth
                    )));
                }
            }
            if group.iter().any(|o| o.shard.index == new.index) {
                return Err(at(format!("`{}`: share {} of {} given twice", share.id, new.index + 1, new.count)));
            }
            group.push(share.outcome);
        }
    }
    let mut merged = 0;
    let mut mismatches = 0;
    for (s, shares) in scenarios.iter().zip(groups) {
        if shares.is_empty() {
            continue;
        }
        let checked = s.model.merge(&s.id, &s.bounds, shares);
        merged += 1;
        if checked.verdict != s.expected {
            mismatches += 1;
        }
        if json {
            say!(w, "{}", json_line(s, &Mode::Exhaustive, "sim", &checked));
        } else {
            print_text(w, program, s, &Mode::Exhaustive, &checked, false)?;
        }
    }
    if merged == 0 {
        return Err(BadInput("no shares in the given files".into()));
    }
    if !json {
        say!(w, "{merged} scenarios merged, {} as expected, {mismatches} not", merged - mismatches);
    }
    Ok(if mismatches == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The one scenario `id` names, for `replay`.
fn replay_scenario<'s>(scenarios: &'s [Scenario], catalogue: &[RaceDef], id: &str) -> Result<&'s Scenario, BadInput> {
    match scenarios.iter().find(|s| s.id == id) {
        Some(s) => Ok(s),
        None => {
            let selected = select(scenarios, catalogue, &[id.to_string()])?;
            Err(BadInput(format!(
                "replay needs one scenario id (race/variant); `{id}` names {}",
                selected.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ")
            )))
        }
    }
}

fn replay(
    w: &mut dyn Write,
    s: &Scenario,
    schedule: &[racelab_harness::explore::Choice],
    tok: &str,
    backends: &Backends,
    json: bool,
) -> Result<ExitCode, BadInput> {
    let id = s.id.as_str();
    let Some(backend) = backends.for_scenario(s)? else {
        return Err(BadInput(format!("`{id}` has no database to replay on postgres")));
    };
    let r = guarded(backends, &backend, || s.model.replay(&s.bounds, schedule, &backend))?.map_err(|e| {
        BadInput(format!(
            "the token does not replay on `{id}`: step {} picks actor {} ({:?}), which cannot move there; was the scenario file changed?",
            e.step, e.choice.actor, e.choice.kind
        ))
    })?;
    if json {
        let line = json!({
            "id": id,
            "backend": backend.name(),
            "mode": "replay",
            "verdict": r.verdict,
            "invariant": r.invariant,
            "detail": r.detail,
            "token": tok,
            "steps": r.steps,
            "final_state": r.final_state,
        });
        say!(w, "{line}");
    } else {
        say!(w, "{}\n", r.timeline.render(terminal_width()));
        match (&r.invariant, &r.detail) {
            (Some(inv), Some(detail)) => say!(w, "violated: {inv}: {detail}"),
            _ => say!(w, "no invariant was violated by this schedule"),
        }
        for line in &r.final_state {
            say!(w, "  {line}");
        }
    }
    Ok(if r.verdict == Verdict::Violated { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn terminal_width() -> u16 {
    std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(140)
}

/// Write one scenario's schedule as an isolation spec, to `out` or standard output.
fn export_spec(
    w: &mut dyn Write,
    scenarios: &[Scenario],
    catalogue: &[RaceDef],
    id: &str,
    tok: Option<&str>,
    out: Option<&Path>,
) -> Result<ExitCode, BadInput> {
    let Some(s) = scenarios.iter().find(|s| s.id == id) else {
        let selected = select(scenarios, catalogue, &[id.to_string()])?;
        return Err(BadInput(format!(
            "export-spec needs one scenario id (race/variant); `{id}` names {}",
            selected.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ")
        )));
    };
    let spec = racelab_pg::export::export_spec(id, s.model.as_ref(), &s.bounds, tok, env!("CARGO_PKG_VERSION"))
        .map_err(|e| BadInput(format!("cannot export `{id}`: {e}")))?;
    match out {
        Some(path) => std::fs::write(path, spec).map_err(|e| BadInput(format!("{}: {e}", path.display())))?,
        None => write!(w, "{spec}").map_err(stdout_failed)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Replay the simulator's explored schedules on PostgreSQL and compare the step logs.
fn conform(
    w: &mut dyn Write,
    selected: &[&Scenario],
    limit: usize,
    backends: &Backends,
    json: bool,
) -> Result<ExitCode, BadInput> {
    let mut total_mismatches = 0;
    for s in selected {
        if s.mode != Mode::Exhaustive {
            // Its explored schedules are samples of a space too large to enumerate; replaying
            // the first few hundred of a depth-first walk would compare only its first corner.
            eprintln!("racelab: {} explores by sampling ({}); skipped", s.id, s.mode.name());
            continue;
        }
        let Some(pg) = backends.for_scenario(s)? else { continue };
        let schedules = s.model.schedules(&s.bounds, limit);
        let mut mismatches = 0;
        for schedule in &schedules {
            let sim =
                s.model.replay(&s.bounds, schedule, &RunBackend::Sim).expect("the simulator's own schedule replays");
            let real = guarded(backends, &pg, || s.model.replay(&s.bounds, schedule, &pg))?;
            let real_log = match &real {
                Ok(r) => r.log.clone(),
                Err(e) => {
                    let mut log = sim.log[..e.step.min(sim.log.len())].to_vec();
                    log.push(format!("(actor {} cannot take step {} here)", e.choice.actor, e.step));
                    log
                }
            };
            if real_log == sim.log && real.as_ref().map(|r| &r.invariant).ok() == Some(&sim.invariant) {
                continue;
            }
            mismatches += 1;
            if !json {
                say!(w, "{}: schedule {} differs", s.id, token::encode(&s.id, schedule));
                let first = sim
                    .log
                    .iter()
                    .zip(&real_log)
                    .position(|(a, b)| a != b)
                    .unwrap_or(sim.log.len().min(real_log.len()));
                for k in 0..sim.log.len().max(real_log.len()) {
                    let mark = if k == first { ">>" } else { "  " };
                    let a = sim.log.get(k).map_or("", String::as_str);
                    let b = real_log.get(k).map_or("", String::as_str);
                    say!(w, "{mark} T{k:<3} sim: {a:<60} postgres: {b}");
                }
            }
        }
        total_mismatches += mismatches;
        if json {
            say!(w, "{}", json!({ "id": s.id, "schedules": schedules.len(), "mismatches": mismatches }));
        } else {
            say!(w, "{:<48} {} schedules, {} mismatches", s.id, schedules.len(), mismatches);
        }
    }
    Ok(if total_mismatches == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
