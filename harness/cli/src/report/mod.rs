//! `racelab report`: every race of the catalogue as a static site that works offline, and as
//! Markdown that GitHub renders. The index lists every variant with its verdict per engine; each
//! race gets a page with its seed passage, its invariant, and per variant either the shortest
//! counterexample (sequence diagram, timeline, world state after each step, replay command,
//! isolation spec) or what was explored to show that it holds.
//!
//! Output is deterministic: no times, no dates, the catalogue's order. Two runs write the same
//! bytes.

pub(crate) mod html;
mod markdown;

use std::path::{Path, PathBuf};

use racelab_harness::catalogue::RaceDef;
use racelab_harness::explore::Stats;
use racelab_harness::run::{Backend as RunBackend, Checked, Mode, Verdict};
use racelab_harness::scenario::Scenario;
use racelab_harness::token;

use crate::walk::{self, Walk};
use crate::{Backends, BadInput};

/// Schedules per sampling engine (random and PCT), with seed 0: enough to find the shallow races
/// here, and quick.
const SAMPLED_SCHEDULES: u64 = 1000;

/// One engine's verdict on one variant.
pub struct EngineRun {
    /// `sim exhaustive`, `sim pct`, `postgres exhaustive`, …
    pub name: String,
    pub verdict: Verdict,
    pub stats: Stats,
    pub complete: bool,
    pub reason: Option<String>,
}

/// Everything the pages say about one variant.
pub struct VariantPage<'a> {
    pub scenario: &'a Scenario,
    pub summary: String,
    /// The exhaustive search on the simulator: the verdict the page stands on.
    pub checked: Checked,
    pub engines: Vec<EngineRun>,
    /// The ops each actor issues in the first explored execution, per actor.
    pub code_path: Vec<(String, Vec<String>)>,
    /// The shortest counterexample, walked step by step.
    pub walk: Option<Walk>,
    /// The counterexample as a PostgreSQL isolation spec (database scenarios only).
    pub spec: Option<String>,
}

impl VariantPage<'_> {
    pub fn as_expected(&self) -> bool {
        self.checked.verdict == self.scenario.expected
    }
}

/// One race and its variants that have scenario files.
pub struct RacePage<'a> {
    pub race: &'a RaceDef,
    pub variants: Vec<VariantPage<'a>>,
}

impl RacePage<'_> {
    /// A file name for the race's page: its id, which the catalogue keeps to `[a-z0-9-]`.
    pub fn slug(&self) -> String {
        self.race.id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
    }

    /// The race in two sentences, from its first variant (the code as found) and what exploring
    /// it showed.
    pub fn two_sentences(&self) -> String {
        let Some(first) = self.variants.first() else { return String::new() };
        let actors = first.scenario.model.actor_names();
        let first_sentence = format!(
            "As found ({}), the code does this: {}.",
            first.scenario.variant,
            first.summary.trim_end_matches('.')
        );
        let second = match &first.checked.counterexample {
            Some(cx) => format!(
                "With {} actors ({}) running at once, the explorer breaks it in {} steps: {}.",
                actors.len(),
                actors.join(", "),
                cx.steps,
                cx.detail
            ),
            None => format!(
                "With {} actors ({}) running at once, exploring it gave `{}`.",
                actors.len(),
                actors.join(", "),
                first.checked.verdict
            ),
        };
        format!("{first_sentence} {second}")
    }
}

/// Explore every selected scenario and gather what its page shows.
pub fn gather<'a>(
    catalogue: &'a [RaceDef],
    selected: &[&'a Scenario],
    backends: &Backends,
) -> Result<Vec<RacePage<'a>>, BadInput> {
    let mut pages = Vec::new();
    for race in catalogue {
        let mut variants = Vec::new();
        for variant in &race.variants {
            let id = format!("{}/{}", race.id, variant.id);
            let Some(s) = selected.iter().find(|s| s.id == id) else { continue };
            variants.push(variant_page(s, variant.summary, backends)?);
        }
        if !variants.is_empty() {
            pages.push(RacePage { race, variants });
        }
    }
    Ok(pages)
}

fn variant_page<'a>(s: &'a Scenario, summary: &str, backends: &Backends) -> Result<VariantPage<'a>, BadInput> {
    // The scenario's own mode: exhaustive, or the sampling a file names for a model too large
    // to enumerate.
    let checked = s.model.check(&s.id, &s.mode, &s.bounds, &RunBackend::Sim);
    let mut engines = vec![engine(&format!("sim {}", s.mode.name()), &checked)];
    for mode in [
        Mode::Random { seed: 0, schedules: SAMPLED_SCHEDULES },
        Mode::Pct { seed: 0, schedules: SAMPLED_SCHEDULES, depth: 2 },
    ] {
        let c = s.model.check(&s.id, &mode, &s.bounds, &RunBackend::Sim);
        engines.push(engine(&format!("sim {}", mode.name()), &c));
    }
    if backends.cluster.is_some() {
        if let Some(b) = backends.for_scenario(s)? {
            let c = s.model.check(&s.id, &s.mode, &s.bounds, &b);
            backends.healthy(&b)?;
            engines.push(engine(&format!("{} {}", b.name(), s.mode.name()), &c));
        }
    }
    let code_path = code_path(s);
    let (walk, spec) = match &checked.counterexample {
        Some(cx) => {
            let schedule = token::decode(&s.id, &cx.token).map_err(|e| BadInput(format!("{}: {e}", s.id)))?;
            let walk = walk::walk(s.model.as_ref(), &s.bounds, &schedule)
                .map_err(|e| BadInput(format!("{}: the counterexample does not walk at step {}", s.id, e.step)))?;
            let spec = racelab_pg::export::export_spec(
                &s.id,
                s.model.as_ref(),
                &s.bounds,
                Some(&cx.token),
                env!("CARGO_PKG_VERSION"),
            )
            .ok();
            (Some(walk), spec)
        }
        None => (None, None),
    };
    Ok(VariantPage { scenario: s, summary: summary.to_string(), checked, engines, code_path, walk, spec })
}

fn engine(name: &str, c: &Checked) -> EngineRun {
    EngineRun {
        name: name.to_string(),
        verdict: c.verdict,
        stats: c.stats.clone(),
        complete: c.complete,
        reason: c.reason.clone(),
    }
}

/// The ops each actor issues in the first execution the search explores (no faults: faults come
/// last in the order of choices), in order, without repeats next to each other.
fn code_path(s: &Scenario) -> Vec<(String, Vec<String>)> {
    let actors = s.model.actor_names();
    let mut path: Vec<(String, Vec<String>)> = actors.iter().map(|a| (a.clone(), Vec::new())).collect();
    let Some(schedule) = s.model.schedules(&s.bounds, 1).into_iter().next() else { return path };
    let Ok(trace) = s.model.trace(&s.bounds, &schedule) else { return path };
    for (event, op) in &trace.steps {
        let entry = event.choice.actor_index().and_then(|i| path.get_mut(i));
        if let (Some(op), Some(entry)) = (op, entry) {
            let label = op.label();
            if entry.1.last() != Some(&label) {
                entry.1.push(label);
            }
        }
    }
    path
}

/// Write the site and the Markdown under `out`. Returns the files written.
pub fn write(out: &Path, pages: &[RacePage<'_>]) -> Result<Vec<PathBuf>, BadInput> {
    let mut files: Vec<(PathBuf, String)> = vec![
        (out.join("index.html"), html::index(pages)),
        (out.join("style.css"), html::STYLE.to_string()),
        (out.join("filter.js"), html::FILTER_JS.to_string()),
        (out.join("index.md"), markdown::index(pages)),
    ];
    for page in pages {
        files.push((out.join(format!("{}.html", page.slug())), html::race(page)));
        files.push((out.join(format!("{}.md", page.slug())), markdown::race(page)));
    }
    std::fs::create_dir_all(out).map_err(|e| BadInput(format!("--out {}: {e}", out.display())))?;
    for (path, text) in &files {
        std::fs::write(path, text).map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

/// `racelab report`: explore, write, and say where. Exit 1 when a verdict differs from its file.
pub fn run(
    catalogue: &[RaceDef],
    selected: &[&Scenario],
    backends: &Backends,
    out: &Path,
) -> Result<std::process::ExitCode, BadInput> {
    // Fail on an unusable directory before exploring anything.
    std::fs::create_dir_all(out).map_err(|e| BadInput(format!("--out {}: {e}", out.display())))?;
    let pages = gather(catalogue, selected, backends)?;
    let files = write(out, &pages)?;
    let variants: Vec<&VariantPage> = pages.iter().flat_map(|p| &p.variants).collect();
    let mismatches = variants.iter().filter(|v| !v.as_expected()).count();
    println!(
        "wrote {} files for {} races, {} variants ({} not as expected) to {}",
        files.len(),
        pages.len(),
        variants.len(),
        mismatches,
        out.display()
    );
    println!("open {}", out.join("index.html").display());
    Ok(if mismatches == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(1) })
}
