//! Schedule tokens: a printable, compact, checked encoding of a schedule.
//!
//! `rl1.summary-upsert/check-then-insert.AQIDCAUEdQ9Xng`
//!
//! - `rl1`: the encoding version;
//! - the scenario id, so that a token for one scenario is never replayed on another;
//! - base64url (no padding) of one byte per choice (`kind << 5 | actor`) followed by a CRC-32
//!   of the scenario id and the choice bytes, so that a mistyped token is caught.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::explore::{Choice, ChoiceKind};
use crate::op::MAX_ACTORS;

const VERSION: &str = "rl1";
/// Longest schedule a token may carry; far beyond any `max_depth` a scenario declares.
pub const MAX_CHOICES: usize = 4096;

/// Why a token was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenError {
    Malformed(String),
    WrongScenario { token_for: String, wanted: String },
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Malformed(why) => write!(f, "malformed token: {why}"),
            TokenError::WrongScenario { token_for, wanted } => {
                write!(f, "this token is for scenario `{token_for}`, not `{wanted}`")
            }
        }
    }
}

impl std::error::Error for TokenError {}

pub fn encode(scenario: &str, choices: &[Choice]) -> String {
    assert!(!scenario.contains('.'), "scenario ids contain no dots");
    assert!(choices.len() <= MAX_CHOICES);
    let mut bytes: Vec<u8> = choices.iter().map(|c| encode_choice(*c)).collect();
    let crc = checksum(scenario, &bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    format!("{VERSION}.{scenario}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The scenario id a token names, without checking anything else.
pub fn scenario_of(token: &str) -> Result<&str, TokenError> {
    let mut parts = token.trim().split('.');
    let version = parts.next().unwrap_or_default();
    if version != VERSION {
        return Err(TokenError::Malformed(format!(
            "it starts with `{version}`, expected `{VERSION}` (tokens look like `{VERSION}.race/variant.…`)"
        )));
    }
    match (parts.next(), parts.next(), parts.next()) {
        (Some(id), Some(_), None) if !id.is_empty() => Ok(id),
        _ => Err(TokenError::Malformed(format!("expected three dot-separated parts: `{VERSION}.race/variant.…`"))),
    }
}

/// Decode a token for scenario `wanted`.
pub fn decode(wanted: &str, token: &str) -> Result<Vec<Choice>, TokenError> {
    let id = scenario_of(token)?;
    let body = token.trim().rsplit('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|e| TokenError::Malformed(format!("the schedule part is not base64url: {e}")))?;
    if bytes.len() < 4 {
        return Err(TokenError::Malformed("the schedule part is too short to hold its checksum".into()));
    }
    let (choices, crc) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_le_bytes(crc.try_into().expect("four bytes"));
    if crc != checksum(id, choices) {
        return Err(TokenError::Malformed("checksum mismatch: the token was altered or truncated".into()));
    }
    if id != wanted {
        return Err(TokenError::WrongScenario { token_for: id.to_string(), wanted: wanted.to_string() });
    }
    if choices.len() > MAX_CHOICES {
        return Err(TokenError::Malformed(format!("more than {MAX_CHOICES} steps")));
    }
    choices.iter().map(|&b| decode_choice(b)).collect()
}

fn checksum(scenario: &str, choices: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(scenario.as_bytes());
    h.update(&[0]);
    h.update(choices);
    h.finalize()
}

fn encode_choice(c: Choice) -> u8 {
    assert!(usize::from(c.actor) < MAX_ACTORS);
    let kind = match c.kind {
        ChoiceKind::Step => 0,
        ChoiceKind::Crash => 1,
        ChoiceKind::Error => 2,
        ChoiceKind::Timeout => 3,
        ChoiceKind::LostReply => 4,
        ChoiceKind::PowerLoss => 5,
    };
    kind << 5 | c.actor
}

fn decode_choice(b: u8) -> Result<Choice, TokenError> {
    let kind = match b >> 5 {
        0 => ChoiceKind::Step,
        1 => ChoiceKind::Crash,
        2 => ChoiceKind::Error,
        3 => ChoiceKind::Timeout,
        4 => ChoiceKind::LostReply,
        5 => ChoiceKind::PowerLoss,
        k => return Err(TokenError::Malformed(format!("unknown choice kind {k}"))),
    };
    Ok(Choice { actor: b & 0x1f, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Choice> {
        vec![
            Choice { actor: 0, kind: ChoiceKind::Step },
            Choice { actor: 1, kind: ChoiceKind::Step },
            Choice { actor: 1, kind: ChoiceKind::Crash },
            Choice { actor: 31, kind: ChoiceKind::Timeout },
            Choice { actor: 2, kind: ChoiceKind::Error },
            Choice { actor: 4, kind: ChoiceKind::LostReply },
            Choice { actor: 17, kind: ChoiceKind::PowerLoss },
        ]
    }

    #[test]
    fn round_trips() {
        let t = encode("race/variant", &sample());
        assert!(t.starts_with("rl1.race/variant."));
        assert_eq!(decode("race/variant", &t).unwrap(), sample());
        assert_eq!(decode("race/variant", &encode("race/variant", &[])).unwrap(), vec![]);
    }

    #[test]
    fn rejects_another_scenario() {
        let t = encode("race/a", &sample());
        assert_eq!(
            decode("race/b", &t),
            Err(TokenError::WrongScenario { token_for: "race/a".into(), wanted: "race/b".into() })
        );
    }

    #[test]
    fn rejects_corruption() {
        let t = encode("race/a", &sample());
        let mut flipped = t.clone().into_bytes();
        let last = flipped.len() - 3;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(matches!(decode("race/a", &flipped), Err(TokenError::Malformed(m)) if m.contains("checksum")));
        assert!(matches!(decode("race/a", &t[..t.len() - 2]), Err(TokenError::Malformed(_))));
        assert!(matches!(decode("race/a", "rl9.race/a.AAAA"), Err(TokenError::Malformed(m)) if m.contains("rl9")));
        assert!(matches!(decode("race/a", "rl1.race/a.!!"), Err(TokenError::Malformed(m)) if m.contains("base64")));
        assert!(matches!(decode("race/a", "rl1.race/a"), Err(TokenError::Malformed(_))));
        assert!(matches!(decode("race/a", ""), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn a_renamed_scenario_breaks_the_checksum() {
        let t = encode("race/a", &sample());
        let forged = t.replace("race/a", "race/b");
        assert!(matches!(decode("race/b", &forged), Err(TokenError::Malformed(m)) if m.contains("checksum")));
    }
}
