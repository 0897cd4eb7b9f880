//! States and executions per second of the exhaustive search on every scenario, with sleep sets
//! and, as the peer measured in the same run, without them.
//!
//! `cargo bench -p racelab-models --bench explore` (or `just bench`). Criterion reports time per
//! exploration and, through `Throughput::Elements`, states per second; the first lines printed
//! give states, executions and the ratio of the two searches' times.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use racelab_harness::run::Mode;
use racelab_harness::scenario;

fn explore(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let scenarios = scenario::load_dir(&dir, &racelab_models::catalogue()).expect("scenario files load");
    // A scenario that names a sampling mode is too large to enumerate: nothing to measure here.
    for s in scenarios.iter().filter(|s| s.mode == Mode::Exhaustive) {
        let reduced = s.model.explore_exhaustive(&s.bounds, true);
        let plain = s.model.explore_exhaustive(&s.bounds, false);
        let time = |sleep_sets: bool| {
            let start = Instant::now();
            for _ in 0..5 {
                s.model.explore_exhaustive(&s.bounds, sleep_sets);
            }
            start.elapsed().as_secs_f64() / 5.0
        };
        let (t_reduced, t_plain) = (time(true), time(false));
        println!(
            "{:<48} states {:>8}  executions {:>8}  transitions {:>8} (peer {:>8})  {:>10.0} states/s  {:>10.0} executions/s  time ratio sleep/plain {:.2}",
            s.id,
            reduced.stats.states,
            reduced.stats.executions,
            reduced.stats.transitions,
            plain.stats.transitions,
            reduced.stats.states as f64 / t_reduced,
            reduced.stats.executions as f64 / t_reduced,
            t_reduced / t_plain,
        );
        let mut group = c.benchmark_group(s.id.replace('/', "__"));
        group.throughput(Throughput::Elements(reduced.stats.states.max(1)));
        group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
        group.bench_function("sleep-sets", |b| b.iter(|| s.model.explore_exhaustive(&s.bounds, true)));
        group.bench_function("no-reduction", |b| b.iter(|| s.model.explore_exhaustive(&s.bounds, false)));
        group.finish();
    }
}

criterion_group!(benches, explore);
criterion_main!(benches);
