//! `state-save`: the observer daemon's `save_state()` and what a restarted daemon loads.
//!
//! Seed `000_9bdcb1381353509b.txt`, "Phase 2: Atomic `save_state()`":
//!
//! > `save_state()` writes directly to file. Crash mid-write → corrupted JSON → fresh state →
//! > re-send from byte 0. Solution: Use tmp+rename pattern (same as `write_signal()`).
//! > `state.py`: Write to `.tmp` then `os.rename()`
//!
//! A daemon saves its state (a record `{v:N}`) one or more times, then keeps serving. When its
//! process crashes, or the power fails, it restarts and `load_state()` reads the state file: a
//! file that does not parse means a fresh state and a re-send from byte 0; an older state than
//! the last save that returned means a re-send of what was already sent.
//!
//! Variants:
//! - `in-place`: as found, `open(STATE, "w")` then write. **Violated** by a process crash alone:
//!   a crash between the truncation and the write leaves an empty file
//!   (`racelab explain state-save/in-place`).
//! - `tmp-rename`: the plan's fix, write `state.json.tmp`, then `os.rename()` over the state file.
//!   **Violated**: it survives a process crash, but two daemons saving at once share the one
//!   `.tmp` name; one truncates the file the other is about to rename, and the state file is
//!   left empty, no fault needed. Alone, it is still violated by a power loss: the rename may
//!   reach the disk before the data (nothing was fsynced), leaving an empty or torn state file,
//!   or not at all, leaving a state older than the save that returned. Shortest:
//!
//!   ```text
//!   | T0 | open(state.json.tmp, O_RDWR|O_CREAT|O_TRUNC) as fd0 → ok   |
//!   | T1 | write(fd0, "{v:1}", @0) → ok                               |
//!   | T2 | close(fd0) → ok                                            |
//!   | T3 | rename(state.json.tmp → state.json) → ok                   |
//!   | T4 | ⚡ power loss; on disk: state.json="{v:0}"                  |
//!   | T5 | load_state(state.json) → {v:0}      (older than saved v1)  |
//!   ```
//! - `unique-tmp-fsync-rename`: a fix of ours. `mkstemp` (a name no other saver uses), write,
//!   `fsync` the file, close, `os.replace` over the state file, `fsync` the directory, and only
//!   then return. **Holds** against a process crash at every step, a power loss in every durable
//!   state the persistence model allows, and two savers at once.
//!
//! Invariant (`state-loads`): whenever a restarted daemon loads the state, the state file parses
//! and is not older than that daemon's last save that returned; in every final state, the file
//! parses and is not older than any save that returned. Two daemons follow the same transcript,
//! so they save the same versions (1, 2, …). The scenario runs two daemons saving once each: two
//! daemons saving *several* versions at once can overwrite a newer save with an older one that
//! was slower, whatever the file protocol, which is `daemon-spawn`'s race to prevent, not this
//! one's.

use racelab_harness::catalogue::{Params, RaceDef, VariantDef};
use racelab_harness::intern;
use racelab_harness::model::{Actor, Invariant, Model, Phase, Target, View};
use racelab_harness::op::{Op, Outcome, Value};
use racelab_harness::sim::fs::FsOp;
use racelab_harness::sim::{Fs, PartId, Schema, World};

use crate::file_steps::{FileProgram, FileStep, FileStep::*};

/// The daemon's state file.
pub const STATE: &str = "state.json";
/// The plan's fixed temporary name.
pub const STATE_TMP: &str = "state.json.tmp";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    InPlace,
    TmpRename,
    UniqueTmpFsyncRename,
}

impl Variant {
    fn save_state(self) -> &'static [FileStep] {
        match self {
            // with open(STATE, "w") as f: json.dump(state, f)
            Variant::InPlace => &[OpenTrunc(STATE), WriteRecord, Close],
            // with open(STATE + ".tmp", "w") as f: json.dump(state, f)
            // os.rename(STATE + ".tmp", STATE)
            Variant::TmpRename => &[OpenTrunc(STATE_TMP), WriteRecord, Close, RenameTo(STATE)],
            // fd, tmp = tempfile.mkstemp(prefix=STATE); write; os.fsync(fd); close
            // os.replace(tmp, STATE); os.fsync(dir_fd)
            Variant::UniqueTmpFsyncRename => &[Mkstemp(STATE), WriteRecord, Fsync, Close, RenameTo(STATE), FsyncDir],
        }
    }
}

/// A state record, as `json.dump` would write it: `{v:N}`.
pub fn record(version: u32) -> &'static str {
    intern(format!("{{v:{version}}}"))
}

/// What `load_state()` makes of the file: its version, or `None` when it does not parse.
pub fn parse(content: &str) -> Option<u32> {
    content.strip_prefix("{v:")?.strip_suffix('}')?.parse().ok().filter(|_| !content.contains('\0'))
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Phase_ {
    /// Saving version `versions[k]`.
    Saving {
        k: u8,
        save: FileProgram,
    },
    /// Past its last save: serving (a step at which a power loss can still strike).
    Serving,
    /// Restarted: `load_state()` reads the file.
    Loading,
    Done,
}

/// One observer daemon.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Daemon {
    variant: Variant,
    fs: PartId<Fs>,
    /// The versions this daemon saves, in order.
    versions: Vec<u32>,
    phase: Phase_,
    /// The version of this daemon's last save that returned. Not program state: what the
    /// invariant checks the loaded state against, so it survives the restart.
    acked: Option<u32>,
    /// What `load_state()` read after a restart: `Some(None)` when the file was missing.
    loaded: Option<Option<&'static str>>,
}

impl Daemon {
    fn start_save(&self, k: u8) -> Phase_ {
        match self.versions.get(usize::from(k)) {
            Some(&v) => Phase_::Saving { k, save: FileProgram::new(self.fs, self.variant.save_state(), record(v)) },
            None => Phase_::Serving,
        }
    }
}

impl Actor for Daemon {
    fn next_op(&self) -> Option<Op> {
        match &self.phase {
            Phase_::Saving { save, .. } => save.next_op(),
            Phase_::Serving => Some(Op::local("serve")),
            Phase_::Loading => Some(self.fs.op("load_state", FsOp::Read { path: STATE })),
            Phase_::Done => None,
        }
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        match &mut self.phase {
            Phase_::Saving { k, save } => {
                save.on_outcome(outcome);
                if save.done() {
                    let k = *k;
                    if save.succeeded() {
                        self.acked = Some(self.versions[usize::from(k)]);
                    }
                    self.phase = self.start_save(k + 1);
                }
            }
            Phase_::Serving => self.phase = Phase_::Done,
            Phase_::Loading => {
                self.loaded = Some(match outcome {
                    Outcome::Value(Value::Str(content)) => Some(content),
                    _ => None,
                });
                self.phase = Phase_::Done;
            }
            Phase_::Done => panic!("a finished daemon got {outcome:?}"),
        }
    }

    /// The restarted daemon only loads its state (and would go on from there).
    fn on_crash(&self) -> Option<Daemon> {
        Some(Daemon { phase: Phase_::Loading, loaded: None, ..self.clone() })
    }
}

/// `savers` daemons (two run at once while a restart overlaps), each saving `saves` times.
pub struct StateSave {
    pub variant: Variant,
    pub savers: usize,
    pub saves: usize,
}

impl Model for StateSave {
    type Actor = Daemon;

    fn init(&self) -> (World, Vec<Daemon>) {
        let mut world = World::new(Schema::default(), self.savers);
        let mut files = Fs::new(self.savers);
        files.seed_file(STATE, record(0));
        let fs = world.add_part(files);
        let actors = (0..self.savers)
            .map(|i| {
                // Both daemons follow the same transcript, so they save the same versions.
                let versions = (1..=self.saves as u32).collect();
                let mut d =
                    Daemon { variant: self.variant, fs, versions, phase: Phase_::Done, acked: None, loaded: None };
                d.phase = d.start_save(0);
                world.os.start_process(&[i]);
                d
            })
            .collect();
        (world, actors)
    }

    fn actor_names(&self) -> Vec<String> {
        (0..self.savers).map(|i| format!("daemon {}", char::from(b'A' + i as u8))).collect()
    }

    fn invariants(&self) -> Vec<Invariant<Daemon>> {
        vec![Invariant::new("state-loads", |v: &View<'_, Daemon>| {
            let check = |who: &str, content: Option<&str>, floor: u32| -> Result<(), String> {
                match content.map(|c| (c, parse(c))) {
                    None => Err(format!("{who}: there is no state file")),
                    Some((c, None)) => Err(format!("{who}: the state file {} does not parse", show(c))),
                    Some((_, Some(version))) if version < floor => Err(format!(
                        "{who}: the state file holds version {version}, older than version {floor}, whose save returned"
                    )),
                    Some(_) => Ok(()),
                }
            };
            for (i, d) in v.actors.iter().enumerate() {
                if let Some(loaded) = d.loaded {
                    let who = format!("daemon {} loaded it after a restart", char::from(b'A' + i as u8));
                    check(&who, loaded, d.acked.unwrap_or(0))?;
                }
            }
            if v.phase == Phase::Final {
                let fs = fs_of(v);
                let content = fs.content(STATE).map(|b| intern(String::from_utf8_lossy(b)));
                check("at the end", content, v.actors.iter().filter_map(|d| d.acked).max().unwrap_or(0))?;
            }
            Ok(())
        })]
    }

    fn targets(&self) -> Vec<Target<Daemon>> {
        vec![
            Target::new("a save returned", |v: &View<'_, Daemon>| v.actors.iter().any(|d| d.acked.is_some())),
            Target::new("a restarted daemon loaded the state after a save returned", |v: &View<'_, Daemon>| {
                v.actors.iter().any(|d| d.loaded.is_some() && d.acked.is_some())
            }),
        ]
    }
}

fn fs_of<'a>(v: &View<'a, Daemon>) -> &'a Fs {
    v.world.part(v.actors[0].fs)
}

fn show(content: &str) -> String {
    racelab_harness::sim::fs::show(content.as_bytes())
}

fn build(variant: Variant, params: &Params) -> Result<StateSave, String> {
    Ok(StateSave { variant, savers: params.workers("savers", 2, 1, 3)?, saves: params.count("saves", 1, 1, 3)? })
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "state-save",
        seed: "000_9bdcb1381353509b.txt",
        passage: "Phase 2: `save_state()` writes directly to file. Crash mid-write → corrupted JSON → fresh state → \
                  re-send from byte 0. Solution: Use tmp+rename pattern. `state.py`: Write to `.tmp` then \
                  `os.rename()`",
        invariant: "After a process crash or a power loss, the state file parses and is not older than the last save \
                    that returned.",
        variants: vec![
            VariantDef {
                id: "in-place",
                summary: "as found: open the state file with O_TRUNC and write it",
                build: |p| Ok(Box::new(build(Variant::InPlace, p)?)),
            },
            VariantDef {
                id: "tmp-rename",
                summary: "the plan's fix: write state.json.tmp, then rename it over the state file",
                build: |p| Ok(Box::new(build(Variant::TmpRename, p)?)),
            },
            VariantDef {
                id: "unique-tmp-fsync-rename",
                summary: "a fix of ours: mkstemp, write, fsync, close, rename, fsync the directory, then return",
                build: |p| Ok(Box::new(build(Variant::UniqueTmpFsyncRename, p)?)),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_harness::explore::shortest::replay;
    use racelab_harness::explore::{Bounds, Choice, ChoiceKind};
    use racelab_harness::testing::{crash, steps, texts};

    fn power_loss(state: u8) -> Choice {
        Choice { actor: state, kind: ChoiceKind::PowerLoss }
    }

    #[test]
    fn records_parse_and_torn_ones_do_not() {
        assert_eq!(parse(record(12)), Some(12));
        assert_eq!(parse(""), None);
        assert_eq!(parse("{v:1"), None);
        assert_eq!(parse("\0\0\0\0\x31}"), None);
    }

    #[test]
    fn in_place_a_crash_after_the_truncation_leaves_an_empty_file() {
        let model = StateSave { variant: Variant::InPlace, savers: 1, saves: 1 };
        let bounds = Bounds { crashes: 1, ..Bounds::default() };
        let mut schedule = steps(&[0]);
        schedule.push(crash(0));
        schedule.extend(steps(&[0]));
        let r = replay(&model, &bounds, &schedule).unwrap();
        assert_eq!(texts(&r.events)[2], "load_state(state.json) → \"\"");
        assert_eq!(r.violation.unwrap().invariant, "state-loads");
    }

    #[test]
    fn tmp_rename_survives_a_crash_but_not_a_power_loss_after_the_rename() {
        let model = StateSave { variant: Variant::TmpRename, savers: 1, saves: 1 };
        let bounds = Bounds { crashes: 1, power_losses: 1, ..Bounds::default() };
        // A crash right after the rename: the new state is there.
        let mut crashed = steps(&[0, 0, 0, 0]);
        crashed.push(crash(0));
        crashed.extend(steps(&[0]));
        let r = replay(&model, &bounds, &crashed).unwrap();
        assert!(r.violation.is_none(), "{:?}", texts(&r.events));
        // A power loss after the rename: durable state 1 has the rename without the data.
        let mut lost = steps(&[0, 0, 0, 0]);
        lost.push(power_loss(1));
        lost.extend(steps(&[0]));
        let r = replay(&model, &bounds, &lost).unwrap();
        assert_eq!(r.violation.unwrap().invariant, "state-loads", "{:?}", texts(&r.events));
    }

    #[test]
    fn tmp_rename_two_savers_share_the_tmp_name() {
        let model = StateSave { variant: Variant::TmpRename, savers: 2, saves: 1 };
        let bounds = Bounds { crashes: 1, ..Bounds::default() };
        // A writes the tmp file; B opens it with O_TRUNC; A renames the now empty file and its
        // save returns; B dies before writing, and restarts to an empty state file.
        let mut schedule = steps(&[0, 0, 1, 0, 0]);
        schedule.push(crash(1));
        schedule.extend(steps(&[1]));
        let r = replay(&model, &bounds, &schedule).unwrap();
        let events = texts(&r.events);
        assert_eq!(events[6], "load_state(state.json) → \"\"", "{events:?}");
        assert_eq!(r.violation.unwrap().invariant, "state-loads");
    }
}
