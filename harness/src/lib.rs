//! racelab's engine: the model API, the simulated world, the explorers, schedule tokens,
//! timelines and scenario files. See ARCHITECTURE.md for the map.

pub mod catalogue;
pub mod model;
pub mod op;
pub mod render;
pub mod sim;
