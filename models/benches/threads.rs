//! The parallel search (`check --threads N`) on one and on two threads, and the sequential
//! search, on a locked upsert with four workers and the scenario's faults.
//!
//! `cargo bench -p racelab-models --bench threads`. The speed-up on two threads is the ratio of
//! the `threads-1` and `threads-2` times; it only shows on cores no one else is using.

use std::collections::BTreeMap;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use racelab_harness::catalogue::{Param, Params};
use racelab_harness::explore::{Bounds, Budget};

fn threads(c: &mut Criterion) {
    let catalogue = racelab_models::catalogue();
    let race = catalogue.iter().find(|r| r.id == "summary-upsert").expect("race");
    let build = race.variants.iter().find(|v| v.id == "advisory-xact-lock").expect("variant").build;
    let model = build(&Params::new(BTreeMap::from([("requests".to_string(), Param::Int(4))]))).expect("model");
    let bounds = Bounds { crashes: 1, errors: 1, timeouts: 1, max_depth: 64, ..Bounds::default() };
    let states = model.explore_parallel(&bounds, 1, &Budget::default(), true).stats.states;
    let mut group = c.benchmark_group("advisory-xact-lock-4-workers");
    group.throughput(Throughput::Elements(states));
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(5));
    group.bench_function("sequential", |b| b.iter(|| model.explore_exhaustive(&bounds, true)));
    for t in [1, 2] {
        group.bench_function(format!("threads-{t}"), |b| {
            b.iter(|| model.explore_parallel(&bounds, t, &Budget::default(), true))
        });
    }
    group.finish();
}

criterion_group!(benches, threads);
criterion_main!(benches);
