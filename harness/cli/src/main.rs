//! `racelab`: the command line over the project's own catalogue (see the library for the rest).

use std::process::ExitCode;

fn main() -> ExitCode {
    let scenarios = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios");
    racelab::main(racelab::App::new("racelab", racelab_models::catalogue, scenarios))
}
