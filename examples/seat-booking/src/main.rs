//! The whole `racelab` command line, serving this crate's own catalogue:
//! `cargo run -p seat-booking -- check all`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let scenarios = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
    racelab::main(racelab::App::new("seat-booking", seat_booking::catalogue, scenarios))
}
