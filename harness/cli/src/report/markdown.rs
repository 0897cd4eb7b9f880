//! The report as Markdown that GitHub renders: tables, and the counterexample as a mermaid
//! `sequenceDiagram`.

use std::fmt::Write;

use super::{RacePage, VariantPage};
use crate::diagram;
use crate::walk::Walk;

/// A table cell: no line breaks, and `|` escaped.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

pub fn index(pages: &[RacePage]) -> String {
    let mut s = String::from(
        "# racelab report\n\nEvery race of the catalogue, each variant as found and as fixed. `holds` is given only when \
         the exploration was complete within the scenario's bounds.\n\n\
         | race / variant | seed | expected | verdict (sim exhaustive) | other engines | states | executions |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for page in pages {
        for v in &page.variants {
            let sc = v.scenario;
            let others: Vec<String> = v.engines.iter().skip(1).map(|e| format!("{}: {}", e.name, e.verdict)).collect();
            let _ = writeln!(
                s,
                "| [{id}]({slug}.md#{variant}) | `{seed}` | {expected} | **{verdict}** | {others} | {states} | {executions} |",
                id = cell(&sc.id),
                slug = page.slug(),
                variant = sc.variant,
                seed = cell(page.race.seed),
                expected = sc.expected,
                verdict = v.checked.verdict,
                others = cell(&others.join(", ")),
                states = v.checked.stats.states,
                executions = v.checked.stats.executions,
            );
        }
    }
    s
}

pub fn race(page: &RacePage) -> String {
    let r = page.race;
    let mut s = format!(
        "# {id}\n\n[← all races](index.md)\n\n## The seed\n\nFrom `{seed}`:\n\n> {passage}\n\n## The race in two sentences\n\n{two}\n\n## Invariant\n\n{invariant}\n\n## Variants\n\n",
        id = r.id,
        seed = r.seed,
        passage = r.passage.replace('\n', "\n> "),
        two = page.two_sentences(),
        invariant = r.invariant,
    );
    for v in &page.variants {
        let _ = writeln!(s, "- [{id}](#{id}) **{}**: {}", v.checked.verdict, v.summary, id = v.scenario.variant);
    }
    for v in &page.variants {
        variant(&mut s, v);
    }
    s
}

fn variant(s: &mut String, v: &VariantPage) {
    let sc = v.scenario;
    let _ = write!(s, "\n## {}\n\n**{}**: {}\n\n", sc.variant, v.checked.verdict, v.summary);
    if !v.as_expected() {
        let _ = write!(s, "**Not as expected:** the scenario file expects {}.\n\n", sc.expected);
    }
    s.push_str("### Code path\n\n");
    for (actor, ops) in &v.code_path {
        let ops: Vec<String> = ops.iter().map(|o| format!("`{o}`")).collect();
        let _ = writeln!(s, "- **{actor}**: {}", ops.join(" → "));
    }
    s.push('\n');
    match (&v.checked.counterexample, &v.walk) {
        (Some(cx), Some(walk)) => {
            let _ = write!(
                s,
                "### Shortest counterexample ({} steps)\n\n**violated: {}**: {}\n\n```mermaid\n{}```\n\n",
                cx.steps,
                cx.invariant,
                cx.detail,
                diagram::mermaid(walk)
            );
            let _ = write!(s, "### Timeline\n\n{}\n\n", cx.timeline.render(u16::MAX));
            s.push_str("### World state after each step\n\n");
            state_table(s, walk);
            let _ = write!(s, "\n### Replay\n\n```sh\nracelab replay {} {}\n```\n", sc.id, cx.token);
            if let Some(spec) = &v.spec {
                let _ = write!(
                    s,
                    "\n<details><summary>The counterexample as a PostgreSQL isolation spec</summary>\n\n```text\n{}```\n\n</details>\n",
                    spec
                );
            }
        }
        _ => {
            let st = &v.checked.stats;
            let b = &sc.bounds;
            let _ = write!(
                s,
                "### What was explored\n\n{} actors; crashes ≤ {}, errors ≤ {}, timeouts ≤ {}, depth ≤ {}, states ≤ {}.\n\n\
                 {} states, {} executions, {} transitions ({} skipped by sleep sets), longest execution {} steps; complete: **{}**.\n",
                sc.model.actor_names().len(),
                b.crashes,
                b.errors,
                b.timeouts,
                b.max_depth,
                b.max_states,
                st.states,
                st.executions,
                st.transitions,
                st.pruned,
                st.depth,
                v.checked.complete
            );
            if let Some(reason) = &v.checked.reason {
                let _ = writeln!(s, "\nInconclusive: {reason}");
            }
        }
    }
    s.push_str("\n### Engines\n\n| engine | verdict | states | executions | complete |\n|---|---|---|---|---|\n");
    for e in &v.engines {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            e.name, e.verdict, e.stats.states, e.stats.executions, e.complete
        );
    }
}

fn state_table(s: &mut String, walk: &Walk) {
    s.push_str("| Time | step | world after it | waiting |\n|---|---|---|---|\n");
    let join = |items: &[String]| if items.is_empty() { "none".to_string() } else { cell(&items.join("; ")) };
    let _ = writeln!(s, "| start | | {} | none |", join(&walk.initial));
    for (t, step) in walk.steps.iter().enumerate() {
        let _ = writeln!(
            s,
            "| T{t} | {}: {} | {} | {} |",
            cell(&walk.actors[step.actor]),
            cell(&step.text),
            join(&step.world),
            join(&step.waiting)
        );
    }
}
