# racelab's common jobs. `just --list` shows them.

# Explore every scenario on the simulator (or name ids: just run summary-upsert)
run *ids="all":
    cargo run --release -p racelab -- check {{ids}}

# The test suite, as CI runs it
test:
    cargo test --workspace

# Formatting and lints, as CI runs them
check:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Replay a schedule token: just replay summary-upsert/check-then-insert rl1.…
replay id token:
    cargo run --release -p racelab -- replay {{id}} {{token}}

# Explain a scenario: its shortest counterexample, or what was explored
explain id:
    cargo run --release -p racelab -- explain {{id}}

# Benchmarks: states/s and executions/s per headline race
bench:
    cargo bench -p racelab-models --bench explore

# Benchmarks of the PostgreSQL backend: schedules/s per database scenario, step overhead
bench-pg:
    cargo bench -p racelab-pg --bench pg

# loom and shuttle against racelab on every scenario with its declared bounds (loom: hours on the larger ones)
engines:
    RACELAB_ENGINES_FULL=1 cargo test --release -p racelab-engines --test agreement -- --include-ignored
    cargo run --release -p racelab -- check all --engine loom --json > reports/verdicts-loom.jsonl || true
    cargo run --release -p racelab -- check all --engine shuttle --mode pct --json > reports/verdicts-shuttle-pct.jsonl || true

# racelab vs loom vs shuttle on the same models, N = 2… workers: a ratio table (cap per run: 60 s, or cap=S)
bench-engines cap="60":
    RACELAB_BENCH_CAP_S={{cap}} cargo bench -p racelab-engines --bench engines

# Write a report of every verdict to reports/
report:
    mkdir -p reports
    cargo run --release -p racelab -- check all --json > reports/verdicts.jsonl
    cargo run --release -p racelab -- check all > reports/verdicts.txt

# Every database scenario on a real PostgreSQL server (a throwaway cluster unless DATABASE_URL is set)
pg *ids="summary-upsert progress-clear-insert nested-locks judge-persist":
    cargo run --release -p racelab -- check {{ids}} --backend postgres

# The simulator against PostgreSQL, schedule by schedule
conform:
    cargo run --release -p racelab -- conform

# Many more random transaction programs, simulator against PostgreSQL (default in cargo test: 40)
conform-prop cases="1000":
    PROPTEST_CASES={{cases}} cargo test --release -p racelab-pg --test conform_prop -- --nocapture

# Write a scenario as a PostgreSQL isolation spec: just export-spec summary-upsert/select-for-update
export-spec id:
    cargo run --release -p racelab -- export-spec {{id}}
