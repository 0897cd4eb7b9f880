//! The command line's arguments, as clap parses them: the subcommands and the options they share.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::{BadInput, Engine};

#[derive(Parser)]
#[command(name = "racelab", version, about = "Explore production races as buggy and fixed state machines")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
pub(crate) struct ScenarioDir {
    /// Directory of scenario files (default: the catalogue's own, else ./scenarios).
    #[arg(long = "scenarios", value_name = "DIR")]
    pub(crate) path: Option<PathBuf>,
}

/// Budgets, progress, shards and threads of exhaustive searches on the simulator.
#[derive(clap::Args)]
pub(crate) struct ScaleArgs {
    /// Stop each scenario's exploration after SECS seconds with an `inconclusive` verdict and
    /// the counts so far (exhaustive searches).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    pub(crate) time_limit: Option<u64>,
    /// Print a progress line on standard error (on a terminal it is printed anyway when one
    /// scenario is checked).
    #[arg(long)]
    pub(crate) progress: bool,
    /// Explore only share i of n of each scenario's state space (1 ≤ i ≤ n), for `racelab merge`.
    #[arg(long, value_name = "i/n", value_parser = parse_share_arg)]
    pub(crate) shard: Option<(u32, u32)>,
    /// Explore on N threads (the same result for every N).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256), conflicts_with = "shard")]
    pub(crate) threads: Option<u16>,
    /// Do not reduce by the model's declared symmetry of identical workers (to cross-check it,
    /// or to count every state).
    #[arg(long)]
    pub(crate) no_symmetry: bool,
}

fn parse_share_arg(text: &str) -> Result<(u32, u32), String> {
    racelab_harness::explore::budget::parse_share(text)
}

#[derive(clap::Args)]
pub(crate) struct DatabaseArg {
    /// A PostgreSQL server to use (racelab creates and drops a scratch database of its own
    /// there); default: $DATABASE_URL, else a throwaway cluster from the installed binaries.
    #[arg(long, value_name = "URL")]
    pub(crate) database_url: Option<String>,
}

impl DatabaseArg {
    pub(crate) fn cluster(&self) -> Result<racelab_pg::Cluster, BadInput> {
        racelab_pg::install_interrupt_cleanup().map_err(|e| BadInput(e.to_string()))?;
        let cluster = match &self.database_url {
            Some(url) => racelab_pg::Cluster::external_from("--database-url", url),
            None => racelab_pg::Cluster::from_env(),
        };
        cluster.map_err(|e| BadInput(e.to_string()))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Backend {
    /// The deterministic in-process simulation.
    Sim,
    /// A real PostgreSQL server, one statement at a time (database scenarios only).
    Postgres,
    /// Real files and processes: file ops as syscalls in a private directory, one worker
    /// process per actor (file scenarios only).
    Real,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ModeArg {
    /// Every schedule within the bounds (`dfs` names it for shuttle).
    #[value(alias = "dfs")]
    Exhaustive,
    Random,
    Pct,
    /// Source-DPOR with sleep sets (simulator): one execution per trace or a few more.
    Dpor,
}

/// Executions `--mode dpor` may run per scenario unless `--schedules` says otherwise.
pub(crate) const DEFAULT_DPOR_EXECUTIONS: u64 = 1_000_000;
