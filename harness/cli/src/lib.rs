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

use clap::{CommandFactory, FromArgMatches};
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

mod args;

use args::{Backend, Cli, Command, DatabaseArg, ModeArg, ScaleArgs, ScenarioDir, DEFAULT_DPOR_EXECUTIONS};

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

// After `say!`, which they use.
mod check;
mod engine;

use check::{check, merge, print_text};

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
