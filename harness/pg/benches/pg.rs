//! The PostgreSQL backend's speed, on one throwaway cluster.
//!
//! `cargo bench -p racelab-pg --bench pg` (or `just bench-pg`). First a table, one line per
//! database scenario: the simulator's explored schedules (at most 50) replayed on PostgreSQL,
//! schedules per second, the time of the reset that starts each schedule (replaying the empty
//! schedule), the mean time of a step (the replays' time less their resets, over their steps;
//! lock waits included, about 1.5 × `deadlock_timeout` each), and that step time over a bare
//! round trip. Then, measured beforehand and again by criterion, on one connection to a one-row
//! table: a bare `SELECT 1` round trip and a controller step (`Sessions::execute` of a
//! `SELECT`, which also settles), with the ratio of the two.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use racelab_harness::op::{Applied, Sql, Value};
use racelab_harness::run::Backend;
use racelab_harness::scenario;
use racelab_harness::sim::{Schema, TableDef};
use racelab_pg::{Cluster, Sessions};

/// Schedules replayed per scenario.
const SCHEDULES: usize = 50;
const TABLE: &str = "racelab_bench_kv";

fn select() -> Sql {
    Sql::Select { table: TABLE, filter: vec![("k", Value::Int(1))], lock: None }
}

/// Mean time of `f` over `n` runs, after `warm` unmeasured ones.
fn mean(warm: u32, n: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..warm {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed() / n
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A controller with one session on a table holding one row.
fn one_row(cluster: &Cluster) -> Sessions {
    let schema = Schema { tables: vec![TableDef { name: TABLE, columns: vec!["k", "v"], unique: vec![] }] };
    let mut sessions = Sessions::open(cluster, &schema, &[], 1).expect("a session");
    sessions.reset(&[(TABLE, vec![Value::Int(1), Value::Int(0)])]).expect("seeding");
    sessions
}

/// Criterion's mean estimate (ns) of `group/name`, from its report file under the target
/// directory (`CARGO_TARGET_DIR`, else the workspace's `target`), when it was written `since`.
fn criterion_mean(group: &str, name: &str, since: std::time::SystemTime) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let file = target.join("criterion").join(group).join(name).join("new/estimates.json");
    if std::fs::metadata(&file).ok()?.modified().ok()? < since {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    // {"mean":{"confidence_interval":{…},"point_estimate":N,…},…}
    let mean = &text[text.find("\"mean\"")?..];
    let value = &mean[mean.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    value[..value.find([',', '}'])?].trim().parse().ok()
}

/// A run on a server that failed underneath measures nothing.
fn healthy(id: &str, backend: &Backend) {
    if let Backend::Real { db, .. } = backend {
        if let Some(failure) = db.lock().expect("controller lock").failure() {
            panic!("{id}: postgres failed: {failure}");
        }
    }
}

fn pg(c: &mut Criterion) {
    racelab_pg::install_interrupt_cleanup().expect("interrupt handler");
    let cluster = Cluster::embedded().expect("a throwaway cluster (PostgreSQL binaries installed?)");

    // One session on a one-row table, for the per-step overhead. A controller resets by ending
    // every other client of its database, so this one is closed while the scenarios run.
    let stmt = select();
    let mut sessions = one_row(&cluster);
    // Interleaved rounds, median of each, so that load elsewhere on the machine hits both alike.
    let (mut trips, mut steps) = (Vec::new(), Vec::new());
    for round in 0..15 {
        let warm = if round == 0 { 50 } else { 0 };
        trips.push(mean(warm, 200, || sessions.raw_round_trip(0, "SELECT 1").expect("SELECT 1")));
        steps.push(mean(warm, 200, || {
            let applied = sessions.execute(0, &stmt).expect("execute");
            assert!(matches!(applied, Applied::Done(_)));
        }));
    }
    let (round_trip, step) = (median(trips), median(steps));
    drop(sessions);

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let scenarios = scenario::load_dir(&dir, &racelab_models::catalogue()).expect("scenario files load");
    println!(
        "{:<48} {:>9} {:>11} {:>9} {:>13} {:>13}",
        "scenario", "schedules", "schedules/s", "reset ms", "mean step ms", "step/rt ratio"
    );
    for s in &scenarios {
        let Some(shape) = s.model.database_shape(&s.bounds) else { continue };
        let schedules = s.model.schedules(&s.bounds, SCHEDULES);
        let backend = racelab_pg::postgres(&cluster, &shape.schema, &shape.text_columns, shape.sessions)
            .expect("a controller for the scenario");
        // Replaying no step is a reset (end the sessions, reseed, reconnect) and the property checks.
        let reset = mean(0, 3, || {
            s.model.replay(&s.bounds, &[], &backend).expect("the empty schedule replays");
        });
        let start = Instant::now();
        let mut executed = 0;
        for schedule in &schedules {
            let r = s.model.replay(&s.bounds, schedule, &backend).expect("the simulator's schedules replay");
            healthy(&s.id, &backend);
            executed += r.steps;
        }
        let elapsed = start.elapsed();
        let stepping = elapsed.saturating_sub(reset * schedules.len() as u32);
        let per_step = stepping / executed.max(1) as u32;
        println!(
            "{:<48} {:>9} {:>11.1} {:>9.2} {:>13.3} {:>13.1}",
            s.id,
            schedules.len(),
            schedules.len() as f64 / elapsed.as_secs_f64(),
            reset.as_secs_f64() * 1e3,
            per_step.as_secs_f64() * 1e3,
            per_step.as_secs_f64() / round_trip.as_secs_f64(),
        );
    }
    println!(
        "bare round trip (SELECT 1) {:.1} µs, controller step (execute SELECT) {:.1} µs: step/round-trip ratio {:.2}",
        round_trip.as_secs_f64() * 1e6,
        step.as_secs_f64() * 1e6,
        step.as_secs_f64() / round_trip.as_secs_f64()
    );

    let mut sessions = one_row(&cluster);
    let since = std::time::SystemTime::now();
    let mut group = c.benchmark_group("step-overhead");
    group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group.bench_function("raw-round-trip", |b| b.iter(|| sessions.raw_round_trip(0, "SELECT 1").expect("SELECT 1")));
    group.bench_function("execute-select", |b| b.iter(|| sessions.execute(0, &stmt).expect("execute")));
    group.finish();
    let estimate = |name: &str| criterion_mean("step-overhead", name, since);
    if let (Some(trip), Some(step)) = (estimate("raw-round-trip"), estimate("execute-select")) {
        println!(
            "criterion: bare round trip {:.1} µs, controller step {:.1} µs: step/round-trip ratio {:.2}",
            trip / 1e3,
            step / 1e3,
            step / trip
        );
    }
    drop(sessions);
    drop(cluster);
}

criterion_group!(benches, pg);
criterion_main!(benches);
