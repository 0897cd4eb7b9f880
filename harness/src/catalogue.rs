//! How a race registers itself: its id, its seed passage, its invariant and its variants, each
//! with a constructor from scenario parameters.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use crate::explore::shortest::NotEnabled;
use crate::explore::{Bounds, Choice, Exploration};
use crate::model::Model;
use crate::run::{Backend, Checked, Mode, Options, Replay, ShareOutcome};

/// A parameter value from a scenario file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    Int(i64),
    Bool(bool),
}

/// A scenario's `[params]` table. Models read what they know; anything left unread is an error,
/// so a typo never silently falls back to a default.
#[derive(Debug, Default)]
pub struct Params {
    values: BTreeMap<String, Param>,
    read: RefCell<BTreeSet<String>>,
    /// Replaces the value of the parameter a model reads with [`Params::workers`].
    workers: Option<usize>,
    /// The name of that parameter, once a model has read it.
    workers_param: RefCell<Option<String>>,
}

impl Params {
    pub fn new(values: BTreeMap<String, Param>) -> Params {
        Params { values, read: RefCell::default(), workers: None, workers_param: RefCell::default() }
    }

    /// The same parameters with the model's worker count (the parameter it reads with
    /// [`Params::workers`]) replaced by `n`, clamped to what the model allows: `racelab stress`
    /// runs as many concurrent actors as it has clients.
    pub fn with_workers(mut self, n: usize) -> Params {
        self.workers = Some(n);
        self
    }

    /// [`Params::count`] for the parameter that says how many concurrent workers (requests,
    /// hooks, clients) race: [`Params::with_workers`] overrides it, within `min..=max`.
    pub fn workers(&self, name: &str, default: usize, min: usize, max: usize) -> Result<usize, String> {
        *self.workers_param.borrow_mut() = Some(name.to_string());
        let count = self.count(name, default, min, max)?;
        Ok(self.workers.map_or(count, |n| n.clamp(min, max)))
    }

    /// The parameter a model read with [`Params::workers`], if any.
    pub fn workers_param(&self) -> Option<String> {
        self.workers_param.borrow().clone()
    }

    /// A whole number in `min..=max`, or `default` when absent.
    pub fn int(&self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, String> {
        self.read.borrow_mut().insert(name.to_string());
        match self.values.get(name) {
            None => Ok(default),
            Some(Param::Int(v)) if (min..=max).contains(v) => Ok(*v),
            Some(Param::Int(v)) => Err(format!("parameter `{name}` is {v}, outside {min}..={max}")),
            Some(Param::Bool(_)) => Err(format!("parameter `{name}` must be a whole number")),
        }
    }

    /// `int` for counts.
    pub fn count(&self, name: &str, default: usize, min: usize, max: usize) -> Result<usize, String> {
        self.int(name, default as i64, min as i64, max as i64).map(|v| v as usize)
    }

    pub fn bool(&self, name: &str, default: bool) -> Result<bool, String> {
        self.read.borrow_mut().insert(name.to_string());
        match self.values.get(name) {
            None => Ok(default),
            Some(Param::Bool(b)) => Ok(*b),
            Some(Param::Int(_)) => Err(format!("parameter `{name}` must be true or false")),
        }
    }

    /// Names that no model read: misspellings, or parameters of another variant.
    pub fn unread(&self) -> Vec<String> {
        let read = self.read.borrow();
        self.values.keys().filter(|k| !read.contains(*k)).cloned().collect()
    }
}

/// A model with its actor type erased, so that the catalogue can hold every race in one list.
/// The engine adds its methods through the blanket impl.
pub trait DynModel: Send + Sync {
    fn actor_names(&self) -> Vec<String>;
    /// Explore and decide a verdict; see [`crate::run::check`].
    fn check(&self, id: &str, mode: &Mode, bounds: &Bounds, backend: &Backend) -> Checked;
    /// [`DynModel::check`] within a budget, as one share, or on several threads; see
    /// [`crate::run::check_with`].
    fn check_with(&self, id: &str, mode: &Mode, bounds: &Bounds, backend: &Backend, options: &Options) -> Checked;
    /// Combine the shares of a sharded search into one verdict; see [`crate::run::merge`].
    fn merge(&self, id: &str, bounds: &Bounds, shares: Vec<ShareOutcome>) -> Checked;
    /// Replay a schedule exactly; see [`crate::run::replay`].
    fn replay(&self, bounds: &Bounds, schedule: &[Choice], backend: &Backend) -> Result<Replay, NotEnabled>;
    /// Schema, sessions and text columns, for a real server; `None` when it opens no connection.
    fn database_shape(&self, bounds: &Bounds) -> Option<crate::shape::DatabaseShape>;
    /// Can the model run on the real operating system: does its world hold files, or processes
    /// and no database?
    fn runs_on_real_os(&self) -> bool;
    /// Every execution the exhaustive search reaches on the simulator, as schedules, up to `limit`.
    fn schedules(&self, bounds: &Bounds, limit: usize) -> Vec<Vec<Choice>>;
    /// The raw exhaustive search, without minimising: for benchmarks.
    fn explore_exhaustive(&self, bounds: &Bounds, sleep_sets: bool) -> Exploration;
    /// The raw random or PCT exploration on the simulator, without minimising: for benchmarks.
    fn explore_sampled(&self, bounds: &Bounds, mode: &Mode) -> Exploration;
    /// The raw exhaustive search as `search` configures it: for benchmarks.
    fn explore_exhaustive_with(&self, bounds: &Bounds, search: &crate::explore::exhaustive::Exhaustive) -> Exploration;
    /// The parallel search on `threads` threads within a budget: for the scale benchmark.
    fn explore_parallel(
        &self,
        bounds: &Bounds,
        threads: usize,
        budget: &crate::explore::Budget,
        symmetry: bool,
    ) -> Exploration;
    /// Replay a schedule on the simulator, properties unchecked: the seed rows and the op each
    /// choice issued, with its outcome; see [`crate::explore::shortest::trace`].
    fn trace(&self, bounds: &Bounds, schedule: &[Choice]) -> Result<crate::explore::shortest::Trace, NotEnabled>;
    /// Run the actors freely and concurrently on `db`, round after round; see [`crate::stress`].
    fn stress(
        &self,
        db: std::sync::Arc<dyn crate::stress::FreeDb>,
        options: &crate::stress::StressOptions,
    ) -> crate::stress::StressReport;
    /// The initial state with its properties, erased, for other exploration engines.
    fn machine(&self, bounds: &Bounds) -> Box<dyn crate::explore::machine::Machine>;
    /// Greedily shorten a schedule that violates `invariant`, keeping only replays that still
    /// violate it; see [`crate::explore::shortest::shrink`].
    fn shrink(&self, bounds: &Bounds, invariant: &str, schedule: &[Choice]) -> Vec<Choice>;
    /// The exhaustive search without symmetry reduction, with the fingerprint of every final
    /// state it reached.
    fn final_states(&self, bounds: &Bounds) -> (Exploration, BTreeSet<u128>);
    /// The model's declared symmetry ([`Model::symmetry`]).
    fn symmetry(&self) -> Option<crate::symmetry::Symmetry>;
    /// The exhaustive search with symmetry reduction on or off, with the class of every final
    /// state it reached: for checking the reduction against the plain search.
    fn final_classes(&self, bounds: &Bounds, symmetry: bool, sleep_sets: bool) -> (Exploration, BTreeSet<u128>);
    /// The DPOR search, with its final states and traces; see [`crate::explore::dpor`].
    fn explore_dpor(
        &self,
        bounds: &Bounds,
        dpor: &crate::explore::dpor::Dpor,
    ) -> (Exploration, crate::explore::dpor::DporReport);
    /// Every execution up to `cap`, grouped into traces; see [`crate::explore::dpor::count_traces`].
    fn count_traces(&self, bounds: &Bounds, cap: u64) -> crate::explore::dpor::TraceCount;
    /// Do choices whose footprints do not conflict commute, within `max_states` states? See
    /// [`crate::explore::dpor::check_independence`].
    fn check_independence(&self, bounds: &Bounds, max_states: usize) -> Result<u64, String>;
}

impl<M: Model> DynModel for M {
    fn actor_names(&self) -> Vec<String> {
        Model::actor_names(self)
    }
    fn check(&self, id: &str, mode: &Mode, bounds: &Bounds, backend: &Backend) -> Checked {
        crate::run::check(id, self, mode, bounds, backend)
    }
    fn check_with(&self, id: &str, mode: &Mode, bounds: &Bounds, backend: &Backend, options: &Options) -> Checked {
        crate::run::check_with(id, self, mode, bounds, backend, options)
    }
    fn merge(&self, id: &str, bounds: &Bounds, shares: Vec<ShareOutcome>) -> Checked {
        crate::run::merge(id, self, bounds, shares, std::time::Instant::now())
    }
    fn replay(&self, bounds: &Bounds, schedule: &[Choice], backend: &Backend) -> Result<Replay, NotEnabled> {
        crate::run::replay(self, bounds, schedule, backend)
    }
    fn database_shape(&self, bounds: &Bounds) -> Option<crate::shape::DatabaseShape> {
        crate::shape::database_shape(self, bounds)
    }
    fn runs_on_real_os(&self) -> bool {
        let world = self.init().0;
        world.has_files() || (world.os.has_processes() && world.connections() == 0)
    }
    fn schedules(&self, bounds: &Bounds, limit: usize) -> Vec<Vec<Choice>> {
        crate::explore::shortest::all_schedules(self, bounds, limit)
    }
    fn explore_exhaustive(&self, bounds: &Bounds, sleep_sets: bool) -> Exploration {
        crate::explore::Explorer::explore(
            &mut crate::explore::exhaustive::Exhaustive { sleep_sets, ..Default::default() },
            self,
            bounds,
        )
    }
    fn explore_sampled(&self, bounds: &Bounds, mode: &Mode) -> Exploration {
        crate::run::explore_sampled(self, bounds, mode)
    }
    fn explore_exhaustive_with(&self, bounds: &Bounds, search: &crate::explore::exhaustive::Exhaustive) -> Exploration {
        crate::explore::Explorer::explore(&mut search.clone(), self, bounds)
    }
    fn explore_parallel(
        &self,
        bounds: &Bounds,
        threads: usize,
        budget: &crate::explore::Budget,
        symmetry: bool,
    ) -> Exploration {
        crate::explore::parallel::explore(self, bounds, threads, budget, symmetry)
    }
    fn trace(&self, bounds: &Bounds, schedule: &[Choice]) -> Result<crate::explore::shortest::Trace, NotEnabled> {
        crate::explore::shortest::trace(self, bounds, schedule)
    }
    fn stress(
        &self,
        db: std::sync::Arc<dyn crate::stress::FreeDb>,
        options: &crate::stress::StressOptions,
    ) -> crate::stress::StressReport {
        crate::stress::stress(self, db, options)
    }
    fn machine(&self, bounds: &Bounds) -> Box<dyn crate::explore::machine::Machine> {
        crate::explore::machine::machine(self, bounds)
    }
    fn shrink(&self, bounds: &Bounds, invariant: &str, schedule: &[Choice]) -> Vec<Choice> {
        crate::explore::shortest::shrink(self, bounds, invariant, schedule, None)
    }
    fn final_states(&self, bounds: &Bounds) -> (Exploration, BTreeSet<u128>) {
        // Every concrete final state, as another engine reaches them: no symmetry reduction.
        let search = crate::explore::exhaustive::Exhaustive { symmetry: false, ..Default::default() };
        search.final_states(self, bounds)
    }
    fn symmetry(&self) -> Option<crate::symmetry::Symmetry> {
        Model::symmetry(self)
    }
    fn final_classes(&self, bounds: &Bounds, symmetry: bool, sleep_sets: bool) -> (Exploration, BTreeSet<u128>) {
        let search = crate::explore::exhaustive::Exhaustive { symmetry, sleep_sets, ..Default::default() };
        search.final_classes(self, bounds)
    }
    fn explore_dpor(
        &self,
        bounds: &Bounds,
        dpor: &crate::explore::dpor::Dpor,
    ) -> (Exploration, crate::explore::dpor::DporReport) {
        dpor.run(self, bounds)
    }
    fn count_traces(&self, bounds: &Bounds, cap: u64) -> crate::explore::dpor::TraceCount {
        crate::explore::dpor::count_traces(self, bounds, cap)
    }
    fn check_independence(&self, bounds: &Bounds, max_states: usize) -> Result<u64, String> {
        crate::explore::dpor::check_independence(self, bounds, max_states)
    }
}

/// Builds a variant's model from parameters.
pub type Build = fn(&Params) -> Result<Box<dyn DynModel>, String>;

/// One variant of a race: the code as found, a seed's fix, or a fix of ours.
pub struct VariantDef {
    /// Named after its mechanism (`select-for-update`), never after its verdict.
    pub id: &'static str,
    /// One line on what this variant does differently.
    pub summary: &'static str,
    pub build: Build,
}

/// One race of the catalogue.
pub struct RaceDef {
    pub id: &'static str,
    /// The seed file's name, e.g. `000_9bdcb1381353509b.txt`.
    pub seed: &'static str,
    /// The passage of the seed the race comes from, quoted briefly.
    pub passage: &'static str,
    /// The invariant in one sentence.
    pub invariant: &'static str,
    pub variants: Vec<VariantDef>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_override_the_worker_parameter_within_its_range() {
        let values = BTreeMap::from([("requests".to_string(), Param::Int(3))]);
        let plain = Params::new(values.clone());
        assert_eq!(plain.workers("requests", 2, 2, 32), Ok(3));
        assert_eq!(plain.workers_param().as_deref(), Some("requests"));
        assert!(plain.unread().is_empty());
        assert_eq!(Params::new(values.clone()).with_workers(64).workers("requests", 2, 2, 32), Ok(32));
        assert_eq!(Params::new(values.clone()).with_workers(1).workers("requests", 2, 2, 32), Ok(2));
        // A bad value in the file is still an error, override or not.
        let bad = BTreeMap::from([("requests".to_string(), Param::Int(99))]);
        assert!(Params::new(bad).with_workers(8).workers("requests", 2, 2, 32).is_err());
        // Other parameters are untouched.
        let other = Params::new(BTreeMap::new()).with_workers(8);
        assert_eq!(other.count("seats", 1, 1, 8), Ok(1));
        assert_eq!(other.workers_param(), None);
    }
}
