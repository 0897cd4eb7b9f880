//! [`PgError`]: what went wrong with the server or the connections, and where.
//!
//! These are failures of the test rig (no binaries, a server that did not start, a lost
//! connection), never outcomes of the statements under test: those come back as
//! [`racelab_harness::op::Outcome::Err`] with their SQLSTATE.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum PgError {
    /// No directory holds both `initdb` and `postgres`.
    MissingBinaries { searched: Vec<PathBuf> },
    /// Running as root, and neither the `postgres` nor the `nobody` user exists.
    NoUnprivilegedUser,
    /// A file-system or process operation failed.
    Io { what: String, source: std::io::Error },
    /// `initdb` exited with an error.
    Initdb { command: String, status: String, stderr: String },
    /// The server exited, or did not accept connections in time.
    ServerDidNotStart { reason: String, log: PathBuf, log_tail: String },
    /// A server address that cannot be parsed; `source` says where it came from.
    BadUrl { source: String, message: String },
    /// Nothing answers at the address, or the connection broke.
    Unreachable { target: String, message: String },
    /// The server refused the credentials (SQLSTATE 28P01 / 28000).
    Auth { target: String, message: String },
    /// A statement the rig itself runs (setup, schema, control queries) failed.
    Sql { what: String, message: String },
    /// A bounded wait ran out.
    Timeout { what: String },
    /// The schema or the column types given to the controller do not fit together.
    Schema(String),
    /// A result cell could not be turned into a [`racelab_harness::op::Value`].
    Decode(String),
    /// The SIGINT/SIGTERM handler could not be installed.
    Interrupt(String),
}

impl PgError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> PgError {
        PgError::Io { what: what.into(), source }
    }

    /// A failed connection attempt: bad credentials, or an unreachable server.
    pub(crate) fn connect(target: &str, e: &tokio_postgres::Error) -> PgError {
        let code = e.code().map(|c| c.code());
        let message = error_text(e);
        match code {
            Some("28P01") | Some("28000") => PgError::Auth { target: target.to_string(), message },
            _ => PgError::Unreachable { target: target.to_string(), message },
        }
    }

    pub(crate) fn sql(what: impl Into<String>, e: &tokio_postgres::Error) -> PgError {
        PgError::Sql { what: what.into(), message: error_text(e) }
    }
}

/// The server's own message when there is one (`Display` of tokio-postgres only says `db error`).
pub(crate) fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                src = inner.source();
            }
            s
        }
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::MissingBinaries { searched } => {
                write!(f, "PostgreSQL server binaries (initdb, postgres) not found; searched PATH")?;
                for d in searched {
                    write!(f, ", {}", d.display())?;
                }
                write!(
                    f,
                    ". Install them (Debian/Ubuntu: `apt-get install postgresql`), set RACELAB_PG_BINDIR to \
                     the directory that holds them, or point DATABASE_URL at a running server"
                )
            }
            PgError::NoUnprivilegedUser => write!(
                f,
                "running as root, but there is no `postgres` or `nobody` user to run the server as \
                 (PostgreSQL refuses to run as root); create one, e.g. `useradd --system postgres`"
            ),
            PgError::Io { what, source } => write!(f, "{what}: {source}"),
            PgError::Initdb { command, status, stderr } => {
                write!(f, "initdb failed ({status}): {command}\n{}", stderr.trim_end())
            }
            PgError::ServerDidNotStart { reason, log, log_tail } => {
                write!(f, "PostgreSQL server did not start: {reason}; last lines of {}:\n{}", log.display(), log_tail)
            }
            PgError::BadUrl { source, message } => write!(f, "bad PostgreSQL URL in {source}: {message}"),
            PgError::Unreachable { target, message } => write!(f, "cannot reach PostgreSQL at {target}: {message}"),
            PgError::Auth { target, message } => {
                write!(f, "PostgreSQL at {target} refused the credentials: {message}")
            }
            PgError::Sql { what, message } => write!(f, "{what}: {message}"),
            PgError::Timeout { what } => write!(f, "timed out: {what}"),
            PgError::Schema(m) => write!(f, "schema: {m}"),
            PgError::Decode(m) => write!(f, "cannot decode a result: {m}"),
            PgError::Interrupt(m) => write!(f, "cannot install the interrupt handler: {m}"),
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PgError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_say_how_to_install_them() {
        let e = PgError::MissingBinaries { searched: vec![PathBuf::from("/usr/lib/postgresql/<version>/bin")] };
        let msg = e.to_string();
        assert!(msg.contains("apt-get install postgresql"), "{msg}");
        assert!(msg.contains("/usr/lib/postgresql/<version>/bin"), "{msg}");
    }
}
