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

mod engine;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use racelab_harness::catalogue::RaceDef;
use racelab_harness::run::{Backend as RunBackend, Checked, Mode, Verdict};
use racelab_harness::scenario::{self, Scenario};
use racelab_harness::token;
use serde_json::json;

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
        #[arg(long, value_enum, default_value_t = ModeArg::Exhaustive)]
        mode: ModeArg,
        /// Which explorer runs the scenarios: racelab's own, loom or shuttle (simulator only).
        #[arg(long, value_enum, default_value_t = engine::EngineArg::Racelab)]
        engine: engine::EngineArg,
        /// Seed for random and PCT schedules.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Schedules per scenario for random and PCT.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        schedules: u64,
        /// PCT bug depth d.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=10))]
        depth: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: ScenarioDir,
        #[command(flatten)]
        db: DatabaseArg,
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
    /// print their output as PostgreSQL's isolation tester does.
    PgSpec {
        #[arg(required = true, value_name = "FILE.spec")]
        files: Vec<PathBuf>,
        /// Write each output to DIR/<name>.out instead of standard output.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
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
    /// Directory of scenario files (default: ./scenarios, else the workspace's).
    #[arg(long = "scenarios", value_name = "DIR")]
    path: Option<PathBuf>,
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
            Some(url) => racelab_pg::Cluster::external(url),
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
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Every schedule within the bounds (`dfs` names it for shuttle).
    #[value(alias = "dfs")]
    Exhaustive,
    Random,
    Pct,
}

/// A failure to report: exit 2 for bad input.
struct BadInput(String);

/// What a racelab command line serves: a name for messages, the catalogue, and where its
/// scenario files live when `--scenarios` is not given.
#[derive(Clone)]
pub struct App {
    /// The program name shown in messages (`racelab: unknown id …`).
    pub name: &'static str,
    /// Builds the catalogue. A function, so that it is built once per run.
    pub catalogue: fn() -> Vec<RaceDef>,
    /// Default scenario directory when `--scenarios` is absent and `./scenarios` does not exist.
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
    // Die quietly on a closed pipe (`racelab check all | head`), as command-line tools do.
    // SAFETY: setting a signal disposition at startup, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let matches = Cli::command().name(app.name).bin_name(app.name).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli, &app) {
        Ok(code) => code,
        Err(BadInput(message)) => {
            eprintln!("{}: {message}", app.name);
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli, app: &App) -> Result<ExitCode, BadInput> {
    let catalogue = (app.catalogue)();
    let load = |dir: &ScenarioDir, catalogue: &[RaceDef]| load(dir, catalogue, &app.scenarios);
    match cli.command {
        Command::List { json, dir } => list(&catalogue, &load(&dir, &catalogue)?, json),
        Command::Check { ids, backend, mode, engine, seed, schedules, depth, json, dir, db } => {
            let scenarios = load(&dir, &catalogue)?;
            let selected = select(&scenarios, &catalogue, &ids)?;
            let mode = match mode {
                ModeArg::Exhaustive => Mode::Exhaustive,
                ModeArg::Random => Mode::Random { seed, schedules },
                ModeArg::Pct => Mode::Pct { seed, schedules, depth },
            };
            let backends = Backends::new(backend, &db)?;
            let backend_name = if backend == Backend::Postgres { "postgres" } else { "sim" };
            let run_engine = engine.engine(&mode, backend_name).map_err(BadInput)?;
            check(&selected, &mode, (engine, run_engine), &backends, json)
        }
        Command::Replay { id, token, backend, json, dir, db } => {
            let scenarios = load(&dir, &catalogue)?;
            let backends = Backends::new(backend, &db)?;
            replay(&scenarios, &catalogue, &id, &token, &backends, json)
        }
        Command::Explain { id, backend, dir, db } => {
            let scenarios = load(&dir, &catalogue)?;
            let selected = select(&scenarios, &catalogue, std::slice::from_ref(&id))?;
            let backends = Backends::new(backend, &db)?;
            for s in &selected {
                let Some(b) = backends.for_scenario(s)? else { continue };
                let checked = s.model.check(&s.id, &Mode::Exhaustive, &s.bounds, &b);
                backends.healthy(&b)?;
                print_text(s, Mode::Exhaustive.name(), &checked, true);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Conform { ids, schedules, json, dir, db } => {
            let scenarios = load(&dir, &catalogue)?;
            let selected = select(&scenarios, &catalogue, &ids)?;
            let backends = Backends::new(Backend::Postgres, &db)?;
            conform(&selected, schedules as usize, &backends, json)
        }
        Command::PgSpec { files, out_dir, db } => pg_spec(&files, out_dir.as_deref(), &db),
        Command::ExportSpec { id, out, token, dir } => {
            export_spec(&load(&dir, &catalogue)?, &catalogue, &id, token.as_deref(), out.as_deref())
        }
    }
}

/// The backend each scenario runs on. A PostgreSQL cluster is started once, and each database
/// scenario gets its own controller on it.
struct Backends {
    cluster: Option<racelab_pg::Cluster>,
}

impl Backends {
    fn new(backend: Backend, db: &DatabaseArg) -> Result<Backends, BadInput> {
        Ok(Backends { cluster: if backend == Backend::Postgres { Some(db.cluster()?) } else { None } })
    }

    /// `None` for a scenario this backend cannot run (no database on `postgres`).
    fn for_scenario(&self, s: &Scenario) -> Result<Option<RunBackend>, BadInput> {
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
            if let Some(failure) = db.lock().map_err(|_| BadInput("the database controller panicked".into()))?.failure()
            {
                return Err(BadInput(format!("postgres: {failure}")));
            }
        }
        Ok(())
    }
}

fn load(dir: &ScenarioDir, catalogue: &[RaceDef], default: &Path) -> Result<Vec<Scenario>, BadInput> {
    let path = match &dir.path {
        Some(p) => p.clone(),
        None if Path::new("scenarios").is_dir() => PathBuf::from("scenarios"),
        None => default.to_path_buf(),
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

fn list(catalogue: &[RaceDef], scenarios: &[Scenario], json: bool) -> Result<ExitCode, BadInput> {
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
                println!("{line}");
            } else {
                let expected = file.map(|s| s.expected.to_string()).unwrap_or_else(|| "no scenario".into());
                println!("{id:<48} {expected:<12} {}", variant.summary);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(
    selected: &[&Scenario],
    mode: &Mode,
    (engine, run_engine): (engine::EngineArg, Option<racelab_engines::Engine>),
    backends: &Backends,
    json: bool,
) -> Result<ExitCode, BadInput> {
    let mode_name = engine::mode_name(run_engine, mode);
    let bar = if std::io::stderr().is_terminal() && selected.len() > 1 {
        let bar = ProgressBar::new(selected.len() as u64);
        bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("a valid template"));
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut mismatches = 0;
    let mut ran = 0;
    for s in selected {
        bar.set_message(s.id.clone());
        let Some(backend) = backends.for_scenario(s)? else { continue };
        let checked = engine::check(s, run_engine, mode, &backend);
        backends.healthy(&backend)?;
        bar.inc(1);
        ran += 1;
        if checked.verdict != s.expected {
            mismatches += 1;
        }
        if json {
            println!("{}", json_line(s, (engine.name(), mode_name), backend.name(), &checked));
        } else {
            bar.suspend(|| print_text(s, mode_name, &checked, false));
        }
    }
    bar.finish_and_clear();
    if !json {
        println!("{ran} scenarios, {} as expected, {mismatches} not", ran - mismatches);
    }
    Ok(if mismatches == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn json_line(s: &Scenario, (engine, mode): (&str, &str), backend: &str, c: &Checked) -> serde_json::Value {
    let cx = c.counterexample.as_ref();
    json!({
        "id": s.id,
        "engine": engine,
        "backend": backend,
        "mode": mode,
        "verdict": c.verdict,
        "expected": s.expected,
        "invariant": cx.map(|x| &x.invariant),
        "detail": cx.map(|x| &x.detail),
        "token": cx.map(|x| &x.token),
        "steps": cx.map(|x| x.steps),
        "reason": c.reason,
        "complete": c.complete,
        "bounds": s.bounds,
        "pct_guarantee": c.pct_guarantee,
        "stats": {
            "executions": c.stats.executions,
            "states": c.stats.states,
            "transitions": c.stats.transitions,
            "pruned": c.stats.pruned,
            "depth": c.stats.depth,
            "elapsed_ms": c.elapsed_ms,
        },
    })
}

fn print_text(s: &Scenario, mode: &str, c: &Checked, explain: bool) {
    let mark = if c.verdict == s.expected { "ok" } else { "MISMATCH" };
    println!(
        "{:<48} {:<12} expected {:<12} {mark}  [{} states, {} executions, {} ms]",
        s.id, c.verdict, s.expected, c.stats.states, c.stats.executions, c.elapsed_ms
    );
    if let Some(cx) = &c.counterexample {
        println!("\n{}\n", cx.timeline.render(terminal_width()));
        println!("violated: {}: {}", cx.invariant, cx.detail);
        for line in &cx.final_state {
            println!("  {line}");
        }
        println!("replay:   racelab replay {} {}\n", s.id, cx.token);
    } else if explain || c.verdict != s.expected {
        let b = &s.bounds;
        let preemptions = b.preemptions.map_or("unbounded".to_string(), |p| p.to_string());
        println!(
            "  explored ({}): {} actors, crashes ≤ {}, errors ≤ {}, timeouts ≤ {}, preemptions {}, depth ≤ {}",
            mode,
            s.model.actor_names().len(),
            b.crashes,
            b.errors,
            b.timeouts,
            preemptions,
            b.max_depth
        );
        println!(
            "  {} states, {} executions, {} transitions ({} skipped by sleep sets), longest {} steps; complete: {}",
            c.stats.states, c.stats.executions, c.stats.transitions, c.stats.pruned, c.stats.depth, c.complete
        );
        if let Some(reason) = &c.reason {
            println!("  inconclusive: {reason}");
        }
        if let Some(g) = c.pct_guarantee {
            println!("  PCT: each schedule finds a bug of the chosen depth with probability ≥ {g:.2e}");
        }
        println!();
    }
}

fn replay(
    scenarios: &[Scenario],
    catalogue: &[RaceDef],
    id: &str,
    tok: &str,
    backends: &Backends,
    json: bool,
) -> Result<ExitCode, BadInput> {
    let s = match scenarios.iter().find(|s| s.id == id) {
        Some(s) => s,
        None => {
            let selected = select(scenarios, catalogue, &[id.to_string()])?;
            return Err(BadInput(format!(
                "replay needs one scenario id (race/variant); `{id}` names {}",
                selected.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
    };
    let schedule = token::decode(id, tok).map_err(|e| BadInput(e.to_string()))?;
    let Some(backend) = backends.for_scenario(s)? else {
        return Err(BadInput(format!("`{id}` has no database to replay on postgres")));
    };
    let r = s.model.replay(&s.bounds, &schedule, &backend).map_err(|e| {
        BadInput(format!(
            "the token does not replay on `{id}`: step {} picks actor {} ({:?}), which cannot move there; was the scenario file changed?",
            e.step, e.choice.actor, e.choice.kind
        ))
    })?;
    backends.healthy(&backend)?;
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
        println!("{line}");
    } else {
        println!("{}\n", r.timeline.render(terminal_width()));
        match (&r.invariant, &r.detail) {
            (Some(inv), Some(detail)) => println!("violated: {inv}: {detail}"),
            _ => println!("no invariant was violated by this schedule"),
        }
        for line in &r.final_state {
            println!("  {line}");
        }
    }
    Ok(if r.verdict == Verdict::Violated { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn terminal_width() -> u16 {
    std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(140)
}

fn pg_spec(files: &[PathBuf], out_dir: Option<&Path>, db: &DatabaseArg) -> Result<ExitCode, BadInput> {
    // Parse everything first: a bad spec is reported before any server starts.
    for f in files {
        racelab_pg::spec::parse_file(f).map_err(|e| BadInput(e.to_string()))?;
    }
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(dir).map_err(|e| BadInput(format!("{}: {e}", dir.display())))?;
    }
    let cluster = db.cluster()?;
    for f in files {
        let output = racelab_pg::spec::run_spec_file(&cluster.config(), f).map_err(|e| BadInput(e.to_string()))?;
        match out_dir {
            Some(dir) => {
                let name = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "spec".into());
                let out = dir.join(format!("{name}.out"));
                std::fs::write(&out, output).map_err(|e| BadInput(format!("{}: {e}", out.display())))?;
            }
            None => print!("{output}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Write one scenario's schedule as an isolation spec, to `out` or standard output.
fn export_spec(
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
        None => print!("{spec}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Replay the simulator's explored schedules on PostgreSQL and compare the step logs.
fn conform(selected: &[&Scenario], limit: usize, backends: &Backends, json: bool) -> Result<ExitCode, BadInput> {
    let mut total_mismatches = 0;
    for s in selected {
        let Some(pg) = backends.for_scenario(s)? else { continue };
        let schedules = s.model.schedules(&s.bounds, limit);
        let mut mismatches = 0;
        for schedule in &schedules {
            let sim =
                s.model.replay(&s.bounds, schedule, &RunBackend::Sim).expect("the simulator's own schedule replays");
            let real = s.model.replay(&s.bounds, schedule, &pg);
            backends.healthy(&pg)?;
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
                println!("{}: schedule {} differs", s.id, token::encode(&s.id, schedule));
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
                    println!("{mark} T{k:<3} sim: {a:<60} postgres: {b}");
                }
            }
        }
        total_mismatches += mismatches;
        if json {
            println!("{}", json!({ "id": s.id, "schedules": schedules.len(), "mismatches": mismatches }));
        } else {
            println!("{:<48} {} schedules, {} mismatches", s.id, schedules.len(), mismatches);
        }
    }
    Ok(if total_mismatches == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
