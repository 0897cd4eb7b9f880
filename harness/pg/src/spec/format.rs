//! The pieces of the isolation tester's transcript.
//!
//! Result sets are laid out as libpq's `PQprint` does with a header, aligned
//! columns and `|` between fields: each column is as wide (in bytes) as its
//! longest value or name; a column whose non-empty values all look numeric
//! (digits, `.`, `-`, `e`/`E`, spaces, ending in a digit and not starting with
//! `e`/`E`) is right-aligned, any other left-aligned; NULLs and empty strings
//! print as blanks and do not count for the numeric test; a `-` line with `+`
//! at the column breaks follows the header, and `(N rows)` and an empty line
//! close the set.  A result without columns prints nothing.

/// `Parsed test spec with N sessions`.
pub fn parsed(sessions: usize) -> String {
    format!("Parsed test spec with {sessions} sessions\n")
}

/// The blank line and `starting permutation: a b c` line opening a permutation.
pub fn starting_permutation<'a>(steps: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("\nstarting permutation:");
    for s in steps {
        out.push(' ');
        out.push_str(s);
    }
    out.push('\n');
    out
}

/// `step a: SQL` — a step that completed without waiting.
pub fn step(name: &str, sql: &str) -> String {
    format!("step {name}: {sql}\n")
}

/// `step a: SQL <waiting ...>` — a step that blocks.
pub fn step_waiting(name: &str, sql: &str) -> String {
    format!("step {name}: {sql} <waiting ...>\n")
}

/// `step a: <... completed>` — a step that had been waiting completed.
pub fn step_completed(name: &str) -> String {
    format!("step {name}: <... completed>\n")
}

/// An error result of a step: `ERROR:  message` (severity and primary
/// message only: details may contain transaction ids).
pub fn error(severity: &str, message: &str) -> String {
    format!("{severity}:  {message}\n")
}

/// A notice or warning as libpq's default notice processor text, prefixed with
/// the session name: `s1: NOTICE:  message`, then `DETAIL:`, `HINT:` and
/// `QUERY:` lines when present (no `CONTEXT:`, which libpq shows for errors only).
pub fn notice(session: &str, n: &Notice<'_>) -> String {
    let mut out = format!("{session}: {}:  {}\n", n.severity, n.message);
    for (label, value) in [("DETAIL", n.detail), ("HINT", n.hint), ("QUERY", n.internal_query)] {
        if let Some(v) = value {
            out.push_str(&format!("{label}:  {v}\n"));
        }
    }
    out
}

/// The fields of a notice that the transcript shows.
#[derive(Clone, Debug, Default)]
pub struct Notice<'a> {
    pub severity: &'a str,
    pub message: &'a str,
    pub detail: Option<&'a str>,
    pub hint: Option<&'a str>,
    pub internal_query: Option<&'a str>,
}

/// A `NOTIFY` received by `session` from `sender`.
pub fn notify(session: &str, channel: &str, payload: &str, sender: &str) -> String {
    format!("{session}: NOTIFY \"{channel}\" with payload \"{payload}\" from {sender}\n")
}

/// A result set, laid out as `PQprint` does (see the module documentation).
pub fn result_set<S: AsRef<str>>(columns: &[S], rows: &[Vec<Option<String>>]) -> String {
    if columns.is_empty() {
        return String::new();
    }
    let n = columns.len();
    let mut width: Vec<usize> = columns.iter().map(|c| c.as_ref().len()).collect();
    let mut not_numeric = vec![false; n];
    for row in rows {
        for (j, value) in row.iter().enumerate().take(n) {
            let Some(v) = value.as_deref().filter(|v| !v.is_empty()) else { continue };
            width[j] = width[j].max(v.len());
            if !not_numeric[j] && !looks_numeric(v) {
                not_numeric[j] = true;
            }
        }
    }
    let mut out = String::new();
    let cells = |out: &mut String, values: &mut dyn Iterator<Item = &str>| {
        for (j, v) in values.enumerate() {
            if j > 0 {
                out.push('|');
            }
            pad(out, v, width[j], !not_numeric[j]);
        }
        out.push('\n');
    };
    cells(&mut out, &mut columns.iter().map(|c| c.as_ref()));
    for (j, w) in width.iter().enumerate() {
        if j > 0 {
            out.push('+');
        }
        out.extend(std::iter::repeat_n('-', *w));
    }
    out.push('\n');
    for row in rows {
        cells(&mut out, &mut (0..n).map(|j| row.get(j).and_then(|v| v.as_deref()).unwrap_or("")));
    }
    let count = rows.len();
    out.push_str(&format!("({count} row{})\n\n", if count == 1 { "" } else { "s" }));
    out
}

/// `PQprint`'s test for a numeric-looking value.
fn looks_numeric(v: &str) -> bool {
    let bytes = v.as_bytes();
    let allowed = |c: u8| c.is_ascii_digit() || matches!(c, b'.' | b'E' | b'e' | b' ' | b'-');
    if !bytes.iter().all(|&c| allowed(c)) {
        return false;
    }
    let first = bytes[0];
    let last = bytes[bytes.len() - 1];
    !(first == b'E' || first == b'e') && last.is_ascii_digit()
}

/// Pads `v` to `width` bytes (as C's `%*s`), on the left when `right_align`.
fn pad(out: &mut String, v: &str, width: usize, right_align: bool) {
    let fill = width.saturating_sub(v.len());
    if right_align {
        out.extend(std::iter::repeat_n(' ', fill));
        out.push_str(v);
    } else {
        out.push_str(v);
        out.extend(std::iter::repeat_n(' ', fill));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn numbers_right_text_left() {
        let out = result_set(&["id", "data"], &[row(&[Some("1"), Some("x")])]);
        assert_eq!(out, "id|data\n--+----\n 1|x   \n(1 row)\n\n");
    }

    #[test]
    fn widths_follow_the_longest_value_and_count_rows() {
        let out = result_set(
            &["key", "val"],
            &[row(&[Some("1"), Some("insert1 updated by insert2")]), row(&[Some("10"), Some("b")])],
        );
        assert_eq!(
            out,
            "key|val                       \n\
             ---+--------------------------\n  \
               1|insert1 updated by insert2\n \
              10|b                         \n\
             (2 rows)\n\n"
        );
    }

    #[test]
    fn no_rows_still_prints_the_header() {
        assert_eq!(result_set(&["a", "bb"], &[]), "a|bb\n-+--\n(0 rows)\n\n");
    }

    #[test]
    fn nulls_and_empty_strings_are_blank_and_do_not_decide_alignment() {
        let out = result_set(&["n", "t"], &[row(&[None, Some("")]), row(&[Some("12"), None])]);
        // both columns stay numeric (right-aligned) since the only non-empty value is numeric
        assert_eq!(out, " n|t\n--+-\n  | \n12| \n(2 rows)\n\n");
    }

    #[test]
    fn numeric_test_is_pqprints() {
        assert!(looks_numeric("-1.5e10"));
        assert!(looks_numeric("1 2"));
        assert!(!looks_numeric("1."));
        assert!(!looks_numeric("e1"));
        assert!(!looks_numeric("t"));
        assert!(!looks_numeric("1,2"));
        // one non-numeric value makes the whole column left-aligned
        let out = result_set(&["v"], &[row(&[Some("1")]), row(&[Some("ab")])]);
        assert_eq!(out, "v \n--\n1 \nab\n(2 rows)\n\n");
    }

    #[test]
    fn widths_are_bytes_as_in_c() {
        let out = result_set(&["name"], &[row(&[Some("é")])]);
        assert_eq!(out, "name\n----\né  \n(1 row)\n\n");
    }

    #[test]
    fn no_columns_prints_nothing() {
        assert_eq!(result_set::<&str>(&[], &[vec![], vec![]]), "");
    }

    #[test]
    fn step_lines() {
        assert_eq!(starting_permutation(["a", "b"]), "\nstarting permutation: a b\n");
        assert_eq!(step("s1a", "SELECT 1;"), "step s1a: SELECT 1;\n");
        assert_eq!(step_waiting("s1a", "LOCK t;"), "step s1a: LOCK t; <waiting ...>\n");
        assert_eq!(step_completed("s1a"), "step s1a: <... completed>\n");
        assert_eq!(error("ERROR", "deadlock detected"), "ERROR:  deadlock detected\n");
        assert_eq!(parsed(2), "Parsed test spec with 2 sessions\n");
    }

    #[test]
    fn notices_carry_detail_and_hint() {
        let n = Notice { severity: "NOTICE", message: "hi", detail: Some("d"), hint: Some("h"), internal_query: None };
        assert_eq!(notice("s1", &n), "s1: NOTICE:  hi\nDETAIL:  d\nHINT:  h\n");
        assert_eq!(notify("s2", "c", "p", "s1"), "s2: NOTIFY \"c\" with payload \"p\" from s1\n");
    }
}
