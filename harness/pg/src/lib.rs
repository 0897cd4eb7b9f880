//! racelab on a real PostgreSQL server.
//!
//! - [`cluster`]: a server with no setup, a throwaway cluster or a scratch database on
//!   `DATABASE_URL`, cleaned up on drop, on SIGINT/SIGTERM, and (the server) on SIGKILL.
//! - [`sql`]: [`racelab_harness::op::Sql`] as SQL text, the schema as DDL, results as values.
//! - [`spec`]: PostgreSQL's isolation-test specs, parsed, run and printed as its tester does.

pub mod cluster;
pub mod error;
pub mod spec;
pub mod sql;

pub use cluster::{install_interrupt_cleanup, Cluster};
pub use error::PgError;
