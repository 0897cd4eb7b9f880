//! racelab on a real PostgreSQL server.
//!
//! - [`cluster`]: a server with no setup, a throwaway cluster or a scratch database on
//!   `DATABASE_URL`, cleaned up on drop, on SIGINT/SIGTERM, and (the server) on SIGKILL.

pub mod cluster;
pub mod error;

pub use cluster::{install_interrupt_cleanup, Cluster};
pub use error::PgError;
