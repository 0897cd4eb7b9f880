use racelab_engines::{check, Engine, Limits, ShuttleMode};
use racelab_harness::run::{Backend, Mode};
use racelab_harness::scenario;
use std::path::Path;
use std::time::Instant;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let scenarios = scenario::load_dir(&dir, &racelab_models::catalogue()).unwrap();
    let want: Vec<String> = std::env::args().skip(1).collect();
    for s in &scenarios {
        if !want.is_empty() && !want.iter().any(|w| s.id.contains(w.as_str())) {
            continue;
        }
        let mut bounds = s.bounds.clone();
        if let Ok(v) = std::env::var("CRASHES") {
            bounds.crashes = v.parse().unwrap();
        }
        if let Ok(v) = std::env::var("ERRORS") {
            bounds.errors = v.parse().unwrap();
        }
        let t = Instant::now();
        let rl = s.model.check(&s.id, &Mode::Exhaustive, &bounds, &Backend::Sim);
        let trl = t.elapsed();
        for engine in [
            Engine::Loom,
            Engine::Shuttle(ShuttleMode::Pct { seed: 0, depth: 3 }),
            Engine::Shuttle(ShuttleMode::Random { seed: 0 }),
        ] {
            if let Ok(e) = std::env::var("ENGINE") {
                if !format!("{} {}", engine.name(), engine.mode()).contains(&e) {
                    continue;
                }
            }
            let t = Instant::now();
            let c = check(
                &s.id,
                &*s.model,
                &bounds,
                engine,
                &Limits::schedules(std::env::var("LIMIT").map(|v| v.parse().unwrap()).unwrap_or(200_000)),
            );
            println!(
                "{:50} {:8} {:12} racelab {:12} ({:?}) engine {:12} {:?} execs {} states {} {:?} {}",
                s.id,
                engine.name(),
                engine.mode(),
                rl.verdict.to_string(),
                trl,
                c.verdict.to_string(),
                t.elapsed(),
                c.stats.executions,
                c.stats.states,
                c.reason,
                c.counterexample.as_ref().map(|x| format!("{} {}", x.invariant, x.steps)).unwrap_or_default()
            );
        }
    }
}
