//! `racelab stress`: each selected database scenario's actors run freely and concurrently on a
//! real server, round after round (see `racelab_harness::stress`), with as many actors as
//! there are clients, up to what the model allows.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use racelab_harness::run::Verdict;
use racelab_harness::scenario::Scenario;
use racelab_harness::stress::{StressOptions, StressReport};

use crate::{stdout_failed, BadInput, DatabaseArg};

/// A round that has not ended after this long is stopped; stuck statements give up long before
/// (the watchdog cancels them once no actor has progressed for `racelab_harness::stress::STALL`).
const ROUND_LIMIT: Duration = Duration::from_secs(30);

/// Exit 1 when a scenario whose exploration holds breaks an invariant under stress (the
/// simulator and the server disagree); finding violations where the exploration found them
/// is the expected result, and finding none proves nothing.
pub(crate) fn run(
    w: &mut dyn Write,
    selected: &[&Scenario],
    clients: usize,
    ops: u64,
    db: &DatabaseArg,
) -> Result<ExitCode, BadInput> {
    let cluster = db.cluster()?;
    let mut disagree = false;
    for s in selected {
        let Some(shape) = s.model.database_shape(&s.bounds) else {
            eprintln!("racelab: {} has no database; skipped", s.id);
            continue;
        };
        let (model, workers) = s.with_workers(clients).map_err(|e| BadInput(format!("{}: {e}", s.id)))?;
        let text: Vec<(&str, &str)> = shape.text_columns.iter().map(|&(t, c)| (t, c)).collect();
        let free = racelab_pg::free_sessions(&cluster, &shape.schema, &text)
            .map_err(|e| BadInput(format!("{}: {e}", s.id)))?;
        let options = StressOptions { ops, round_limit: ROUND_LIMIT };
        // Actors may panic on outcomes they were never meant to see once the server is lost:
        // that is the failure to report.
        let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.stress(free.clone(), &options)));
        let failure = free.failure();
        drop(free);
        let report = match (report, failure) {
            (_, Some(failure)) => return Err(BadInput(format!("{}: postgres: {failure}", s.id))),
            (Err(panic), None) => std::panic::resume_unwind(panic),
            (Ok(report), None) => report,
        };
        print(w, s, &report, clients, workers.as_deref())?;
        disagree |= s.expected == Verdict::Holds && !report.violations.is_empty();
    }
    Ok(if disagree { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn print(
    w: &mut dyn Write,
    s: &Scenario,
    r: &StressReport,
    clients: usize,
    workers: Option<&str>,
) -> Result<(), BadInput> {
    let mut say = |line: String| writeln!(w, "{line}").map_err(stdout_failed);
    if let Some(reason) = &r.skipped {
        return say(format!("{:<48} inconclusive: not stressed: {reason}", s.id));
    }
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let found = if r.violations.is_empty() {
        "no violation".to_string()
    } else {
        format!("violated in {} of {} rounds", r.violated_rounds, r.rounds)
    };
    say(format!(
        "{:<48} {} actors  {} rounds  {} ops  {:.0} ops/s  {found}  [{:.1} s]",
        s.id,
        r.actors,
        r.rounds,
        r.ops,
        r.ops as f64 / secs,
        secs
    ))?;
    match workers {
        Some(name) if r.actors < clients => {
            say(format!("  {clients} clients asked; `{name}` is at most {} for this model", r.actors))?
        }
        None if r.actors != clients => {
            say(format!("  {clients} clients asked; the model has no worker parameter: {} actors", r.actors))?
        }
        _ => {}
    }
    for v in &r.violations {
        say(format!("  {}: {} rounds, first in round {}: {}", v.invariant, v.rounds, v.first_round, v.detail))?;
    }
    Ok(())
}
