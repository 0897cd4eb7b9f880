//! racelab on a real PostgreSQL server.
pub mod spec;
