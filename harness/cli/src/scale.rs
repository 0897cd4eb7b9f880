//! What `check` adds for long runs: a time limit, Ctrl-C as an inconclusive verdict, a progress
//! line on standard error, shares and threads; and reading shares back for `merge`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use racelab_harness::explore::budget::{Budget, Progress};
use racelab_harness::explore::{Shard, Stats, Violation};
use racelab_harness::run::{Options, ShareOutcome, Shares};
use racelab_harness::token;
use serde_json::json;

use super::ScaleArgs;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    // A second Ctrl-C ends the run at once.
    // SAFETY: signal() is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
}

/// Make the first Ctrl-C stop the running exploration (which then reports what it covered as an
/// inconclusive verdict) instead of the process. Only for the simulator: a run on PostgreSQL has
/// a handler of its own that removes the cluster.
pub(crate) fn catch_interrupts() {
    // SAFETY: installing a handler that only stores to an atomic and resets the disposition.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

/// Was the run interrupted? It then exits with 130.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The run options for one scenario.
pub(crate) fn options(scale: &ScaleArgs, id: &str, show_progress: bool) -> Options {
    let mut budget = match scale.time_limit {
        Some(secs) => Budget::time_limit(secs),
        None => Budget::default(),
    };
    budget.interrupt = Some(&INTERRUPTED);
    if show_progress {
        budget.progress = Some(progress_line(id.to_string(), std::io::stderr().is_terminal()));
    }
    Options { budget, share: scale.shard, threads: scale.threads.map(usize::from), no_symmetry: scale.no_symmetry }
}

/// A progress sink: on a terminal one line rewritten in place about five times a second,
/// otherwise a line a second. With threads, states are summed over the shares in flight.
fn progress_line(id: String, terminal: bool) -> Arc<dyn Fn(&Progress) + Send + Sync> {
    struct Line {
        started: Instant,
        printed: Instant,
        /// Latest states per share (index 0 when unsharded).
        states: Vec<u64>,
    }
    let every = if terminal { Duration::from_millis(200) } else { Duration::from_secs(1) };
    let now = Instant::now();
    let line = Mutex::new(Line { started: now, printed: now, states: Vec::new() });
    Arc::new(move |p: &Progress| {
        let mut line = line.lock().unwrap_or_else(|e| e.into_inner());
        let slot = p.share.map_or(0, |(i, _)| i as usize);
        if line.states.len() <= slot {
            line.states.resize(slot + 1, 0);
        }
        line.states[slot] = p.states;
        if line.printed.elapsed() < every {
            return;
        }
        line.printed = Instant::now();
        let states: u64 = line.states.iter().sum();
        let secs = line.started.elapsed().as_secs_f64().max(1e-3);
        let share = p.share.map_or(String::new(), |(i, n)| format!("  share {}/{n}", i + 1));
        let text = format!(
            "{id}: {states} states  {:.0} states/s  depth {}  frontier {}{share}",
            states as f64 / secs,
            p.depth,
            p.frontier
        );
        let mut err = std::io::stderr().lock();
        // A progress line that cannot be written is not worth failing the run for.
        let _ = if terminal { write!(err, "\r\x1b[2K{text}") } else { writeln!(err, "{text}") };
    })
}

/// Wipe the progress line before the verdict is printed.
pub(crate) fn clear_progress(show_progress: bool) {
    if show_progress && std::io::stderr().is_terminal() {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}

/// The `shares` object of a JSON line. `share` is 1-based as on the command line; `null` once
/// merged.
pub(crate) fn shares_json(s: &Shares) -> serde_json::Value {
    json!({
        "share": s.index.map(|i| i + 1),
        "of": s.count,
        "split_depth": s.split_depth,
        "reached": s.reached,
        "counts": "sums over shares; a state reached below frontier states of several shares counts once in each",
    })
}

/// One line of a `check --shard i/n --json` file, read back.
pub(crate) struct ShareLine {
    pub id: String,
    pub bounds: serde_json::Value,
    pub outcome: ShareOutcome,
}

/// Read a share's JSON line; `Err` says what is wrong with it.
pub(crate) fn parse_share_line(line: &str) -> Result<ShareLine, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let text = |key: &str| v.get(key).and_then(|x| x.as_str()).map(str::to_string);
    let id = text("id").ok_or("no `id`")?;
    let shares = v.get("shares").filter(|s| !s.is_null()).ok_or("no `shares`: not written by check --shard")?;
    let number = |key: &str| shares.get(key).and_then(|x| x.as_u64()).and_then(|x| u32::try_from(x).ok());
    let share = number("share").ok_or("`shares.share` is not a share number (a merged result?)")?;
    let count = number("of").ok_or("no `shares.of`")?;
    let split_depth = number("split_depth").ok_or("no `shares.split_depth`")?;
    if share == 0 || share > count {
        return Err(format!("share {share} of {count} is out of range"));
    }
    let reached = shares
        .get("reached")
        .and_then(|r| r.as_array())
        .ok_or("no `shares.reached`")?
        .iter()
        .map(|n| n.as_str().map(str::to_string).ok_or("`shares.reached` holds a non-string"))
        .collect::<Result<Vec<_>, _>>()?;
    let stats: Stats =
        serde_json::from_value(v.get("stats").cloned().ok_or("no `stats`")?).map_err(|e| format!("`stats`: {e}"))?;
    let complete = v.get("complete").and_then(|c| c.as_bool()).ok_or("no `complete`")?;
    let violation = match text("token") {
        Some(tok) => {
            let schedule = token::decode(&id, &tok).map_err(|e| format!("`token`: {e}"))?;
            let invariant = text("invariant").ok_or("a token without `invariant`")?;
            Some((Violation { invariant, detail: text("detail").unwrap_or_default() }, schedule))
        }
        None => None,
    };
    let reason = if complete { None } else { text("reason") };
    Ok(ShareLine {
        id,
        bounds: v.get("bounds").cloned().unwrap_or_default(),
        outcome: ShareOutcome {
            shard: Shard { index: share - 1, count, split_depth },
            stats,
            complete,
            reason,
            reached,
            violation,
        },
    })
}
