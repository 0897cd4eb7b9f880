//! racelab's engine: the model API, the simulated world, the explorers, schedule tokens,
//! timelines and scenario files. See ARCHITECTURE.md for the map.

pub mod catalogue;
pub mod explore;
pub mod intern;
pub mod model;
pub mod op;
pub mod render;
pub mod run;
mod run_files;
pub mod scenario;
pub mod shape;
pub mod sim;
pub mod stress;
pub mod symmetry;
pub mod testing;
pub mod timeline;
pub mod token;

pub use intern::intern;
