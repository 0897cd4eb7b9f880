//! Sequence diagrams of a walked schedule: one lifeline per actor and one per shared resource
//! (database, file, lock, …), one row per step. Drawn as standalone SVG for the report site and
//! the play page, and as a mermaid `sequenceDiagram` for Markdown that GitHub renders.

use std::fmt::Write;

use crate::walk::Walk;

/// Longest label drawn in full; longer ones are cut, with the full text in a tooltip.
const MAX_LABEL: usize = 56;
/// Width of one character of the diagram's monospace font, in pixels.
const CHAR_W: f64 = 7.2;

/// One thing drawn in a row.
#[derive(Clone, Debug, PartialEq)]
enum Mark {
    /// An arrow between two lifelines (a request, or a dashed answer).
    Arrow { from: usize, to: usize, label: String, dashed: bool },
    /// A note on one lifeline: a local step, a crash.
    Note { at: usize, label: String },
}

/// Participants and rows, ready to draw in either format.
struct Sequence {
    /// `(name, is an actor)`.
    participants: Vec<(String, bool)>,
    /// `(T0, marks)` per step.
    rows: Vec<(String, Vec<Mark>)>,
}

fn sequence(walk: &Walk) -> Sequence {
    let mut participants: Vec<(String, bool)> = walk.actors.iter().map(|a| (a.clone(), true)).collect();
    let lifeline = |name: &str, participants: &mut Vec<(String, bool)>| -> usize {
        match participants.iter().position(|(p, actor)| !actor && p == name) {
            Some(i) => i,
            None => {
                participants.push((name.to_string(), false));
                participants.len() - 1
            }
        }
    };
    let mut rows = Vec::with_capacity(walk.steps.len());
    for (t, step) in walk.steps.iter().enumerate() {
        let a = step.actor;
        let mut marks = Vec::with_capacity(2);
        match (&step.resource, &step.op) {
            (Some(res), Some(_)) => {
                let r = lifeline(res, &mut participants);
                // The timeline cell reads `op(args) → outcome`: the request goes out, the outcome
                // comes back.
                match step.text.split_once(" → ") {
                    Some((request, answer)) => {
                        marks.push(Mark::Arrow { from: a, to: r, label: request.to_string(), dashed: false });
                        marks.push(Mark::Arrow { from: r, to: a, label: answer.to_string(), dashed: true });
                    }
                    None => marks.push(Mark::Arrow { from: a, to: r, label: step.text.clone(), dashed: false }),
                }
            }
            (Some(res), None) => {
                let r = lifeline(res, &mut participants);
                marks.push(Mark::Arrow { from: r, to: a, label: step.text.clone(), dashed: true });
            }
            (None, _) => marks.push(Mark::Note { at: a, label: step.text.clone() }),
        }
        rows.push((format!("T{t}"), marks));
    }
    Sequence { participants, rows }
}

fn cut(label: &str) -> String {
    if label.chars().count() <= MAX_LABEL {
        label.to_string()
    } else {
        let mut s: String = label.chars().take(MAX_LABEL - 1).collect();
        s.push('…');
        s
    }
}

/// Escape text for XML content and attributes.
pub fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A standalone SVG sequence diagram; `title` names it for screen readers, and `id`, unique in
/// its page, ties the two together.
pub fn svg(walk: &Walk, id: &str, title: &str) -> String {
    let seq = sequence(walk);
    let widest = seq
        .rows
        .iter()
        .flat_map(|(_, marks)| marks)
        .map(|m| match m {
            Mark::Arrow { label, .. } | Mark::Note { label, .. } => cut(label).chars().count(),
        })
        .chain(seq.participants.iter().map(|(p, _)| cut(p).chars().count()))
        .max()
        .unwrap_or(10);
    let col = (widest as f64 * CHAR_W + 28.0).clamp(150.0, MAX_LABEL as f64 * CHAR_W + 28.0);
    let left = 44.0;
    let head = 44.0;
    let row_h = 24.0;
    let x = |i: usize| left + col * (i as f64 + 0.5);
    let mark_count: usize = seq.rows.iter().map(|(_, m)| m.len()).sum();
    let height = head + 16.0 + row_h * mark_count as f64 + 16.0;
    let width = left + col * seq.participants.len() as f64 + 8.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="sequence" role="img" aria-labelledby="{id}-title" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="ui-monospace, Menlo, Consolas, monospace" font-size="12">"##
    );
    let _ = write!(s, r#"<title id="{id}-title">{}</title>"#, xml(title));
    let _ = write!(
        s,
        r##"<defs><marker id="{id}-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#1a1a1a"/></marker></defs><rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    for (i, (name, actor)) in seq.participants.iter().enumerate() {
        let (fill, stroke, rx) = if *actor { ("#dbeafe", "#1e40af", 12) } else { ("#f3e8ff", "#6b21a8", 0) };
        let w = col - 16.0;
        let _ = write!(
            s,
            r##"<g class="participant {kind}"><rect x="{rx0:.1}" y="6" width="{w:.1}" height="28" rx="{rx}" fill="{fill}" stroke="{stroke}"/><text x="{cx:.1}" y="24" text-anchor="middle" fill="#1a1a1a">{name}</text></g>"##,
            kind = if *actor { "actor" } else { "resource" },
            rx0 = x(i) - w / 2.0,
            cx = x(i),
            name = xml(&cut(name)),
        );
        let _ = write!(
            s,
            r##"<line x1="{cx:.1}" y1="34" x2="{cx:.1}" y2="{bottom:.1}" stroke="#6b7280" stroke-dasharray="4 4"/>"##,
            cx = x(i),
            bottom = height - 8.0
        );
    }
    let mut y = head + 16.0;
    for (time, marks) in &seq.rows {
        let _ = write!(s, r##"<g class="step"><text x="6" y="{:.1}" fill="#374151">{}</text>"##, y + 4.0, xml(time));
        for mark in marks {
            match mark {
                Mark::Arrow { from, to, label, dashed } => {
                    let (x1, x2) = (x(*from), x(*to));
                    let dash = if *dashed { r#" stroke-dasharray="5 3""# } else { "" };
                    let _ = write!(
                        s,
                        r##"<line x1="{x1:.1}" y1="{y:.1}" x2="{x2:.1}" y2="{y:.1}" stroke="#1a1a1a"{dash} marker-end="url(#{id}-arrow)"/>"##
                    );
                    let (tx, anchor) = if x2 >= x1 { (x1 + 6.0, "start") } else { (x1 - 6.0, "end") };
                    let _ = write!(
                        s,
                        r##"<text x="{tx:.1}" y="{ty:.1}" text-anchor="{anchor}" fill="#1a1a1a"><title>{full}</title>{shown}</text>"##,
                        ty = y - 5.0,
                        full = xml(label),
                        shown = xml(&cut(label))
                    );
                }
                Mark::Note { at, label } => {
                    let shown = cut(label);
                    let w = shown.chars().count() as f64 * CHAR_W + 12.0;
                    let _ = write!(
                        s,
                        r##"<rect x="{rx:.1}" y="{ry:.1}" width="{w:.1}" height="20" fill="#fef9c3" stroke="#854d0e"/><text x="{cx:.1}" y="{ty:.1}" text-anchor="middle" fill="#1a1a1a"><title>{full}</title>{shown}</text>"##,
                        rx = x(*at) - w / 2.0,
                        ry = y - 14.0,
                        cx = x(*at),
                        ty = y,
                        full = xml(label),
                        shown = xml(&shown)
                    );
                }
            }
            y += row_h;
        }
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    s
}

/// Text for a mermaid message: no line breaks, and `;` and `#` written as entity codes, which
/// mermaid would otherwise read as statement ends and entity starts.
fn mermaid_text(text: &str) -> String {
    text.replace('#', "#35;").replace(';', "#59;").replace(['\n', '\r'], " ")
}

/// A mermaid `sequenceDiagram` of the same steps.
pub fn mermaid(walk: &Walk) -> String {
    let seq = sequence(walk);
    let mut s = String::from("sequenceDiagram\n");
    for (i, (name, actor)) in seq.participants.iter().enumerate() {
        let keyword = if *actor { "actor" } else { "participant" };
        let _ = writeln!(s, "    {keyword} P{i} as {}", mermaid_text(name));
    }
    for (time, marks) in &seq.rows {
        for mark in marks {
            match mark {
                Mark::Arrow { from, to, label, dashed } => {
                    let arrow = if *dashed { "-->>" } else { "->>" };
                    let _ = writeln!(s, "    P{from}{arrow}P{to}: {time} {}", mermaid_text(label));
                }
                Mark::Note { at, label } => {
                    let _ = writeln!(s, "    Note over P{at}: {time} {}", mermaid_text(label));
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walk::WalkStep;

    fn step(actor: usize, text: &str, op: Option<&str>, resource: Option<&str>) -> WalkStep {
        WalkStep {
            actor,
            kind: "step".into(),
            text: text.into(),
            op: op.map(Into::into),
            resource: resource.map(Into::into),
            waits: false,
            world: Vec::new(),
            waiting: Vec::new(),
        }
    }

    fn walk() -> Walk {
        Walk {
            actors: vec!["a <1>".into(), "b".into()],
            initial: Vec::new(),
            steps: vec![
                step(0, "update(id=1; x=2) → ok", Some("update(id=1; x=2)"), Some("database")),
                step(1, "lock(7) … waits", Some("lock(7)"), Some("advisory locks")),
                step(1, "⇐ ok", None, Some("advisory locks")),
                step(0, "✗ crash", None, None),
            ],
            enabled: Vec::new(),
            violation: None,
        }
    }

    #[test]
    fn requests_answers_and_notes_land_on_their_lifelines() {
        let seq = sequence(&walk());
        let names: Vec<&str> = seq.participants.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a <1>", "b", "database", "advisory locks"]);
        assert_eq!(seq.rows[0].1.len(), 2, "a request and its answer");
        assert_eq!(seq.rows[1].1, [Mark::Arrow { from: 1, to: 3, label: "lock(7) … waits".into(), dashed: false }]);
        assert_eq!(seq.rows[2].1, [Mark::Arrow { from: 3, to: 1, label: "⇐ ok".into(), dashed: true }]);
        assert_eq!(seq.rows[3].1, [Mark::Note { at: 0, label: "✗ crash".into() }]);
    }

    #[test]
    fn svg_escapes_text_and_mermaid_escapes_separators() {
        let svg = svg(&walk(), "x", "title & <more>");
        assert!(svg.contains("a &lt;1&gt;") && svg.contains("title &amp; &lt;more&gt;"), "{svg}");
        assert!(!svg.contains("<1>"));
        let m = mermaid(&walk());
        assert!(m.contains("P0->>P2: T0 update(id=1#59; x=2)"), "{m}");
        assert!(m.contains("P2-->>P0: T0 ok"), "{m}");
        assert!(m.contains("Note over P0: T3 ✗ crash"), "{m}");
    }

    #[test]
    fn long_labels_are_cut_with_the_full_text_kept() {
        let long = "x".repeat(MAX_LABEL + 10);
        assert_eq!(cut(&long).chars().count(), MAX_LABEL);
        assert!(cut(&long).ends_with('…'));
        assert_eq!(cut("short"), "short");
    }
}
