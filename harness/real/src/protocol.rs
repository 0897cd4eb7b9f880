//! The line protocol between racelab and a worker: one request line, one reply line. Strings
//! travel as hex, so that no content can break a line.

use racelab_harness::op::{ErrorCode, Outcome, Value};
use racelab_harness::sim::fs::FsOp;

/// A request line for the simulator's OS op on files and locks (`ReadFile`, `WriteFile`, …);
/// `None` for ops the controller runs itself (spawns, `kill(pid, 0)` with a translated pid, exit).
pub fn os_request(op: &racelab_harness::op::OsOp, content: &str) -> Option<String> {
    use racelab_harness::op::OsOp;
    Some(match *op {
        OsOp::ReadFile { path } => format!("R {}", hex(path.as_bytes())),
        OsOp::WriteFile { path, .. } => format!("Q {} {}", hex(path.as_bytes()), hex(content.as_bytes())),
        OsOp::RemoveFile { path } => format!("D {}", hex(path.as_bytes())),
        OsOp::Flock { path, nonblocking } => format!("F {} {}", hex(path.as_bytes()), u8::from(nonblocking)),
        OsOp::Funlock { path } => format!("G {}", hex(path.as_bytes())),
        _ => return None,
    })
}

pub fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "-".into();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s == "-" {
        return Some(Vec::new());
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// A request line for `op`; `mkstemp` also carries the first name number to try.
pub fn request(op: &FsOp, temp_next: u16) -> String {
    let b = |v: bool| u8::from(v);
    match *op {
        FsOp::Open { fd, path, create, excl, trunc } => {
            format!("O {fd} {} {} {} {}", hex(path.as_bytes()), b(create), b(excl), b(trunc))
        }
        FsOp::Mkstemp { fd, prefix } => format!("M {fd} {} {temp_next}", hex(prefix.as_bytes())),
        FsOp::Write { fd, offset, data } => format!("W {fd} {offset} {}", hex(data.as_bytes())),
        FsOp::Fsync { fd } => format!("S {fd}"),
        FsOp::Close { fd } => format!("C {fd}"),
        FsOp::Flock { fd, nonblocking } => format!("L {fd} {}", b(nonblocking)),
        FsOp::Funlock { fd } => format!("U {fd}"),
        FsOp::Read { path } => format!("R {}", hex(path.as_bytes())),
        FsOp::Rename { from, to } => format!("N {} {}", hex(from.as_bytes()), hex(to.as_bytes())),
        FsOp::Unlink { path } => format!("D {}", hex(path.as_bytes())),
        FsOp::FsyncDir => "Y".into(),
    }
}

/// Decode a reply line.
pub fn reply(line: &str) -> Option<Outcome> {
    let mut parts = line.split(' ');
    Some(match parts.next()? {
        "K" => Outcome::Ok,
        "V" => {
            let bytes = unhex(parts.next()?)?;
            Outcome::Value(Value::Str(racelab_harness::intern(String::from_utf8_lossy(&bytes))))
        }
        "E" => Outcome::Err(errno_code(parts.next()?.parse().ok()?)),
        "B" => Outcome::Bool(parts.next()? == "1"),
        _ => return None,
    })
}

/// The simulator's name for an errno.
pub fn errno_code(errno: i32) -> ErrorCode {
    match errno {
        libc::ENOENT => ErrorCode::ENOENT,
        libc::EEXIST => ErrorCode::EEXIST,
        libc::EWOULDBLOCK => ErrorCode::EWOULDBLOCK,
        libc::ETIMEDOUT | libc::EINTR => ErrorCode::ETIMEDOUT,
        libc::EDEADLK => ErrorCode::EDEADLK,
        _ => ErrorCode::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_empty_is_a_dash() {
        assert_eq!(unhex(&hex(b"{v:1}\0")), Some(b"{v:1}\0".to_vec()));
        assert_eq!(hex(b""), "-");
        assert_eq!(unhex("-"), Some(Vec::new()));
        assert_eq!(unhex("abc"), None);
    }

    #[test]
    fn replies_decode() {
        assert_eq!(reply("K"), Some(Outcome::Ok));
        assert_eq!(reply(&format!("E {}", libc::ENOENT)), Some(Outcome::Err(ErrorCode::ENOENT)));
        assert_eq!(reply("V 6869"), Some(Outcome::Value(Value::Str("hi"))));
        assert_eq!(reply("?"), None);
    }
}
