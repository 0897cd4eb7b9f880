//! `guidance-write`: concurrent `/judge` requests write `guidance.json`, which the next request
//! reads.
//!
//! Seed `002_80ca205b53ca1f38.txt`, "Silent Failures" and "Task 0.2":
//!
//! > guidance.json write race → file corruption on concurrent writes
//! > Writes atomically using atomic file operations: 1. Write to temp file 2. Rename temp to
//! > final (atomic on most filesystems) 3. Return only after rename completes
//! > `temp_fd, temp_path = tempfile.mkstemp(…)` … `json.dump(guidance_data, fh)` …
//! > `os.replace(temp_path, guidance_path)`
//!
//! Each writer is one request's `_write_guidance()`; writers' records differ in length, as two
//! judgments' JSON does. A reader (the next request) reads the file once; a writer whose process
//! crashes, or every process when the power fails, restarts and reads it too.
//!
//! Variants:
//! - `direct-write`: as found, `open(path, "w")` and `json.dump`. **Violated** with no fault: a
//!   reader sees the file between the truncation and the write, and two writers that truncate
//!   before either writes leave the longer record's tail after the shorter one
//!   (`racelab explain guidance-write/direct-write`).
//! - `mkstemp-rename`: the plan's fix. **Violated** by a power loss: nothing is fsynced, so the
//!   rename can reach the disk while the temporary file's data does not, and after the restart
//!   `guidance.json` is empty or torn (`racelab explain guidance-write/mkstemp-rename`). It holds
//!   against concurrent writers and process crashes. Shortest:
//!
//!   ```text
//!   | T0 | mkstemp(guidance.json.XXXXXX) as fd0 → guidance.json.tmp000001 |
//!   | T1 | write(fd0, "{g:a}", @0) → ok                                   |
//!   | T2 | close(fd0) → ok                                                |
//!   | T3 | rename(guidance.json.tmp000001 → guidance.json) → ok           |
//!   | T4 | ⚡ power loss; on disk: guidance.json=""                        |
//!   | T5 | read_guidance(guidance.json) → ""       (not a record)         |
//!   ```
//! - `mkstemp-fsync-rename`: a fix of ours, the plan's plus `os.fsync` of the temporary file
//!   before `os.replace`, and of the directory after it. **Holds** against concurrent writers,
//!   a process crash at every step and a power loss in every durable state the model allows.
//!
//! Invariant (`guidance-parses`): every read of `guidance.json`, and the file in every final
//! state, is missing or one complete record.

use racelab_harness::catalogue::{Params, RaceDef, VariantDef};
use racelab_harness::intern;
use racelab_harness::model::{Actor, Invariant, Model, Phase, Target, View};
use racelab_harness::op::{Op, Outcome, Value};
use racelab_harness::sim::fs::FsOp;
use racelab_harness::sim::{Fs, PartId, Schema, World};

use crate::file_steps::{FileProgram, FileStep, FileStep::*};

pub const GUIDANCE: &str = "guidance.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    DirectWrite,
    MkstempRename,
    MkstempFsyncRename,
}

impl Variant {
    fn write_guidance(self) -> &'static [FileStep] {
        match self {
            // with open(guidance_path, "w") as fh: json.dump(guidance_data, fh)
            Variant::DirectWrite => &[OpenTrunc(GUIDANCE), WriteRecord, Close],
            // temp_fd, temp_path = tempfile.mkstemp(…); json.dump(…); os.replace(temp_path, guidance_path)
            Variant::MkstempRename => &[Mkstemp(GUIDANCE), WriteRecord, Close, RenameTo(GUIDANCE)],
            // … plus os.fsync(fh.fileno()) before the replace and os.fsync(dir_fd) after it
            Variant::MkstempFsyncRename => {
                &[Mkstemp(GUIDANCE), WriteRecord, Fsync, Close, RenameTo(GUIDANCE), FsyncDir]
            }
        }
    }
}

/// Writer `i`'s record: `{g:a}`, `{g:bb}`, … (judgments differ in length).
pub fn record(i: usize) -> &'static str {
    let letter = char::from(b'a' + i as u8);
    intern(format!("{{g:{}}}", letter.to_string().repeat(i + 1)))
}

/// Does `content` parse as one complete record?
pub fn parses(content: &str) -> bool {
    let Some(inner) = content.strip_prefix("{g:").and_then(|c| c.strip_suffix('}')) else { return false };
    let mut chars = inner.chars();
    chars.next().is_some_and(|first| first.is_ascii_lowercase() && inner.chars().all(|c| c == first))
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Role {
    Writing(FileProgram),
    /// `json.load(open(guidance_path))` in the next request.
    Reading,
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Request {
    fs: PartId<Fs>,
    role: Role,
    /// This request's write returned (ghost state for the invariant; it survives a restart).
    wrote: bool,
    /// What its read returned: `Some(None)` for a missing file.
    read: Option<Option<&'static str>>,
}

impl Actor for Request {
    fn next_op(&self) -> Option<Op> {
        match &self.role {
            Role::Writing(w) => w.next_op(),
            Role::Reading => Some(self.fs.op("read_guidance", FsOp::Read { path: GUIDANCE })),
            Role::Done => None,
        }
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        match &mut self.role {
            Role::Writing(w) => {
                w.on_outcome(outcome);
                if w.done() {
                    self.wrote = w.succeeded();
                    self.role = Role::Done;
                }
            }
            Role::Reading => {
                self.read = Some(match outcome {
                    Outcome::Value(Value::Str(c)) => Some(c),
                    _ => None,
                });
                self.role = Role::Done;
            }
            Role::Done => panic!("a finished request got {outcome:?}"),
        }
    }

    /// The restarted server's next request reads the guidance.
    fn on_crash(&self) -> Option<Request> {
        Some(Request { role: Role::Reading, read: None, ..self.clone() })
    }
}

/// `writers` concurrent writes and one reader.
pub struct GuidanceWrite {
    pub variant: Variant,
    pub writers: usize,
}

impl Model for GuidanceWrite {
    type Actor = Request;

    fn init(&self) -> (World, Vec<Request>) {
        let actors = self.writers + 1;
        let mut world = World::new(Schema::default(), actors);
        let fs = world.add_part(Fs::new(actors));
        let mut out: Vec<Request> = (0..self.writers)
            .map(|i| Request {
                fs,
                role: Role::Writing(FileProgram::new(fs, self.variant.write_guidance(), record(i))),
                wrote: false,
                read: None,
            })
            .collect();
        out.push(Request { fs, role: Role::Reading, wrote: false, read: None });
        for i in 0..actors {
            world.os.start_process(&[i]);
        }
        (world, out)
    }

    fn actor_names(&self) -> Vec<String> {
        let mut names: Vec<String> = (0..self.writers).map(|i| format!("writer {}", i + 1)).collect();
        names.push("reader".into());
        names
    }

    fn invariants(&self) -> Vec<Invariant<Request>> {
        vec![Invariant::new("guidance-parses", |v: &View<'_, Request>| {
            // A missing file is no guidance yet, which the reader handles; only a file that does
            // not parse is what the catalogue forbids.
            let check = |who: String, content: Option<&str>| match content {
                None => Ok(()),
                Some(c) if parses(c) => Ok(()),
                Some(c) => Err(format!("{who}: guidance.json is {}, not one complete record", show(c))),
            };
            for (i, r) in v.actors.iter().enumerate() {
                if let Some(read) = r.read {
                    let who = if i + 1 == v.actors.len() {
                        "the reader".to_string()
                    } else {
                        format!("writer {}'s restart", i + 1)
                    };
                    check(who, read)?;
                }
            }
            if v.phase == Phase::Final {
                let fs: &Fs = v.world.part(v.actors[0].fs);
                check("at the end".into(), fs.content(GUIDANCE).map(|b| intern(String::from_utf8_lossy(b))))?;
            }
            Ok(())
        })]
    }

    fn targets(&self) -> Vec<Target<Request>> {
        vec![
            Target::new("a write returned", |v: &View<'_, Request>| v.actors.iter().any(|r| r.wrote)),
            Target::new("a read found guidance", |v: &View<'_, Request>| {
                v.actors.iter().any(|r| matches!(r.read, Some(Some(_))))
            }),
        ]
    }
}

fn show(content: &str) -> String {
    racelab_harness::sim::fs::show(content.as_bytes())
}

fn build(variant: Variant, params: &Params) -> Result<GuidanceWrite, String> {
    Ok(GuidanceWrite { variant, writers: params.workers("writers", 2, 1, 3)? })
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "guidance-write",
        seed: "002_80ca205b53ca1f38.txt",
        passage: "guidance.json write race → file corruption on concurrent writes. Writes atomically: 1. Write to \
                  temp file 2. Rename temp to final (atomic on most filesystems) 3. Return only after rename completes",
        invariant: "guidance.json always parses as one complete record.",
        variants: vec![
            VariantDef {
                id: "direct-write",
                summary: "as found: open guidance.json with O_TRUNC and json.dump into it",
                build: |p| Ok(Box::new(build(Variant::DirectWrite, p)?)),
            },
            VariantDef {
                id: "mkstemp-rename",
                summary: "the plan's fix: mkstemp, json.dump, os.replace over guidance.json",
                build: |p| Ok(Box::new(build(Variant::MkstempRename, p)?)),
            },
            VariantDef {
                id: "mkstemp-fsync-rename",
                summary: "a fix of ours: mkstemp, write, fsync, close, os.replace, fsync the directory",
                build: |p| Ok(Box::new(build(Variant::MkstempFsyncRename, p)?)),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_harness::explore::shortest::replay;
    use racelab_harness::explore::{Bounds, Choice, ChoiceKind};
    use racelab_harness::testing::{steps, texts};

    #[test]
    fn records_parse_and_mixtures_do_not() {
        assert!(parses(record(0)) && parses(record(1)));
        assert!(!parses("{g:a}}") && !parses("") && !parses("{g:}") && !parses("{g:ab}"));
    }

    #[test]
    fn direct_write_two_truncations_then_two_writes_leave_a_tail() {
        let model = GuidanceWrite { variant: Variant::DirectWrite, writers: 2 };
        // Both open with O_TRUNC, writer 2 writes its longer record, writer 1 its shorter one.
        let r = replay(&model, &Bounds::default(), &steps(&[0, 1, 1, 0, 0, 1, 2])).unwrap();
        assert_eq!(texts(&r.events)[6], "read_guidance(guidance.json) → {g:a}}");
        assert_eq!(r.violation.unwrap().invariant, "guidance-parses");
    }

    #[test]
    fn mkstemp_rename_a_power_loss_can_keep_the_rename_and_lose_the_data() {
        let model = GuidanceWrite { variant: Variant::MkstempRename, writers: 1 };
        let bounds = Bounds { power_losses: 1, ..Bounds::default() };
        let mut schedule = steps(&[0, 0, 0, 0]);
        // Durable states: nothing; the temp name only; … ; guidance.json with no data.
        let r = replay(&model, &bounds, &schedule).unwrap();
        assert!(r.violation.is_none());
        let states = r.state.world.power_loss_states();
        let lost = (0..states as u8)
            .find(|&k| {
                let mut s = schedule.clone();
                s.push(Choice { actor: k, kind: ChoiceKind::PowerLoss });
                s.extend(steps(&[0]));
                replay(&model, &bounds, &s).unwrap().violation.is_some()
            })
            .expect("some durable state breaks the file");
        schedule.push(Choice { actor: lost, kind: ChoiceKind::PowerLoss });
        let r = replay(&model, &bounds, &schedule).unwrap();
        assert!(
            texts(&r.events)[4].starts_with("⚡ power loss; on disk: guidance.json=\"\""),
            "{:?}",
            texts(&r.events)
        );
    }
}

#[cfg(test)]
mod power_loss_picks {
    use super::*;
    use racelab_harness::explore::shortest::replay;
    use racelab_harness::explore::{Bounds, Choice, ChoiceKind};
    use racelab_harness::testing::steps;

    /// Two unsynced writers leave more durable states than one pick of 32 can name: the power
    /// loss takes two explored picks, a group and a state within it, and replays from a token.
    #[test]
    fn more_than_32_durable_states_take_two_picks() {
        let model = GuidanceWrite { variant: Variant::MkstempRename, writers: 2 };
        let bounds = Bounds { power_losses: 1, ..Bounds::default() };
        // Two temporary files written and renamed over guidance.json, nothing fsynced.
        let prefix = steps(&[0, 0, 0, 1, 0, 1, 1, 1]);
        let r = replay(&model, &bounds, &prefix).unwrap();
        let states = r.state.world.power_loss_states();
        assert!(states > 32, "{states} durable states");
        let groups: Vec<Choice> =
            r.state.choices(&bounds).into_iter().filter(|c| c.kind == ChoiceKind::PowerLoss).collect();
        assert_eq!(groups.len(), states.div_ceil(32));
        // The last group, then its last state: the state numbered states - 1.
        let mut schedule = prefix.clone();
        schedule.push(*groups.last().unwrap());
        let r = replay(&model, &bounds, &schedule).unwrap();
        let within = r.state.choices(&bounds);
        assert!(within.iter().all(|c| c.kind == ChoiceKind::PowerLoss), "mid power loss only picks");
        assert_eq!(within.len(), states - 32 * (groups.len() - 1));
        schedule.push(*within.last().unwrap());
        let r = replay(&model, &bounds, &schedule).unwrap();
        let texts: Vec<&str> = r.events.iter().map(|e| e.text.as_str()).collect();
        assert!(texts[8].starts_with("⚡ power fails (durable states 32..="), "{texts:?}");
        assert!(texts[9].starts_with("⚡ power loss; on disk: "), "{texts:?}");
        // Every actor restarted and reads what the disk kept.
        assert_eq!(r.state.power_group, None);
    }
}
