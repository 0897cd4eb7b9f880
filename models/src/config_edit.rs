//! `config-edit`: the config editor's read-modify-write of its config file.
//!
//! Seed `004_a5c38daeb850dd15.txt`, "Key Decisions" 6 and Phase 2:
//!
//! > **`fcntl.flock()` for config** -- Config editing is a file operation that may not have a DB
//! > session available. File-level locking is the appropriate mechanism.
//! > Config editor: `fcntl.flock()` around read-modify-write
//!
//! Each editor reads the config, adds its own setting and writes the whole file back. The config
//! starts with one setting, `x`; editor `i` adds the letter `a + i`.
//!
//! Variants:
//! - `unlocked`: as found. **Violated** with no fault: two editors read the same config and the
//!   second write drops the first editor's setting (`racelab explain config-edit/unlocked`).
//! - `flock`: the plan's fix, a blocking `flock` on `config.lock` (a file that is never replaced,
//!   so every editor locks the same inode) around read, modify and write. **Holds** against
//!   concurrent editors. Each editor opens the lock file itself, so two editors of one process
//!   exclude each other as well: `flock` belongs to the open file description.
//!   Not explored in its scenario: a crash between the truncation and the write empties the
//!   config, and so loses every earlier edit; the lock does not help with that (see the test
//!   `flock_does_not_survive_a_crash_mid_write`), a temporary file renamed into place would.
//!
//! Invariant (`no-lost-edit`): in every final state the config holds the initial setting and the
//! setting of every editor whose edit returned.

use racelab_harness::catalogue::{Params, RaceDef, VariantDef};
use racelab_harness::intern;
use racelab_harness::model::{Actor, Invariant, Model, Target, View};
use racelab_harness::op::{Op, Outcome};
use racelab_harness::sim::{Fs, PartId, Schema, World};

use crate::file_steps::{FileProgram, FileStep, FileStep::*};

pub const CONFIG: &str = "config.yaml";
pub const CONFIG_LOCK: &str = "config.lock";
/// The setting the config starts with.
pub const INITIAL: &str = "x";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    Unlocked,
    Flock,
}

impl Variant {
    fn edit(self) -> &'static [FileStep] {
        match self {
            // cfg = open(CONFIG).read(); cfg += setting; open(CONFIG, "w").write(cfg)
            Variant::Unlocked => &[Read(CONFIG), OpenTrunc(CONFIG), WriteRecord, Close],
            // with open(LOCK, "a") as l: fcntl.flock(l, LOCK_EX); …the same…
            Variant::Flock => &[Lock(CONFIG_LOCK), Read(CONFIG), OpenTrunc(CONFIG), WriteRecord, Close, Unlock],
        }
    }
}

/// Editor `i`'s setting.
pub fn setting(i: usize) -> char {
    char::from(b'a' + i as u8)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Editor {
    setting: char,
    program: FileProgram,
    /// The edit returned (ghost state for the invariant).
    returned: bool,
    program_fs: PartId<Fs>,
}

impl Actor for Editor {
    fn next_op(&self) -> Option<Op> {
        if self.returned {
            return None;
        }
        self.program.next_op()
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        let reading = self.program.read.is_none();
        self.program.on_outcome(outcome);
        if let (true, Some(read)) = (reading, self.program.read) {
            // Modify: the content to write is what was read plus this editor's setting.
            self.program.record = intern(format!("{read}{}", self.setting));
        }
        if self.program.done() {
            self.returned = self.program.succeeded();
            if !self.returned {
                // A failed edit ends the editor too; `returned` only records success.
                self.program = FileProgram::new(self.fs(), &[], "");
            }
        }
    }
}

impl Editor {
    fn fs(&self) -> PartId<Fs> {
        self.program_fs
    }
}

pub struct ConfigEdit {
    pub variant: Variant,
    pub editors: usize,
}

impl Model for ConfigEdit {
    type Actor = Editor;

    fn init(&self) -> (World, Vec<Editor>) {
        let mut world = World::new(Schema::default(), self.editors);
        let mut files = Fs::new(self.editors);
        files.seed_file(CONFIG, INITIAL);
        let fs = world.add_part(files);
        let actors = (0..self.editors)
            .map(|i| {
                world.os.start_process(&[i]);
                let program = FileProgram::new(fs, self.variant.edit(), "");
                Editor { setting: setting(i), program, returned: false, program_fs: fs }
            })
            .collect();
        (world, actors)
    }

    fn actor_names(&self) -> Vec<String> {
        (0..self.editors).map(|i| format!("editor {}", setting(i))).collect()
    }

    fn invariants(&self) -> Vec<Invariant<Editor>> {
        vec![Invariant::final_only("no-lost-edit", |v: &View<'_, Editor>| {
            let fs: &Fs = v.world.part(v.actors[0].program_fs);
            let config = fs.content(CONFIG).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            let mut wanted: Vec<char> = INITIAL.chars().collect();
            wanted.extend(v.actors.iter().filter(|e| e.returned).map(|e| e.setting));
            let lost: String = wanted.iter().filter(|c| !config.contains(**c)).collect();
            if lost.is_empty() {
                Ok(())
            } else {
                Err(format!("the config is \"{config}\": the settings {lost} were lost"))
            }
        })]
    }

    fn targets(&self) -> Vec<Target<Editor>> {
        vec![Target::new("every edit returned", |v: &View<'_, Editor>| v.actors.iter().all(|e| e.returned))]
    }
}

fn build(variant: Variant, params: &Params) -> Result<ConfigEdit, String> {
    Ok(ConfigEdit { variant, editors: params.workers("editors", 2, 1, 3)? })
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "config-edit",
        seed: "004_a5c38daeb850dd15.txt",
        passage: "Config editing is a file operation that may not have a DB session available. File-level locking is \
                  the appropriate mechanism. Config editor: `fcntl.flock()` around read-modify-write",
        invariant: "No edit that returned is lost.",
        variants: vec![
            VariantDef {
                id: "unlocked",
                summary: "as found: read the config, add a setting, write it back",
                build: |p| Ok(Box::new(build(Variant::Unlocked, p)?)),
            },
            VariantDef {
                id: "flock",
                summary: "the plan's fix: a blocking flock on config.lock around read, modify and write",
                build: |p| Ok(Box::new(build(Variant::Flock, p)?)),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_harness::explore::shortest::replay;
    use racelab_harness::explore::Bounds;
    use racelab_harness::run::{check, Backend, Mode, Verdict};
    use racelab_harness::testing::{crash, steps, texts};

    #[test]
    fn unlocked_two_reads_before_either_write_lose_an_edit() {
        let model = ConfigEdit { variant: Variant::Unlocked, editors: 2 };
        let r = replay(&model, &Bounds::default(), &steps(&[0, 1, 0, 0, 0, 1, 1, 1])).unwrap();
        assert_eq!(texts(&r.events)[1], "read(config.yaml) → x");
        let v = r.violation.unwrap();
        assert_eq!(v.invariant, "no-lost-edit");
        assert!(v.detail.contains("the settings a were lost"), "{}", v.detail);
    }

    #[test]
    fn flock_a_second_editor_waits_for_the_first() {
        let model = ConfigEdit { variant: Variant::Flock, editors: 2 };
        let r = replay(&model, &Bounds::default(), &steps(&[0, 0, 1, 1])).unwrap();
        assert_eq!(texts(&r.events)[3], "flock(fd1) … waits");
    }

    #[test]
    fn flock_does_not_survive_a_crash_mid_write() {
        let model = ConfigEdit { variant: Variant::Flock, editors: 2 };
        let bounds = Bounds { crashes: 1, ..Bounds::default() };
        let checked = check("config-edit/flock", &model, &Mode::Exhaustive, &bounds, &Backend::Sim);
        assert_eq!(checked.verdict, Verdict::Violated);
        let cx = checked.counterexample.unwrap();
        assert!(cx.timeline.steps.iter().any(|(_, t)| t == "✗ crash"), "{:?}", cx.timeline.steps);
        let _ = crash(0);
    }
}
