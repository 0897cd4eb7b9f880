//! racelab on a real PostgreSQL server.
//!
//! - [`cluster`]: a server with no setup, a throwaway cluster or a scratch database on
//!   `DATABASE_URL`, cleaned up on drop, on SIGINT/SIGTERM, and (the server) on SIGKILL.
//! - [`sandbox`]: the server's shared memory in namespaces of its own, so that none outlives it.
//! - [`sql`]: [`racelab_harness::op::Sql`] as SQL text, the schema as DDL, results as values.
//! - [`session`]: the step-by-step controller, with the simulator's API.
//! - [`backend`]: the controller as the world's database, so the explorers drive it.
//! - [`free`]: sessions that actors drive concurrently, for stress runs.
//! - [`spec`]: PostgreSQL's isolation-test specs, parsed, run and printed as its tester does.
//!
//! ```no_run
//! use racelab_harness::op::{Applied, Sql, Value};
//! use racelab_harness::sim::{Schema, TableDef};
//! use racelab_pg::{Cluster, Sessions};
//!
//! racelab_pg::install_interrupt_cleanup()?;
//! let cluster = Cluster::from_env()?; // DATABASE_URL, else a throwaway cluster
//! let schema = Schema { tables: vec![TableDef { name: "kv", columns: vec!["k", "v"], unique: vec![] }] };
//! let mut s = Sessions::open(&cluster, &schema, &[], 2)?;
//! s.reset(&[("kv", vec![Value::Int(1), Value::Int(0)])])?;
//! assert!(matches!(s.execute(0, &Sql::Begin)?, Applied::Done(_)));
//! # Ok::<(), racelab_pg::PgError>(())
//! ```

pub mod backend;
pub mod cluster;
pub mod error;
pub mod export;
pub mod free;
mod owner;
pub mod sandbox;
pub mod session;
pub mod spec;
pub mod sql;

pub use backend::{postgres, server_lost};
pub use cluster::{also_on_interrupt, install_interrupt_cleanup, interrupted, Cluster};
pub use error::PgError;
pub use free::{free_sessions, FreeSessions};
pub use session::{Pin, Sessions};
