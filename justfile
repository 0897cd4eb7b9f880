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

# States/s of the plain and the reduced search on one core, per headline race
bench-throughput:
    cargo bench -p racelab-models --bench throughput

# DPOR per scenario: executions, Mazurkiewicz traces, DPOR executions per trace (cap=N executions)
bench-dpor cap="200000":
    RACELAB_DPOR_CAP={{cap}} cargo bench -p racelab-models --bench dpor

# Benchmarks of the PostgreSQL backend: schedules/s per database scenario, step overhead
bench-pg:
    cargo bench -p racelab-pg --bench pg

# loom and shuttle on every scenario: their verdicts with the default budgets into reports/ (minutes),
# then the agreement tests with declared bounds and max_states executions (loom: hours on the larger ones)
engines:
    mkdir -p reports
    cargo run --release -p racelab -- check all --engine loom --json > reports/verdicts-loom.jsonl || true
    cargo run --release -p racelab -- check all --engine shuttle --json > reports/verdicts-shuttle-dfs.jsonl || true
    cargo run --release -p racelab -- check all --engine shuttle --mode pct --json > reports/verdicts-shuttle-pct.jsonl || true
    cargo run --release -p racelab -- check all --engine shuttle --mode random --json > reports/verdicts-shuttle-random.jsonl || true
    RACELAB_ENGINES_FULL=1 cargo test --release -p racelab-engines --test agreement -- --include-ignored

# racelab vs loom vs shuttle on the same models, N = 2… workers: a ratio table (cap per run: 60 s, or cap=S)
bench-engines cap="60":
    RACELAB_BENCH_CAP_S={{cap}} cargo bench -p racelab-engines --bench engines

# Write the report site and Markdown to reports/site/, and every verdict to reports/ (JSON Lines, text, JUnit XML)
report:
    mkdir -p reports
    cargo run --release -p racelab -- report --out reports/site
    cargo run --release -p racelab -- check all --json > reports/verdicts.jsonl
    cargo run --release -p racelab -- check all --junit reports/junit.xml > reports/verdicts.txt

# Be the scheduler: a local page to play a scenario (just play summary-upsert/check-then-insert)
play id="summary-upsert/check-then-insert":
    cargo run --release -p racelab -- play {{id}}

# The browser test alone (headless Chromium; apt-get install chromium chromium-driver)
browser:
    cargo test -p racelab --test browser -- --nocapture

# Every database scenario on a real PostgreSQL server (a throwaway cluster unless DATABASE_URL is set)
pg *ids="summary-upsert progress-clear-insert nested-locks judge-persist session-get-or-create lock-reentrancy agent-lock-commit lock-timeout-leak pool-exhaustion/small-pool pool-exhaustion/sized-pool pool-exhaustion/checkout-timeout reaper-commit deferred-stop summarise-dedup skill-inject":
    cargo run --release -p racelab -- check {{ids}} --backend postgres

# Actors running freely and concurrently on PostgreSQL, round after round, invariants after each
# round: just stress summary-upsert 64 10000
stress ids="summary-upsert progress-clear-insert nested-locks judge-persist" clients="64" ops="10000":
    cargo run --release -p racelab -- stress {{ids}} --clients {{clients}} --ops {{ops}} --backend postgres

# The simulator against PostgreSQL, schedule by schedule
conform:
    cargo run --release -p racelab -- conform

# Many more random transaction programs, simulator against PostgreSQL (default in cargo test: 40)
conform-prop cases="1000":
    PROPTEST_CASES={{cases}} cargo test --release -p racelab-pg --test conform_prop -- --nocapture

# Write a scenario as a PostgreSQL isolation spec: just export-spec summary-upsert/select-for-update
export-spec id:
    cargo run --release -p racelab -- export-spec {{id}}

# Property-based fuzzing of every parser of outside input (tokens, scenarios, specs, command lines)
fuzz cases="100000":
    PROPTEST_CASES={{cases}} cargo test --release -p racelab --test fuzz

# PostgreSQL's whole isolation schedule from its source tree (`apt-get source postgresql-15`), in
# one pg-spec run, compared with its expected outputs: just pg-isolation ~/postgresql-15.18
pg-isolation src:
    cargo build --release -p racelab
    cd {{src}}/src/test/isolation && PGDATESTYLE="Postgres, MDY" PGTZ=PST8PDT \
        {{justfile_directory()}}/target/release/racelab pg-spec \
        $(awk '/^test:/{for(i=2;i<=NF;i++) print "specs/"$i".spec"}' isolation_schedule) --expected-dir expected

# The file races and daemon-spawn on real files and processes
real *ids="state-save guidance-write config-edit daemon-spawn":
    cargo run --release -p racelab -- check {{ids}} --backend real

# Simulated files against the real OS on random programs, with more cases than cargo test runs
conform-files cases="4000":
    RACELAB_FILE_CASES={{cases}} cargo test --release -p racelab-real --test conform_prop

# The scale table: holding races × identical workers × one crash → states, time, bytes/state,
# 1 vs 2 threads (RACELAB_SCALE_LIMIT seconds per exploration, RACELAB_SCALE_WORKERS counts)
bench-scale:
    cargo bench -p racelab-models --bench scale
    cargo bench -p racelab-models --bench threads
