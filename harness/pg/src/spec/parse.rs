//! The spec grammar.
//!
//! ```text
//! spec        := setup* teardown? session+ permutation*
//! setup       := "setup" SQL
//! teardown    := "teardown" SQL
//! session     := "session" NAME setup? step+ teardown?
//! step        := "step" NAME SQL
//! permutation := "permutation" pstep+
//! pstep       := NAME ( "(" blocker ( "," blocker )* ")" )?
//! blocker     := "*" | NAME | NAME "notices" INTEGER
//! ```
//!
//! `NAME` is a plain identifier (`[A-Za-z_][A-Za-z0-9_$]*`, bytes above 0x7F
//! allowed) or a double-quoted one (`""` stands for a quote; no newlines).  A
//! keyword is never a plain identifier: quote it.  `SQL` is everything between
//! `{` and the next `}`, less the blanks right after `{` and right before `}`
//! (newlines are kept).  `#` starts a comment that runs to the end of the line.

use std::collections::{HashMap, HashSet};

use super::{Blocker, Permutation, PermutationStep, Session, Spec, SpecError, Step};

/// Parses a spec; errors name the file as `<spec>`.
pub fn parse(text: &str) -> Result<Spec, SpecError> {
    parse_named(text, "<spec>")
}

/// Parses a spec whose errors name the file `file`.
pub fn parse_named(text: &str, file: &str) -> Result<Spec, SpecError> {
    let tokens = tokenize(text, file)?;
    let mut parser = Parser { tokens, pos: 0, file, eof_line: text.split('\n').count() };
    let spec = parser.spec()?;
    check(spec, file)
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Permutation,
    Session,
    Setup,
    Step,
    Teardown,
    Notices,
    Name(String),
    Sql(String),
    Int(u32),
    Punct(char),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Permutation => "keyword \"permutation\"".into(),
            Tok::Session => "keyword \"session\"".into(),
            Tok::Setup => "keyword \"setup\"".into(),
            Tok::Step => "keyword \"step\"".into(),
            Tok::Teardown => "keyword \"teardown\"".into(),
            Tok::Notices => "keyword \"notices\"".into(),
            Tok::Name(n) => format!("name \"{n}\""),
            Tok::Sql(_) => "an SQL block".into(),
            Tok::Int(i) => format!("number {i}"),
            Tok::Punct(c) => format!("\"{c}\""),
        }
    }
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\x0c')
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

fn tokenize(text: &str, file: &str) -> Result<Vec<(Tok, usize)>, SpecError> {
    let err = |line: usize, message: String| SpecError::Parse { file: file.to_string(), line, message };
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' {
            line += 1;
            i += 1;
        } else if is_blank(b) {
            i += 1;
        } else if b == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                i += 1;
            }
        } else if b == b'"' {
            let start_line = line;
            let mut name = Vec::new();
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err(err(start_line, "unterminated quoted identifier".into())),
                    Some(b'\n') => return Err(err(line, "unexpected newline in quoted identifier".into())),
                    Some(b'"') if bytes.get(i + 1) == Some(&b'"') => {
                        name.push(b'"');
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        name.push(c);
                        i += 1;
                    }
                }
            }
            if name.is_empty() {
                return Err(err(start_line, "zero-length quoted identifier".into()));
            }
            // The input is a str and we split only at ASCII bytes, so this is UTF-8.
            out.push((Tok::Name(String::from_utf8(name).expect("utf-8")), start_line));
        } else if b == b'{' {
            let start_line = line;
            i += 1;
            while i < bytes.len() && is_blank(bytes[i]) {
                i += 1;
            }
            let start = i;
            while i < bytes.len() && bytes[i] != b'}' {
                if bytes[i] == b'\n' {
                    line += 1;
                }
                i += 1;
            }
            if i >= bytes.len() {
                return Err(err(start_line, "unterminated SQL block (no closing \"}\")".into()));
            }
            let mut end = i;
            while end > start && is_blank(bytes[end - 1]) {
                end -= 1;
            }
            out.push((Tok::Sql(text[start..end].to_string()), start_line));
            i += 1;
        } else if b.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let n = text[start..i].parse().map_err(|_| err(line, format!("number too large: {}", &text[start..i])))?;
            out.push((Tok::Int(n), line));
        } else if is_ident_start(b) {
            let start = i;
            while i < bytes.len() && is_ident_cont(bytes[i]) {
                i += 1;
            }
            let word = &text[start..i];
            let tok = match word {
                "permutation" => Tok::Permutation,
                "session" => Tok::Session,
                "setup" => Tok::Setup,
                "step" => Tok::Step,
                "teardown" => Tok::Teardown,
                "notices" => Tok::Notices,
                _ => Tok::Name(word.to_string()),
            };
            out.push((tok, line));
        } else if matches!(b, b',' | b'(' | b')' | b'*') {
            out.push((Tok::Punct(b as char), line));
            i += 1;
        } else {
            let c = text[i..].chars().next().expect("char");
            return Err(err(line, format!("unexpected character \"{c}\"")));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<(Tok, usize)>,
    pos: usize,
    file: &'a str,
    eof_line: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|(t, _)| t)
    }

    fn line(&self) -> usize {
        self.tokens.get(self.pos).map(|(_, l)| *l).unwrap_or(self.eof_line)
    }

    fn error(&self, message: String) -> SpecError {
        SpecError::Parse { file: self.file.to_string(), line: self.line(), message }
    }

    fn found(&self) -> String {
        self.peek().map(Tok::describe).unwrap_or_else(|| "end of file".into())
    }

    fn bump(&mut self) -> Option<(Tok, usize)> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn sql(&mut self, after: &str) -> Result<String, SpecError> {
        match self.peek() {
            Some(Tok::Sql(_)) => match self.bump() {
                Some((Tok::Sql(s), _)) => Ok(s),
                _ => unreachable!(),
            },
            _ => Err(self.error(format!("expected an SQL block {{ ... }} after {after}, found {}", self.found()))),
        }
    }

    fn name(&mut self, what: &str) -> Result<(String, usize), SpecError> {
        match self.peek() {
            Some(Tok::Name(_)) => match self.bump() {
                Some((Tok::Name(n), line)) => Ok((n, line)),
                _ => unreachable!(),
            },
            _ => Err(self.error(format!("expected {what}, found {}", self.found()))),
        }
    }

    fn spec(&mut self) -> Result<Spec, SpecError> {
        let mut setup = Vec::new();
        while self.peek() == Some(&Tok::Setup) {
            self.bump();
            setup.push(self.sql("\"setup\"")?);
        }
        let mut teardown = None;
        if self.peek() == Some(&Tok::Teardown) {
            self.bump();
            teardown = Some(self.sql("\"teardown\"")?);
        }
        let mut sessions = Vec::new();
        while self.peek() == Some(&Tok::Session) {
            sessions.push(self.session()?);
        }
        if sessions.is_empty() {
            return Err(self.error(format!("expected \"session\", found {}", self.found())));
        }
        let mut permutations = Vec::new();
        while self.peek() == Some(&Tok::Permutation) {
            permutations.push(self.permutation()?);
        }
        if self.peek().is_some() {
            return Err(self.error(format!("expected \"permutation\" or end of file, found {}", self.found())));
        }
        Ok(Spec { setup, teardown, sessions, permutations, warnings: Vec::new() })
    }

    fn session(&mut self) -> Result<Session, SpecError> {
        let (_, line) = self.bump().expect("session keyword");
        let (name, _) = self.name("a session name after \"session\"")?;
        let mut setup = None;
        if self.peek() == Some(&Tok::Setup) {
            self.bump();
            setup = Some(self.sql("\"setup\"")?);
        }
        let mut steps = Vec::new();
        while self.peek() == Some(&Tok::Step) {
            let (_, line) = self.bump().expect("step keyword");
            let (name, _) = self.name("a step name after \"step\"")?;
            let sql = self.sql(&format!("step \"{name}\""))?;
            steps.push(Step { name, sql, line });
        }
        if steps.is_empty() {
            return Err(self.error(format!("expected \"step\" in session \"{name}\", found {}", self.found())));
        }
        let mut teardown = None;
        if self.peek() == Some(&Tok::Teardown) {
            self.bump();
            teardown = Some(self.sql("\"teardown\"")?);
        }
        Ok(Session { name, setup, steps, teardown, line })
    }

    fn permutation(&mut self) -> Result<Permutation, SpecError> {
        let (_, line) = self.bump().expect("permutation keyword");
        let mut steps = Vec::new();
        while let Some(Tok::Name(_)) = self.peek() {
            let (name, step_line) = self.name("a step name")?;
            let mut blockers = Vec::new();
            if self.peek() == Some(&Tok::Punct('(')) {
                self.bump();
                loop {
                    blockers.push(self.blocker()?);
                    match self.bump() {
                        Some((Tok::Punct(','), _)) => continue,
                        Some((Tok::Punct(')'), _)) => break,
                        _ => {
                            self.pos -= 1;
                            return Err(self.error(format!(
                                "expected \",\" or \")\" in the markers of step \"{name}\", found {}",
                                self.found()
                            )));
                        }
                    }
                }
            }
            steps.push(PermutationStep { name, blockers, line: step_line });
        }
        if steps.is_empty() {
            return Err(self.error(format!("expected a step name after \"permutation\", found {}", self.found())));
        }
        Ok(Permutation { steps, line })
    }

    fn blocker(&mut self) -> Result<Blocker, SpecError> {
        if self.peek() == Some(&Tok::Punct('*')) {
            self.bump();
            return Ok(Blocker::Once);
        }
        let (step, _) = self.name("\"*\" or a step name as a blocking marker")?;
        if self.peek() == Some(&Tok::Notices) {
            self.bump();
            return match self.bump() {
                Some((Tok::Int(count), _)) => Ok(Blocker::Notices { step, count }),
                _ => {
                    self.pos -= 1;
                    Err(self.error(format!("expected a number after \"notices\", found {}", self.found())))
                }
            };
        }
        Ok(Blocker::OtherStep(step))
    }
}

/// The checks the tester makes before running: unique step names, known steps
/// in permutations and markers, markers naming another session's step.
fn check(mut spec: Spec, file: &str) -> Result<Spec, SpecError> {
    let err = |line: usize, message: String| SpecError::Parse { file: file.to_string(), line, message };
    let mut session_of: HashMap<&str, usize> = HashMap::new();
    let mut names = HashSet::new();
    for (i, session) in spec.sessions.iter().enumerate() {
        if !names.insert(session.name.as_str()) {
            return Err(err(session.line, format!("duplicate session name: {}", session.name)));
        }
        for step in &session.steps {
            if session_of.insert(&step.name, i).is_some() {
                return Err(err(step.line, format!("duplicate step name: {}", step.name)));
            }
        }
    }
    let mut used = HashSet::new();
    for perm in &spec.permutations {
        for pstep in &perm.steps {
            let Some(&session) = session_of.get(pstep.name.as_str()) else {
                return Err(err(pstep.line, format!("undefined step \"{}\" specified in permutation", pstep.name)));
            };
            used.insert(pstep.name.as_str());
            for blocker in &pstep.blockers {
                let other = match blocker {
                    Blocker::Once => continue,
                    Blocker::OtherStep(s) | Blocker::Notices { step: s, .. } => s,
                };
                if !perm.steps.iter().any(|p| &p.name == other) {
                    return Err(err(
                        pstep.line,
                        format!(
                            "undefined blocking step \"{other}\" referenced in permutation step \"{}\"",
                            pstep.name
                        ),
                    ));
                }
                if session_of.get(other.as_str()) == Some(&session) {
                    return Err(err(
                        pstep.line,
                        format!("permutation step \"{}\" cannot block on its own session", pstep.name),
                    ));
                }
            }
        }
    }
    if !spec.permutations.is_empty() {
        let mut unused: Vec<&str> =
            spec.all_steps().map(|(_, s)| s.name.as_str()).filter(|n| !used.contains(n)).collect();
        // The tester reports them in sorted order.
        unused.sort_unstable();
        let warnings: Vec<String> = unused.iter().map(|n| format!("unused step name: {n}")).collect();
        spec.warnings = warnings;
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perr(text: &str) -> (usize, String) {
        match parse(text) {
            Err(SpecError::Parse { line, message, .. }) => (line, message),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_full_spec() {
        let text = "# a comment\nsetup { CREATE TABLE t (k int); }\nsetup\n{\n  INSERT INTO t VALUES (1);\n}\n\
                    teardown { DROP TABLE t; }\n\
                    session s1\nsetup { BEGIN; }\nstep a { SELECT 1; }\nstep \"b c\" { SELECT 2; }\nteardown { COMMIT; }\n\
                    session \"s2\"\nstep d\t{ UPDATE t SET k = 2; }  # trailing comment\n\
                    permutation a d(a) \"b c\"(*, d notices 2)\n";
        let spec = parse(text).unwrap();
        assert_eq!(spec.setup, vec!["CREATE TABLE t (k int);".to_string(), "\n  INSERT INTO t VALUES (1);\n".into()]);
        assert_eq!(spec.teardown.as_deref(), Some("DROP TABLE t;"));
        assert_eq!(spec.sessions.len(), 2);
        let s1 = &spec.sessions[0];
        assert_eq!(
            (s1.name.as_str(), s1.setup.as_deref(), s1.teardown.as_deref()),
            ("s1", Some("BEGIN;"), Some("COMMIT;"))
        );
        assert_eq!(s1.steps[1], Step { name: "b c".into(), sql: "SELECT 2;".into(), line: 11 });
        assert_eq!(spec.sessions[1].name, "s2");
        assert_eq!(spec.sessions[1].steps[0].sql, "UPDATE t SET k = 2;");
        let p = &spec.permutations[0];
        assert_eq!(p.line, 15);
        assert_eq!(p.steps[0].blockers, vec![]);
        assert_eq!(p.steps[1].blockers, vec![Blocker::OtherStep("a".into())]);
        assert_eq!(p.steps[2].name, "b c");
        assert_eq!(p.steps[2].blockers, vec![Blocker::Once, Blocker::Notices { step: "d".into(), count: 2 }]);
        assert!(spec.warnings.is_empty());
    }

    #[test]
    fn sql_keeps_inner_newlines_and_trims_blanks_at_the_braces() {
        let spec = parse("session s step x {  \n\tSELECT 1;\n  \t}").unwrap();
        assert_eq!(spec.sessions[0].steps[0].sql, "\n\tSELECT 1;\n");
        let spec = parse("session s step x {SELECT '#';}").unwrap();
        assert_eq!(spec.sessions[0].steps[0].sql, "SELECT '#';");
    }

    #[test]
    fn quoted_names_allow_keywords_and_doubled_quotes() {
        let spec = parse("session \"setup\" step \"a\"\"b\" { SELECT 1; }\npermutation \"a\"\"b\"").unwrap();
        assert_eq!(spec.sessions[0].name, "setup");
        assert_eq!(spec.sessions[0].steps[0].name, "a\"b");
        assert_eq!(spec.permutations[0].steps[0].name, "a\"b");
    }

    #[test]
    fn all_interleavings_keep_session_order() {
        let spec = parse("session a step a1 {x} step a2 {x}\nsession b step b1 {x}").unwrap();
        let perms: Vec<Vec<String>> =
            spec.effective_permutations().map(|p| p.into_iter().map(|s| s.name).collect()).collect();
        assert_eq!(perms, vec![vec!["a1", "a2", "b1"], vec!["a1", "b1", "a2"], vec!["b1", "a1", "a2"]]);
    }

    /// The iterator yields the recursive enumeration's order and count (multinomial).
    #[test]
    fn interleavings_match_the_recursive_enumeration() {
        fn recurse(sizes: &[usize], piles: &mut Vec<usize>, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            let mut found = false;
            for i in 0..sizes.len() {
                if piles[i] < sizes[i] {
                    piles[i] += 1;
                    cur.push(i);
                    recurse(sizes, piles, cur, out);
                    cur.pop();
                    piles[i] -= 1;
                    found = true;
                }
            }
            if !found {
                out.push(cur.clone());
            }
        }
        let spec = parse(
            "session a step a1 {x} step a2 {x}\nsession b step b1 {x} step b2 {x} step b3 {x}\nsession c step c1 {x}",
        )
        .unwrap();
        let mut want = Vec::new();
        recurse(&[2, 3, 1], &mut vec![0; 3], &mut Vec::new(), &mut want);
        let names = [vec!["a1", "a2"], vec!["b1", "b2", "b3"], vec!["c1"]];
        let want: Vec<Vec<String>> = want
            .iter()
            .map(|seq| {
                let mut taken = [0; 3];
                seq.iter()
                    .map(|&i| {
                        taken[i] += 1;
                        names[i][taken[i] - 1].to_string()
                    })
                    .collect()
            })
            .collect();
        let got: Vec<Vec<String>> =
            spec.effective_permutations().map(|p| p.into_iter().map(|s| s.name).collect()).collect();
        assert_eq!(got.len(), 60);
        assert_eq!(got, want);
    }

    /// 24 steps in 8 sessions: about 10^17 interleavings; the first ones come at once.
    #[test]
    fn huge_interleaving_counts_stream() {
        let mut text = String::new();
        for s in 0..8 {
            text.push_str(&format!("session s{s} step s{s}a {{x}} step s{s}b {{x}} step s{s}c {{x}}\n"));
        }
        let spec = parse(&text).unwrap();
        let first: Vec<Vec<PermutationStep>> = spec.effective_permutations().take(1000).collect();
        assert_eq!(first.len(), 1000);
        assert!(first.iter().all(|p| p.len() == 24));
        assert_eq!(first[0][0].name, "s0a");
        assert_eq!(first[0][23].name, "s7c");
    }

    #[test]
    fn unused_steps_are_warned_about_in_sorted_order() {
        let spec = parse("session a step z {x} step y {x} step b {x}\npermutation y").unwrap();
        assert_eq!(spec.warnings, vec!["unused step name: b", "unused step name: z"]);
    }

    #[test]
    fn errors_give_the_line() {
        assert_eq!(perr("setup { x }\n\n  ?"), (3, "unexpected character \"?\"".into()));
        assert_eq!(perr("setup { x }\nteardown { y }\n"), (3, "expected \"session\", found end of file".into()));
        assert_eq!(perr("session s\nstep a\n{ x\n\n"), (3, "unterminated SQL block (no closing \"}\")".into()));
        assert_eq!(perr("session s\nstep \"a\nb\" {x}"), (2, "unexpected newline in quoted identifier".into()));
        assert_eq!(perr("session s\n\nstep a {x}\nstep a {y}"), (4, "duplicate step name: a".into()));
        assert_eq!(
            perr("session s\nstep a {x}\n\npermutation a b"),
            (4, "undefined step \"b\" specified in permutation".into())
        );
        assert_eq!(
            perr("session s step a {x} step b {x}\npermutation a(b) b"),
            (2, "permutation step \"a\" cannot block on its own session".into())
        );
        assert_eq!(
            perr("session s step a {x}\nsession t step b {x}\npermutation a(c) b"),
            (3, "undefined blocking step \"c\" referenced in permutation step \"a\"".into())
        );
        assert_eq!(
            perr("session s step a {x}\nsession t step b {x}\npermutation a(b notices) b"),
            (3, "expected a number after \"notices\", found \")\"".into())
        );
        assert_eq!(
            perr("session s step a {x}\nsession t step b {x}\npermutation a(b b"),
            (3, "expected \",\" or \")\" in the markers of step \"a\", found name \"b\"".into())
        );
        assert_eq!(
            perr("session s\nsetup {x}\nteardown {y}"),
            (3, "expected \"step\" in session \"s\", found keyword \"teardown\"".into())
        );
        assert_eq!(
            perr("session s step a {x}\nsetup {y}"),
            (2, "expected \"permutation\" or end of file, found keyword \"setup\"".into())
        );
        assert_eq!(perr("session\n{x}"), (2, "expected a session name after \"session\", found an SQL block".into()));
    }

    #[test]
    fn parse_named_names_the_file() {
        let e = parse_named("bogus", "specs/x.spec").unwrap_err();
        assert_eq!(e.to_string(), "specs/x.spec:1: expected \"session\", found name \"bogus\"");
    }
}
