//! Every scenario file of a race with a turmoil version, under turmoil: a buggy variant is found
//! violated within the file's seed budget and its seed replays the same run; a fix that holds on
//! the simulator shows no violation over the budget.

use std::path::Path;

use racelab_harness::catalogue::Params;
use racelab_harness::run::Verdict;
use racelab_harness::scenario::{self, Scenario};

fn turmoil_scenarios() -> Vec<Scenario> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let all = scenario::load_dir(&dir, &racelab_models::catalogue()).expect("the scenario files load");
    all.into_iter().filter(|s| racelab_turmoil::supports(&s.id)).collect()
}

#[test]
fn every_buggy_variant_is_found_and_its_seed_replays_it_and_no_fix_is() {
    let scenarios = turmoil_scenarios();
    let ids: Vec<&str> = scenarios.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), 7, "area-ensure's five and judge-persist's two: {ids:?}");
    for s in &scenarios {
        let seeds = s.turmoil_seeds.expect("each turmoil scenario names its seed budget");
        let params = Params::new(s.params.clone());
        let report = racelab_turmoil::check(&s.id, &params, 0, seeds).unwrap();
        match s.expected {
            Verdict::Violated => {
                assert_eq!(report.verdict, Verdict::Violated, "{}: not found in {seeds} seeds", s.id);
                let found = report.counterexample.expect("a violation has its run");
                let again = racelab_turmoil::run_seed(&s.id, &params, found.seed).unwrap();
                assert_eq!(again, found, "{}: seed {} does not replay its run", s.id, found.seed);
                let (invariant, _) = found.violation.as_ref().unwrap();
                assert!(["no-two-pages-per-area", "get-after-200-finds-judgment", "judgment-with-200-is-stored"]
                    .contains(&invariant.as_str()));
                assert!(!found.trace.is_empty());
            }
            _ => {
                assert_eq!(report.verdict, Verdict::Inconclusive, "{}: {:?}", s.id, report.counterexample);
                assert_eq!(report.seeds_tried, seeds);
                assert!(report.reason.unwrap().contains("no violation"));
            }
        }
        assert!(report.steps > 0);
    }
}

#[test]
fn a_seed_that_violates_nothing_also_replays_step_for_step() {
    let s = turmoil_scenarios().into_iter().find(|s| s.id == "area-ensure/idempotency-key").unwrap();
    let params = Params::new(s.params.clone());
    let a = racelab_turmoil::run_seed(&s.id, &params, 7).unwrap();
    let b = racelab_turmoil::run_seed(&s.id, &params, 7).unwrap();
    assert_eq!(a, b);
    assert!(a.trace.iter().any(|l| l.contains("create_area_page(HOME, idempotency_key=area:HOME)")), "{:#?}", a.trace);
    let c = racelab_turmoil::run_seed(&s.id, &params, 8).unwrap();
    assert_ne!(a.trace, c.trace, "another seed, another run");
}

#[test]
fn faults_strike_within_the_budget() {
    // The fault plan must actually crash hosts, cut links and fail lookups in the sampled runs,
    // or "no violation" would say nothing about them.
    let s = turmoil_scenarios().into_iter().find(|s| s.id == "area-ensure/idempotency-key").unwrap();
    let params = Params::new(s.params.clone());
    let traces: Vec<String> = (0..s.turmoil_seeds.unwrap())
        .flat_map(|seed| racelab_turmoil::run_seed(&s.id, &params, seed).unwrap().trace)
        .collect();
    for fault in ["✗ crash", "⟳ restarts", "✂ partitioned", "⏸ messages", "raised AttributeError"] {
        assert!(traces.iter().any(|l| l.contains(fault)), "no `{fault}` in any seed");
    }
}

#[test]
fn a_scenario_without_a_turmoil_version_is_an_error() {
    let err = racelab_turmoil::check("summary-upsert/check-then-insert", &Params::default(), 0, 1).unwrap_err();
    assert!(err.contains("no turmoil version"), "{err}");
    assert!(racelab_turmoil::check("area-ensure/swallow-error", &Params::default(), 0, 0).is_err());
}
