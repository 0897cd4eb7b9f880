//! `racelab check` and `racelab merge`: explore the chosen scenarios on the chosen backend and
//! engine, compare each verdict with the expected one, and print them as text, JSON Lines or
//! JUnit XML.

use super::*;

pub(crate) fn check(
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

pub(crate) fn print_text(
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
        } else if name == "executions" {
            executions_text(n)
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
            "  {} states, {}, {} distinct final states, {} transitions ({} skipped by sleep sets), \
             longest {} steps; complete: {}",
            c.stats.states,
            executions_text(c.stats.executions),
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
pub(crate) fn merge(
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

/// `n executions`, or `over 1.8e19 executions` where the count saturated: printing its last
/// value would claim an exact number.
fn executions_text(n: u64) -> String {
    if n >= racelab_harness::explore::Stats::EXECUTIONS_SATURATED {
        format!("over {:.1e} executions", n as f64)
    } else {
        format!("{n} executions")
    }
}

#[cfg(test)]
mod tests {
    use super::executions_text;
    use racelab_harness::explore::Stats;

    #[test]
    fn a_saturated_count_of_executions_is_not_printed_as_a_number() {
        assert_eq!(executions_text(3378), "3378 executions");
        assert_eq!(executions_text(Stats::EXECUTIONS_SATURATED - 1), "18446744073709551613 executions");
        assert_eq!(executions_text(Stats::EXECUTIONS_SATURATED), "over 1.8e19 executions");
    }
}
