//! Catalogue models for the reduction tests.
// Each test file uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use racelab_harness::catalogue::{DynModel, Param, Params};

/// `race/variant` built with `n` workers in parameter `param`.
pub fn with_workers(race: &str, variant: &str, param: &str, n: usize) -> Box<dyn DynModel> {
    let catalogue = racelab_models::catalogue();
    let def = catalogue.iter().find(|r| r.id == race).expect("race");
    let build = def.variants.iter().find(|v| v.id == variant).expect("variant").build;
    build(&Params::new(BTreeMap::from([(param.to_string(), Param::Int(n as i64))]))).expect("builds")
}

/// Every catalogue variant that declares a symmetry, with its default parameters, as
/// `race/variant` and the model. Groups of at most 6: the exact class key tries every renaming
/// (small-pool-at-peak's 16 hooks are sampled by PCT, not searched).
pub fn symmetric_models() -> Vec<(String, Box<dyn DynModel>)> {
    let mut out = Vec::new();
    for race in racelab_models::catalogue() {
        for variant in &race.variants {
            let Ok(model) = (variant.build)(&Params::new(BTreeMap::new())) else { continue };
            if model.symmetry().is_some_and(|s| s.groups.iter().all(|g| g.len() <= 6)) {
                out.push((format!("{}/{}", race.id, variant.id), model));
            }
        }
    }
    out
}
