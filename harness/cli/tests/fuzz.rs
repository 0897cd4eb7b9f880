//! Fuzzing by property: arbitrary and mutated input to every parser of outside input (schedule
//! tokens, scenario files, isolation specs, command lines) gives a value or an error, never a
//! panic. `cargo test` runs a bounded number of cases per target (`PROPTEST_CASES`, default
//! 256); `just fuzz` runs 100,000.

use proptest::prelude::*;
use racelab_harness::{scenario, token};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// A valid token to mutate, from the simulator's own counterexample (computed once).
fn a_token() -> (String, String) {
    static TOKEN: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    TOKEN.get_or_init(compute_token).clone()
}

fn compute_token() -> (String, String) {
    let catalogue = racelab_models::catalogue();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let scenarios = scenario::load_dir(&dir, &catalogue).expect("the shipped scenarios load");
    let s = scenarios.iter().find(|s| s.id == "summary-upsert/check-then-insert").expect("scenario");
    let checked =
        s.model.check(&s.id, &racelab_harness::run::Mode::Exhaustive, &s.bounds, &racelab_harness::run::Backend::Sim);
    (s.id.clone(), checked.counterexample.expect("a counterexample").token)
}

/// Bytes spliced into text: the edits a fuzzer makes.
fn mutate(base: String) -> impl Strategy<Value = String> {
    let len = base.len();
    (0..=len, 0..=len.min(16), "\\PC{0,12}|[{}\\[\\]\"'=#.\n ]{0,6}").prop_map(move |(at, cut, insert)| {
        let mut at = at.min(base.len());
        while !base.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + cut).min(base.len());
        while !base.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}{}{}", &base[..at], insert, &base[end..])
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn token_decoder_never_panics(t in "\\PC{0,80}|rl1\\.[a-z/-]{0,40}\\.[A-Za-z0-9_-]{0,60}") {
        let _ = token::decode("summary-upsert/check-then-insert", &t);
        let _ = token::scenario_of(&t);
    }

    #[test]
    fn mutated_tokens_never_panic(t in mutate(a_token().1)) {
        let _ = token::decode(&a_token().0, &t);
    }

    #[test]
    fn scenario_parser_never_panics(text in mutate(
        "id = \"summary-upsert/check-then-insert\"\ndescription = \"d\"\nexpected = \"violated\"\n\
         [params]\n[bounds]\ncrashes = 1\nerrors = 0\ntimeouts = 1\npreemptions = 2\nmax_depth = 50\nmax_states = 1000\n".to_string()
    )) {
        let catalogue = racelab_models::catalogue();
        let _ = scenario::parse(std::path::Path::new("fuzz.toml"), &text, &catalogue);
    }

    #[test]
    fn arbitrary_scenario_text_never_panics(text in "\\PC{0,200}") {
        let catalogue = racelab_models::catalogue();
        let _ = scenario::parse(std::path::Path::new("fuzz.toml"), &text, &catalogue);
    }

    #[test]
    fn spec_parser_never_panics(text in mutate(
        "setup { CREATE TABLE t(a int); }\nteardown { DROP TABLE t; }\nsession \"s1\"\nsetup { BEGIN; }\n\
         step s1a { SELECT 1; }\nstep \"s1 b\" { COMMIT; }\nsession s2\nstep s2a { LOCK t; }\n\
         permutation s1a s2a(s1a) \"s1 b\"(*) \npermutation s2a(s1a notices 2) s1a \"s1 b\"\n".to_string()
    )) {
        let _ = racelab_pg::spec::parse(&text);
    }

    #[test]
    fn command_lines_never_panic(args in proptest::collection::vec(
        prop_oneof![
            Just("check".to_string()), Just("replay".to_string()), Just("list".to_string()),
            Just("explain".to_string()), Just("conform".to_string()), Just("pg-spec".to_string()),
            Just("export-spec".to_string()), Just("stress".to_string()), Just("--backend".to_string()),
            Just("postgres".to_string()), Just("--mode".to_string()), Just("pct".to_string()),
            Just("--schedules".to_string()), Just("--depth".to_string()), Just("--clients".to_string()),
            Just("--ops".to_string()), Just("--json".to_string()), Just("--seed".to_string()),
            "-?[0-9]{1,22}", "\\PC{0,12}", "--[a-z-]{1,12}(=\\PC{0,6})?",
        ],
        0..8,
    )) {
        let app = racelab::App::new("racelab", racelab_models::catalogue, "scenarios");
        let mut argv = vec!["racelab".to_string()];
        argv.extend(args);
        let _ = racelab::parse_args(&app, &argv);
    }
}
