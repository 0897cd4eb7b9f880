//! The file races on real files and `daemon-spawn` on real processes: each scenario's verdict on
//! the real backend equals the one its file expects (the simulator's), and a violation's token
//! replays on both.

use std::path::Path;

use racelab_harness::run::{Backend, Mode, Verdict};
use racelab_harness::scenario::{self, Scenario};
use racelab_harness::token;

const REAL_RACES: [&str; 4] = ["state-save", "guidance-write", "config-edit", "daemon-spawn"];

fn scenarios() -> Vec<Scenario> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let all = scenario::load_dir(&dir, &racelab_models::catalogue()).expect("scenario files load");
    all.into_iter().filter(|s| REAL_RACES.contains(&s.race.as_str())).collect()
}

#[test]
fn every_file_and_process_scenario_gives_its_expected_verdict_on_the_real_os() {
    let scenarios = scenarios();
    assert_eq!(scenarios.len(), 11, "four races, eleven variants");
    for s in &scenarios {
        let backend = racelab_real::files_backend().expect("a private directory");
        let checked = s.model.check(&s.id, &Mode::Exhaustive, &s.bounds, &backend);
        assert_eq!(backend.failure(), None, "{}", s.id);
        assert_eq!(checked.verdict, s.expected, "{}: {:?}", s.id, checked.reason);
        if checked.verdict == Verdict::Violated {
            let cx = checked.counterexample.expect("a violation has a counterexample");
            let schedule = token::decode(&s.id, &cx.token).expect("the token decodes");
            for b in [&backend, &Backend::Sim] {
                let r = s.model.replay(&s.bounds, &schedule, b).expect("the token replays");
                assert_eq!(r.invariant.as_deref(), Some(cx.invariant.as_str()), "{} on {}", s.id, b.name());
            }
        } else {
            assert!(checked.stats.executions > 0, "{}: real executions replayed", s.id);
        }
    }
}
