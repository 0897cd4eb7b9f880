//! The report as HTML: an index and one page per race, with a local stylesheet and a few lines of
//! script for the index filter. Nothing is loaded from anywhere else.

use std::fmt::Write;

use racelab_harness::run::Verdict;

use super::{RacePage, VariantPage};
use crate::diagram::{self, xml};

pub const STYLE: &str = include_str!("style.css");
pub const FILTER_JS: &str = include_str!("filter.js");

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<link rel=\"stylesheet\" href=\"style.css\">\n</head>\n<body>\n",
        xml(title)
    )
}

fn badge(v: Verdict) -> String {
    format!("<span class=\"badge {v}\">{v}</span>")
}

fn bounds_text(p: &VariantPage) -> String {
    let b = &p.scenario.bounds;
    let preemptions = b.preemptions.map_or("unbounded".to_string(), |p| p.to_string());
    format!(
        "crashes ≤ {}, errors ≤ {}, timeouts ≤ {}, preemptions {}, depth ≤ {}, states ≤ {}",
        b.crashes, b.errors, b.timeouts, preemptions, b.max_depth, b.max_states
    )
}

pub fn index(pages: &[RacePage]) -> String {
    let mut engines: Vec<String> = Vec::new();
    for v in pages.iter().flat_map(|p| &p.variants) {
        for e in &v.engines {
            if !engines.contains(&e.name) {
                engines.push(e.name.clone());
            }
        }
    }
    let mut s = head("racelab report");
    s.push_str("<header><h1>racelab report</h1>\n<p>Every race of the catalogue, each variant as found and as fixed, explored with faults as choices. A verdict of <em>holds</em> is given only when the exploration was complete within the scenario's bounds.</p></header>\n<main>\n");
    s.push_str(
        "<form class=\"filters\" role=\"search\" onsubmit=\"return false\">\n\
         <label for=\"filter\">Filter by text</label> <input id=\"filter\" type=\"search\" placeholder=\"race, variant, seed…\">\n\
         <label for=\"verdict-filter\">Verdict</label> <select id=\"verdict-filter\"><option value=\"\">any</option><option>violated</option><option>holds</option><option>inconclusive</option></select>\n\
         <span id=\"shown\" role=\"status\" aria-live=\"polite\"></span>\n</form>\n",
    );
    s.push_str("<div class=\"scroll\"><table id=\"scenarios\">\n<caption>Races and variants</caption>\n<thead><tr><th scope=\"col\">race / variant</th><th scope=\"col\">seed</th><th scope=\"col\">expected</th>");
    for e in &engines {
        let _ = write!(s, "<th scope=\"col\">{}</th>", xml(e));
    }
    s.push_str("<th scope=\"col\">bounds</th><th scope=\"col\">states</th><th scope=\"col\">executions</th></tr></thead>\n<tbody>\n");
    for page in pages {
        for v in &page.variants {
            let sc = v.scenario;
            let _ = write!(
                s,
                "<tr data-verdict=\"{verdict}\"><th scope=\"row\"><a href=\"{slug}.html#{variant}\">{id}</a><br><small>{summary}</small></th><td>{seed}</td><td>{expected}</td>",
                verdict = v.checked.verdict,
                slug = xml(&page.slug()),
                variant = xml(&sc.variant),
                id = xml(&sc.id),
                summary = xml(&v.summary),
                seed = xml(page.race.seed),
                expected = badge(sc.expected),
            );
            for name in &engines {
                match v.engines.iter().find(|e| &e.name == name) {
                    Some(e) => {
                        let _ = write!(s, "<td>{}</td>", badge(e.verdict));
                    }
                    None => s.push_str("<td>not run</td>"),
                }
            }
            let _ = writeln!(
                s,
                "<td><small>{}</small></td><td>{}</td><td>{}</td></tr>",
                xml(&bounds_text(v)),
                v.checked.stats.states,
                v.checked.stats.executions
            );
        }
    }
    s.push_str("</tbody>\n</table></div>\n<p>The same report as Markdown: <a href=\"index.md\">index.md</a>.</p>\n</main>\n<script src=\"filter.js\"></script>\n</body>\n</html>\n");
    s
}

pub fn race(page: &RacePage) -> String {
    let r = page.race;
    let mut s = head(&format!("{}: racelab", r.id));
    let _ = write!(
        s,
        "<nav><a href=\"index.html\">← all races</a></nav>\n<header><h1>{id}</h1></header>\n<main>\n\
         <section><h2>The seed</h2><p>From <code>{seed}</code>:</p><blockquote>{passage}</blockquote>\n\
         <h2>The race in two sentences</h2><p>{two}</p>\n<h2>Invariant</h2><p>{invariant}</p>\n<h2>Variants</h2><ul>",
        id = xml(r.id),
        seed = xml(r.seed),
        passage = xml(r.passage),
        two = xml(&page.two_sentences()),
        invariant = xml(r.invariant),
    );
    for v in &page.variants {
        let _ = write!(
            s,
            "<li><a href=\"#{id}\">{id}</a> {badge}: {summary}</li>",
            id = xml(&v.scenario.variant),
            badge = badge(v.checked.verdict),
            summary = xml(&v.summary)
        );
    }
    s.push_str("</ul></section>\n");
    for v in &page.variants {
        variant(&mut s, v);
    }
    s.push_str("</main>\n</body>\n</html>\n");
    s
}

fn variant(s: &mut String, v: &VariantPage) {
    let sc = v.scenario;
    let _ = writeln!(
        s,
        "<section class=\"variant\" id=\"{variant}\" aria-labelledby=\"{variant}-h\"><h2 id=\"{variant}-h\">{variant} {badge}</h2>\n<p>{summary}</p>",
        variant = xml(&sc.variant),
        badge = badge(v.checked.verdict),
        summary = xml(&v.summary),
    );
    if !v.as_expected() {
        let _ = writeln!(
            s,
            "<p class=\"mismatch\"><strong>Not as expected:</strong> the scenario file expects {}.</p>",
            sc.expected
        );
    }
    s.push_str("<h3>Code path</h3><p>The ops each actor issues when it runs alone, in order, named as in the seed.</p><ul class=\"path\">");
    for (actor, ops) in &v.code_path {
        let ops: Vec<String> = ops.iter().map(|o| format!("<code>{}</code>", xml(o))).collect();
        let _ = write!(s, "<li><strong>{}</strong>: {}</li>", xml(actor), ops.join(" → "));
    }
    s.push_str("</ul>\n");
    match (&v.checked.counterexample, &v.walk) {
        (Some(cx), Some(walk)) => {
            let _ = writeln!(
                s,
                "<h3>Shortest counterexample ({} steps)</h3>\n<p class=\"violation\"><strong>violated: {}</strong>: {}</p>",
                cx.steps,
                xml(&cx.invariant),
                xml(&cx.detail)
            );
            let title = format!("Sequence diagram of the shortest counterexample of {}", sc.id);
            let _ = writeln!(
                s,
                "<figure><div class=\"scroll\">{}</div><figcaption>{}: one lifeline per actor (rounded) and per shared resource (square).</figcaption></figure>",
                diagram::svg(walk, &format!("seq-{}", sc.variant), &title),
                xml(&title)
            );
            s.push_str("<h3>Timeline</h3>\n");
            timeline(s, walk);
            s.push_str("<h3>World state after each step</h3>\n");
            state_table(s, walk);
            let _ =
                writeln!(s, "<h3>Replay</h3><pre><code>racelab replay {} {}</code></pre>", xml(&sc.id), xml(&cx.token));
            if let Some(spec) = &v.spec {
                let _ = writeln!(
                    s,
                    "<details><summary>The counterexample as a PostgreSQL isolation spec</summary><pre><code>{}</code></pre></details>",
                    xml(spec)
                );
            }
        }
        _ => {
            let st = &v.checked.stats;
            let _ = writeln!(
                s,
                "<h3>What was explored</h3>\n<p>{} actors; bounds: {}.</p>\n<p>{} states, {} executions, {} transitions ({} skipped by sleep sets), longest execution {} steps; complete: <strong>{}</strong>.</p>",
                sc.model.actor_names().len(),
                xml(&bounds_text(v)),
                st.states,
                st.executions,
                st.transitions,
                st.pruned,
                st.depth,
                v.checked.complete
            );
            if let Some(reason) = &v.checked.reason {
                let _ = writeln!(s, "<p>Inconclusive: {}</p>", xml(reason));
            }
        }
    }
    s.push_str("<h3>Engines</h3><div class=\"scroll\"><table><thead><tr><th scope=\"col\">engine</th><th scope=\"col\">verdict</th><th scope=\"col\">states</th><th scope=\"col\">executions</th><th scope=\"col\">complete</th><th scope=\"col\">note</th></tr></thead><tbody>");
    for e in &v.engines {
        let _ = write!(
            s,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            xml(&e.name),
            badge(e.verdict),
            e.stats.states,
            e.stats.executions,
            e.complete,
            xml(e.reason.as_deref().unwrap_or(""))
        );
    }
    s.push_str("</tbody></table></div>\n<p><small>Random and PCT sample schedules: they can find a violation but never prove that a fix holds, so on a variant that holds they say <em>inconclusive</em>.</small></p>\n</section>\n");
}

fn timeline(s: &mut String, walk: &crate::walk::Walk) {
    s.push_str("<div class=\"scroll\"><table class=\"timeline\"><thead><tr><th scope=\"col\">Time</th>");
    for a in &walk.actors {
        let _ = write!(s, "<th scope=\"col\">{}</th>", xml(a));
    }
    s.push_str("</tr></thead><tbody>");
    for (t, step) in walk.steps.iter().enumerate() {
        let _ = write!(s, "<tr><th scope=\"row\">T{t}</th>");
        for a in 0..walk.actors.len() {
            if a == step.actor {
                let _ = write!(s, "<td>{}</td>", xml(&step.text));
            } else {
                s.push_str("<td class=\"idle\">-</td>");
            }
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table></div>\n");
}

fn lines(items: &[String]) -> String {
    if items.is_empty() {
        return "<span class=\"none\">none</span>".to_string();
    }
    items.iter().map(|l| xml(l)).collect::<Vec<_>>().join("<br>")
}

fn state_table(s: &mut String, walk: &crate::walk::Walk) {
    s.push_str("<div class=\"scroll\"><table class=\"state\"><thead><tr><th scope=\"col\">Time</th><th scope=\"col\">step</th><th scope=\"col\">world after it</th><th scope=\"col\">waiting</th></tr></thead><tbody>");
    let _ = write!(
        s,
        "<tr><th scope=\"row\">start</th><td></td><td>{}</td><td>{}</td></tr>",
        lines(&walk.initial),
        lines(&[])
    );
    for (t, step) in walk.steps.iter().enumerate() {
        let _ = write!(
            s,
            "<tr><th scope=\"row\">T{t}</th><td>{}: {}</td><td>{}</td><td>{}</td></tr>",
            xml(&walk.actors[step.actor]),
            xml(&step.text),
            lines(&step.world),
            lines(&step.waiting)
        );
    }
    s.push_str("</tbody></table></div>\n");
}
