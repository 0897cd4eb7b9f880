//! racelab on a real PostgreSQL server.
