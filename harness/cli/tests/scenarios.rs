//! Every scenario file is a regression test of its own: exploring it must give the verdict the
//! file records, a violation must replay from its token to the same invariant, and a "holds"
//! must come from a complete exploration.

use std::path::Path;

use libtest_mimic::{Arguments, Failed, Trial};
use racelab_harness::run::{Backend, Mode, Verdict};
use racelab_harness::scenario::{self, Scenario};
use racelab_harness::token;

fn main() {
    let args = Arguments::from_args();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let scenarios = match scenario::load_dir(&dir, &racelab_models::catalogue()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot load scenarios: {e}");
            std::process::exit(101);
        }
    };
    assert!(!scenarios.is_empty(), "no scenario files under {}", dir.display());
    let trials = scenarios.into_iter().map(|s| Trial::test(s.id.clone(), move || check(&s))).collect();
    libtest_mimic::run(&args, trials).exit();
}

fn check(s: &Scenario) -> Result<(), Failed> {
    let checked = s.model.check(&s.id, &s.mode, &s.bounds, &Backend::Sim);
    if checked.verdict != s.expected {
        let why = checked
            .counterexample
            .as_ref()
            .map(|c| format!("{}: {}\n{}", c.invariant, c.detail, c.timeline.render(120)))
            .or(checked.reason.clone())
            .unwrap_or_default();
        return Err(format!("{} is {}, but its file expects {}\n{why}", s.id, checked.verdict, s.expected).into());
    }
    match checked.verdict {
        Verdict::Violated => {
            let cx = checked.counterexample.expect("a violation has a counterexample");
            let schedule = token::decode(&s.id, &cx.token).map_err(|e| format!("token does not decode: {e}"))?;
            assert_eq!(schedule.len(), cx.steps);
            let replay = s
                .model
                .replay(&s.bounds, &schedule, &Backend::Sim)
                .map_err(|e| format!("token does not replay: {e:?}"))?;
            if replay.invariant.as_deref() != Some(cx.invariant.as_str()) {
                return Err(format!("replay violated {:?}, exploration {}", replay.invariant, cx.invariant).into());
            }
            if replay.steps != cx.steps {
                return Err(format!("replay took {} steps, the counterexample {}", replay.steps, cx.steps).into());
            }
        }
        Verdict::Holds => {
            if s.mode != Mode::Exhaustive || !checked.complete || checked.stats.states == 0 {
                return Err("a holds verdict needs a complete exploration".into());
            }
        }
        Verdict::Inconclusive => {
            if checked.reason.is_none() {
                return Err("an inconclusive verdict must say why".into());
            }
        }
    }
    Ok(())
}
