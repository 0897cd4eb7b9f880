//! `racelab`: the command line over the project's own catalogue (see the library for the rest).

use std::process::ExitCode;

// A search clones and drops whole worlds at every transition; mimalloc's thread-local free
// lists serve those small allocations faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let scenarios = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios");
    racelab::main(racelab::App::new("racelab", racelab_models::catalogue, scenarios))
}
