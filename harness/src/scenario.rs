//! Scenario files: one TOML file per scenario under `scenarios/`, naming a catalogue variant,
//! its parameters, its exploration bounds and the verdict that exploring it gave.
//!
//! ```toml
//! id = "summary-upsert/check-then-insert"
//! description = "find by tag, then insert if missing"
//! expected = "violated"
//! [params]
//! requests = 2
//! [bounds]
//! crashes = 0
//! errors = 0
//! timeouts = 0
//! lost_replies = 0
//! max_depth = 200
//! max_states = 2000000
//! [turmoil]
//! seeds = 50
//! ```
//!
//! `[turmoil]` is optional: how many seeds `--engine turmoil` samples for a race that has a
//! turmoil version.
//!
//! A scenario too large to enumerate names a sampling mode; `check` uses it unless `--mode` is
//! given, and such a scenario can only ever be `violated` or `inconclusive`:
//!
//! ```toml
//! [explore]
//! mode = "pct"
//! seed = 0
//! schedules = 500
//! depth = 2
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::catalogue::{Build, DynModel, Param, Params, RaceDef};
use crate::explore::Bounds;
use crate::run::{Mode, Verdict};

/// Most scenario files one directory may hold; a guard against pointing at the wrong tree.
const MAX_FILES: usize = 1000;

/// A loaded scenario, ready to explore.
pub struct Scenario {
    pub id: String,
    pub race: String,
    pub variant: String,
    pub description: String,
    pub expected: Verdict,
    pub bounds: Bounds,
    /// How to explore it: exhaustive unless the file's `[explore]` table says otherwise.
    pub mode: Mode,
    pub path: PathBuf,
    pub model: Box<dyn DynModel>,
    /// The file's parameters and the variant's constructor: for engines that build the race
    /// themselves (turmoil), and to build the model again with other workers (`racelab stress`).
    pub params: BTreeMap<String, Param>,
    pub build: Build,
    /// Seeds for `--engine turmoil`, from `[turmoil] seeds`.
    pub turmoil_seeds: Option<u64>,
}

impl Scenario {
    /// The model with its worker count (see [`Params::workers`]) set to `n`, and the name of
    /// that parameter; the name is `None` for a model without one (its count is unchanged).
    pub fn with_workers(&self, n: usize) -> Result<(Box<dyn DynModel>, Option<String>), String> {
        let params = Params::new(self.params.clone()).with_workers(n);
        let model = (self.build)(&params)?;
        Ok((model, params.workers_param()))
    }
}

/// A scenario file that cannot be used, with where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ScenarioError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    id: Spanned<String>,
    description: String,
    expected: Verdict,
    #[serde(default)]
    params: BTreeMap<String, Spanned<toml::Value>>,
    bounds: Option<Spanned<RawBounds>>,
    turmoil: Option<Spanned<RawTurmoil>>,
    explore: Option<Spanned<RawExplore>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum RawMode {
    Exhaustive,
    Random,
    Pct,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExplore {
    mode: RawMode,
    #[serde(default)]
    seed: u64,
    schedules: Option<u64>,
    depth: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTurmoil {
    seeds: u64,
}

/// Most seeds a scenario may ask turmoil for.
pub const MAX_TURMOIL_SEEDS: u64 = 100_000;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBounds {
    #[serde(default)]
    crashes: u8,
    #[serde(default)]
    errors: u8,
    #[serde(default)]
    timeouts: u8,
    #[serde(default)]
    lost_replies: u8,
    #[serde(default)]
    power_losses: u8,
    preemptions: Option<u8>,
    max_depth: Option<u32>,
    max_states: Option<u64>,
}

/// Parse one scenario file and build its model from `catalogue`.
pub fn parse(path: &Path, text: &str, catalogue: &[RaceDef]) -> Result<Scenario, ScenarioError> {
    let err = |span: Option<std::ops::Range<usize>>, message: String| ScenarioError {
        path: path.to_path_buf(),
        line: span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1),
        message,
    };
    let raw: RawScenario = toml::from_str(text).map_err(|e| err(e.span(), e.message().to_string()))?;
    let id = raw.id.get_ref().clone();
    let id_span = Some(raw.id.span());
    let (race_id, variant_id) =
        id.split_once('/').ok_or_else(|| err(id_span.clone(), format!("id `{id}` is not of the form race/variant")))?;
    let race = catalogue.iter().find(|r| r.id == race_id).ok_or_else(|| {
        let known: Vec<&str> = catalogue.iter().map(|r| r.id).collect();
        err(id_span.clone(), format!("unknown race `{race_id}` (known: {})", known.join(", ")))
    })?;
    let variant = race.variants.iter().find(|v| v.id == variant_id).ok_or_else(|| {
        let known: Vec<&str> = race.variants.iter().map(|v| v.id).collect();
        err(id_span.clone(), format!("race `{race_id}` has no variant `{variant_id}` (known: {})", known.join(", ")))
    })?;

    let bounds_span = raw.bounds.as_ref().map(|b| b.span()).or(id_span.clone());
    let b = raw.bounds.map(Spanned::into_inner).unwrap_or_default();
    let bounds = Bounds {
        crashes: b.crashes,
        errors: b.errors,
        timeouts: b.timeouts,
        lost_replies: b.lost_replies,
        power_losses: b.power_losses,
        preemptions: b.preemptions,
        max_depth: b.max_depth.unwrap_or(Bounds::default().max_depth),
        max_states: b.max_states.unwrap_or(Bounds::default().max_states),
    };
    if bounds.crashes > 3
        || bounds.errors > 3
        || bounds.timeouts > 3
        || bounds.lost_replies > 3
        || bounds.power_losses > 3
    {
        return Err(err(bounds_span, "fault budgets are at most 3 each".into()));
    }
    if !(1..=10_000).contains(&bounds.max_depth) || !(1..=100_000_000).contains(&bounds.max_states) {
        return Err(err(bounds_span, "max_depth must be 1..=10000 and max_states 1..=100000000".into()));
    }

    let explore_span = raw.explore.as_ref().map(|e| e.span());
    let mode = match raw.explore.map(Spanned::into_inner) {
        None | Some(RawExplore { mode: RawMode::Exhaustive, schedules: None, depth: None, .. }) => Mode::Exhaustive,
        Some(RawExplore { mode: RawMode::Exhaustive, .. }) => {
            return Err(err(explore_span, "an exhaustive exploration takes no `schedules` or `depth`".into()))
        }
        Some(RawExplore { mode: RawMode::Random, seed, schedules, depth: None }) => {
            Mode::Random { seed, schedules: schedules.unwrap_or(1000) }
        }
        Some(RawExplore { mode: RawMode::Random, .. }) => {
            return Err(err(explore_span, "a random exploration takes no `depth`".into()))
        }
        Some(RawExplore { mode: RawMode::Pct, seed, schedules, depth }) => {
            Mode::Pct { seed, schedules: schedules.unwrap_or(1000), depth: depth.unwrap_or(2) }
        }
    };
    match mode {
        Mode::Random { schedules, .. } | Mode::Pct { schedules, .. } if !(1..=10_000_000).contains(&schedules) => {
            return Err(err(explore_span, "`schedules` must be 1..=10000000".into()));
        }
        Mode::Pct { depth, .. } if !(1..=10).contains(&depth) => {
            return Err(err(explore_span, "`depth` must be 1..=10".into()));
        }
        _ => {}
    }

    let mut values = BTreeMap::new();
    for (name, value) in &raw.params {
        let param = match value.get_ref() {
            toml::Value::Integer(i) => Param::Int(*i),
            toml::Value::Boolean(b) => Param::Bool(*b),
            _ => {
                return Err(err(Some(value.span()), format!("parameter `{name}` must be a whole number or a boolean")))
            }
        };
        values.insert(name.clone(), param);
    }
    let turmoil_seeds = match raw.turmoil {
        Some(t) if !(1..=MAX_TURMOIL_SEEDS).contains(&t.get_ref().seeds) => {
            return Err(err(Some(t.span()), format!("turmoil seeds must be 1..={MAX_TURMOIL_SEEDS}")))
        }
        Some(t) => Some(t.into_inner().seeds),
        None => None,
    };
    let params = Params::new(values.clone());
    let line_of = |name: &str| raw.params.get(name).map(|v| v.span());
    let model = (variant.build)(&params).map_err(|message| {
        let span = raw.params.keys().find(|k| message.contains(&format!("`{k}`"))).and_then(|k| line_of(k));
        err(span.or(id_span.clone()), message)
    })?;
    if let Some(name) = params.unread().first() {
        return Err(err(line_of(name), format!("`{id}` takes no parameter `{name}`")));
    }
    Ok(Scenario {
        id: id.clone(),
        race: race_id.to_string(),
        variant: variant_id.to_string(),
        description: raw.description,
        expected: raw.expected,
        bounds,
        mode,
        path: path.to_path_buf(),
        model,
        params: values,
        turmoil_seeds,
        build: variant.build,
    })
}

/// Load every `*.toml` below `dir`, in path order. Duplicate ids are an error.
pub fn load_dir(dir: &Path, catalogue: &[RaceDef]) -> Result<Vec<Scenario>, ScenarioError> {
    let mut files = Vec::new();
    collect(dir, &mut files, 0)?;
    files.sort();
    let mut scenarios: Vec<Scenario> = Vec::with_capacity(files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| ScenarioError {
            path: path.clone(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        let scenario = parse(&path, &text, catalogue)?;
        if let Some(other) = scenarios.iter().find(|s| s.id == scenario.id) {
            return Err(ScenarioError {
                path,
                line: None,
                message: format!("id `{}` is already used by {}", scenario.id, other.path.display()),
            });
        }
        scenarios.push(scenario);
    }
    Ok(scenarios)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<(), ScenarioError> {
    let fail = |message: String| ScenarioError { path: dir.to_path_buf(), line: None, message };
    if depth > 8 {
        return Err(fail("scenario directories nest deeper than 8 levels".into()));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| fail(format!("cannot read scenario directory: {e}")))?;
    for entry in entries {
        let path = entry.map_err(|e| fail(e.to_string()))?.path();
        if path.is_dir() {
            collect(&path, out, depth + 1)?;
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
        if out.len() > MAX_FILES {
            return Err(fail(format!("more than {MAX_FILES} scenario files")));
        }
    }
    Ok(())
}
