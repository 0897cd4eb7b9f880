//! racelab, loom and shuttle on the same catalogue models, N = 2… workers, measured in one run.
//!
//! For each model whose worker count is a parameter: the time to a complete verdict on a fix
//! that holds (racelab's exhaustive search, loom, shuttle's DFS) and the time to the first
//! violation on the buggy variant (exhaustive: racelab, loom; PCT and random, racelab's and
//! shuttle's, with the same fixed seed). Raw explorations: no minimising, no timeline. Bounds are the scenario's without faults
//! (each fault kind costs loom a thread; see the README). A peer that passes the cap (60 s, or
//! `RACELAB_BENCH_CAP_S`) is stopped and not run at larger N. The table printed at the end gives
//! each peer's time as a multiple of racelab's; criterion then measures the runs that finish in
//! under a second.
//!
//! `cargo bench -p racelab-engines --bench engines` (or `just bench-engines`);
//! `RACELAB_BENCH_RACES` (comma-separated race ids) measures only those races' rows.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use racelab_engines::{explore, Engine, Limits, ShuttleMode};
use racelab_harness::catalogue::{DynModel, Param, Params};
use racelab_harness::explore::Bounds;
use racelab_harness::run::Mode;

/// (race, parameter, fix that holds, buggy variant): every race whose worker count is a parameter.
const MODELS: [(&str, &str, &str, &str); 3] = [
    ("summary-upsert", "requests", "unique-on-conflict", "check-then-insert"),
    ("progress-clear-insert", "requests", "upsert", "clear-then-insert"),
    ("nested-locks", "hooks", "single-namespace", "fine-grained"),
];
/// N = 2… this many workers.
const MAX_N: usize = 6;
const SEED: u64 = 7;
const SAMPLED: u64 = 100_000;

/// The model with `n` actors: nested-locks has one reconciler beside its `n - 1` hooks.
fn build(race: &str, variant: &str, param: &str, n: usize) -> Box<dyn DynModel> {
    let catalogue = racelab_models::catalogue();
    let count = if race == "nested-locks" { n - 1 } else { n };
    let race = catalogue.iter().find(|r| r.id == race).expect("a catalogue race");
    let variant = race.variants.iter().find(|v| v.id == variant).expect("a variant of the race");
    let params = Params::new(BTreeMap::from([(param.to_string(), Param::Int(count as i64))]));
    (variant.build)(&params).expect("the model builds")
}

fn bounds() -> Bounds {
    Bounds { max_depth: 200, max_states: 100_000_000, ..Bounds::default() }
}

#[derive(Clone, Copy, PartialEq)]
enum Peer {
    Racelab,
    /// racelab's own sampler: `Mode::Random` or `Mode::Pct`.
    RacelabSampled(Sampler),
    Engine(Engine),
}

#[derive(Clone, Copy, PartialEq)]
enum Sampler {
    Pct,
    Random,
}

impl Peer {
    fn name(&self) -> String {
        match self {
            Peer::Racelab => "racelab".to_string(),
            Peer::RacelabSampled(Sampler::Pct) => "racelab pct".to_string(),
            Peer::RacelabSampled(Sampler::Random) => "racelab random".to_string(),
            Peer::Engine(e) => format!("{} {}", e.name(), e.mode()),
        }
    }
}

/// One run: its time, or `None` past the cap (or when the engine cannot run the model).
fn run(model: &dyn DynModel, peer: Peer, want_violation: bool, cap: Duration) -> Option<Duration> {
    let b = bounds();
    let start = Instant::now();
    let ok = match peer {
        Peer::Racelab => {
            let e = model.explore_exhaustive(&b, true);
            if want_violation {
                e.violation.is_some()
            } else {
                e.complete && e.violation.is_none()
            }
        }
        Peer::RacelabSampled(sampler) => {
            let mode = match sampler {
                Sampler::Pct => Mode::Pct { seed: SEED, schedules: SAMPLED, depth: 3 },
                Sampler::Random => Mode::Random { seed: SEED, schedules: SAMPLED },
            };
            // A sampler never completes; only its first violation is measured.
            want_violation && model.explore_sampled(&b, &mode).violation.is_some()
        }
        Peer::Engine(engine) => {
            let schedules =
                if matches!(engine, Engine::Loom | Engine::Shuttle(ShuttleMode::Dfs)) { b.max_states } else { SAMPLED };
            let limits = Limits { schedules, deadline: Some(start + cap), keep_states: false };
            let r = explore(model, &b, engine, &limits);
            if want_violation {
                r.violation.is_some()
            } else {
                r.complete && r.violation.is_none()
            }
        }
    };
    let took = start.elapsed();
    (ok && took < cap).then_some(took)
}

/// The median of up to five runs (one when a run takes over a second).
fn measure(model: &dyn DynModel, peer: Peer, want_violation: bool, cap: Duration) -> Option<Duration> {
    let first = run(model, peer, want_violation, cap)?;
    if first > Duration::from_secs(1) {
        return Some(first);
    }
    let mut times: Vec<Duration> =
        std::iter::once(first).chain((0..4).filter_map(|_| run(model, peer, want_violation, cap))).collect();
    times.sort();
    Some(times[times.len() / 2])
}

/// racelab's own time: µs below a millisecond, so that the smallest runs keep two digits.
fn duration(t: Duration) -> String {
    let ms = t.as_secs_f64() * 1e3;
    if ms < 1.0 {
        format!("{:.1} µs", ms * 1e3)
    } else {
        format!("{ms:.2} ms")
    }
}

/// A peer's time as a multiple of racelab's: three decimals below 0.1×, one decimal
/// below 100×, none above.
fn ratio(r: f64) -> String {
    if r < 0.1 {
        format!("{r:.3}×")
    } else if r < 100.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.0}×")
    }
}

fn engines(c: &mut Criterion) {
    let cap = Duration::from_secs(std::env::var("RACELAB_BENCH_CAP_S").ok().and_then(|s| s.parse().ok()).unwrap_or(60));
    let holds_peers = [Peer::Racelab, Peer::Engine(Engine::Loom), Peer::Engine(Engine::Shuttle(ShuttleMode::Dfs))];
    let violation_peers = [
        Peer::Racelab,
        Peer::Engine(Engine::Loom),
        Peer::RacelabSampled(Sampler::Pct),
        Peer::Engine(Engine::Shuttle(ShuttleMode::Pct { seed: SEED, depth: 3 })),
        Peer::RacelabSampled(Sampler::Random),
        Peer::Engine(Engine::Shuttle(ShuttleMode::Random { seed: SEED })),
    ];
    let mut rows: Vec<String> = Vec::new();
    let mut fast: Vec<(String, &str, &str, usize, Peer, bool)> = Vec::new();
    let only = std::env::var("RACELAB_BENCH_RACES").unwrap_or_default();
    for (race, param, fix, buggy) in MODELS {
        if !only.is_empty() && !only.split(',').any(|r| r.trim() == race) {
            continue;
        }
        for (variant, peers, want_violation) in [(fix, &holds_peers[..], false), (buggy, &violation_peers[..], true)] {
            let mut stopped = vec![false; peers.len()];
            for n in 2..=MAX_N {
                let mut cells = Vec::new();
                let model = build(race, variant, param, n);
                let mut base = None;
                for (k, &peer) in peers.iter().enumerate() {
                    let threads_ok =
                        !matches!(peer, Peer::Engine(Engine::Loom)) || n < racelab_engines::LOOM_MAX_THREADS;
                    let time =
                        if stopped[k] || !threads_ok { None } else { measure(&*model, peer, want_violation, cap) };
                    if time.is_none() {
                        stopped[k] = true;
                    }
                    let cell = match (time, base) {
                        (Some(t), None) => {
                            base = Some(t);
                            duration(t)
                        }
                        (Some(t), Some(b)) => ratio(t.as_secs_f64() / b.as_secs_f64()),
                        (None, _) if !threads_ok => "too many threads".to_string(),
                        (None, _) => format!("> {} s", cap.as_secs()),
                    };
                    if time.is_some_and(|t| t < Duration::from_secs(1)) {
                        fast.push((
                            format!("{race}__{variant}/{}/n{n}", peer.name().replace(' ', "-")),
                            race,
                            variant,
                            n,
                            peer,
                            want_violation,
                        ));
                    }
                    cells.push(cell);
                }
                rows.push(format!("| {race}/{variant} | {n} | {} |", cells.join(" | ")));
            }
        }
    }
    println!("\nTime to a complete verdict (fix that holds): racelab's time, then each peer's as a multiple of it.");
    println!("| model | N | racelab | loom | shuttle dfs |");
    println!("|---|---|---|---|---|");
    for r in rows.iter().filter(|r| MODELS.iter().any(|m| r.contains(&format!("{}/{} ", m.0, m.2)))) {
        println!("{r}");
    }
    println!("\nTime to the first violation (buggy variant): racelab exhaustive's time, then each peer's multiple.");
    println!("| model | N | racelab | loom | racelab pct | shuttle pct | racelab random | shuttle random |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows.iter().filter(|r| MODELS.iter().any(|m| r.contains(&format!("{}/{} ", m.0, m.3)))) {
        println!("{r}");
    }
    println!();
    for (name, race, variant, n, peer, want_violation) in fast {
        let param = MODELS.iter().find(|m| m.0 == race).expect("listed").1;
        let model = build(race, variant, param, n);
        let mut group = c.benchmark_group("engines");
        group.sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_secs(1));
        group.bench_function(name, |b| b.iter(|| run(&*model, peer, want_violation, cap)));
        group.finish();
    }
}

criterion_group!(benches, engines);
criterion_main!(benches);
