//! `racelab pg-spec`: PostgreSQL isolation specs on a real server, one after the other, as
//! PostgreSQL's regression driver runs its isolation schedule. A spec that fails (a setup
//! error, a lost session, a timeout) is reported and the run goes on; a summary ends it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use racelab_pg::spec::{self, RunOptions, SpecError};

use super::{stdout_failed, BadInput, DatabaseArg};

/// Alternative expected outputs `<name>_<n>.out` looked for, as `pg_regress` does.
const ALTERNATIVES: usize = 10;

/// How one spec ended.
enum Status {
    /// Its output equals an expected file.
    Matched,
    /// Its output equals none of the expected files.
    Differs,
    /// No expected file to compare with.
    Ran,
    /// It could not run to its end.
    Error(String),
}

/// Compares a transcript with the expected outputs as it streams, holding no more of it than
/// the longest expected file.
struct Comparison {
    expected: Vec<Vec<u8>>,
    /// Which expected outputs still agree with the transcript so far.
    agree: Vec<bool>,
    seen: usize,
}

impl Comparison {
    fn new(expected: Vec<Vec<u8>>) -> Comparison {
        let agree = vec![true; expected.len()];
        Comparison { expected, agree, seen: 0 }
    }

    fn feed(&mut self, chunk: &[u8]) {
        for (e, agree) in self.expected.iter().zip(self.agree.iter_mut()) {
            *agree = *agree && e.get(self.seen..self.seen + chunk.len()) == Some(chunk);
        }
        self.seen += chunk.len();
    }

    fn matched(&self) -> bool {
        self.expected.iter().zip(&self.agree).any(|(e, &agree)| agree && e.len() == self.seen)
    }
}

/// `DIR/<name>.out` and `DIR/<name>_<n>.out`, those that exist.
fn expected_outputs(dir: &Path, name: &str) -> Result<Vec<Vec<u8>>, BadInput> {
    let mut found = Vec::new();
    let candidates = std::iter::once(format!("{name}.out")).chain((0..ALTERNATIVES).map(|n| format!("{name}_{n}.out")));
    for file in candidates {
        let path = dir.join(file);
        match std::fs::read(&path) {
            Ok(bytes) => found.push(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BadInput(format!("{}: {e}", path.display()))),
        }
    }
    Ok(found)
}

fn spec_name(f: &Path) -> String {
    f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "spec".into())
}

pub(super) fn run(
    w: &mut dyn Write,
    files: &[PathBuf],
    out_dir: Option<&Path>,
    expected_dir: Option<&Path>,
    db: &DatabaseArg,
) -> Result<ExitCode, BadInput> {
    // Parse everything first: a bad spec is reported before any server starts.
    let mut specs = Vec::with_capacity(files.len());
    for f in files {
        specs.push(spec::parse_file(f).map_err(|e| BadInput(e.to_string()))?);
    }
    if let Some(dir) = expected_dir {
        if !dir.is_dir() {
            return Err(BadInput(format!("--expected-dir {}: not a directory", dir.display())));
        }
    }
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(dir).map_err(|e| BadInput(format!("{}: {e}", dir.display())))?;
    }
    let cluster = db.cluster()?;
    // On a throwaway cluster, the database PostgreSQL's driver uses (some specs name it); on
    // someone else's server, racelab's own scratch database.
    let base = match cluster.dir() {
        Some(_) => spec::regression_database(&cluster.config()).map_err(|e| BadInput(e.to_string()))?,
        None => cluster.config(),
    };
    let options = RunOptions::from_env();
    let started = Instant::now();
    let (mut matched, mut differ, mut errors, mut ran) = (0usize, 0usize, 0usize, 0usize);
    for (f, parsed) in files.iter().zip(&specs) {
        let name = spec_name(f);
        let mut comparison = match expected_dir {
            Some(dir) => Some(Comparison::new(expected_outputs(dir, &name)?)),
            None => None,
        };
        let mut file = match out_dir {
            Some(dir) => {
                let path = dir.join(format!("{name}.out"));
                Some((File::create(&path).map_err(|e| BadInput(format!("{}: {e}", path.display())))?, path))
            }
            None => None,
        };
        // A write failure of our own output ends the whole run (exit 2), not just this spec.
        let mut write_failure: Option<BadInput> = None;
        let spec_started = Instant::now();
        // As PostgreSQL's driver names its sessions (some specs look for them by name).
        let mut config = base.clone();
        config.application_name(format!("isolation/{name}"));
        let result = spec::run_spec_streaming(&config, parsed, &options, &mut |chunk| {
            if let Some(c) = comparison.as_mut() {
                c.feed(chunk.as_bytes());
            }
            let written = match file.as_mut() {
                Some((f, path)) => {
                    f.write_all(chunk.as_bytes()).map_err(|e| BadInput(format!("{}: {e}", path.display())))
                }
                None => w.write_all(chunk.as_bytes()).map_err(stdout_failed),
            };
            written.map_err(|e| {
                let what = e.0.clone();
                write_failure = Some(e);
                SpecError::Server { what: "writing the output".into(), error: what }
            })
        });
        if let Some(e) = write_failure {
            return Err(e);
        }
        let status = match (result, &comparison) {
            (Err(e), _) => Status::Error(e.to_string()),
            (Ok(()), None) => Status::Ran,
            (Ok(()), Some(c)) if c.expected.is_empty() => Status::Ran,
            (Ok(()), Some(c)) if c.matched() => Status::Matched,
            (Ok(()), Some(_)) => Status::Differs,
        };
        let ms = spec_started.elapsed().as_millis();
        let line = match &status {
            Status::Matched => {
                matched += 1;
                format!("ok       {name} ({ms} ms)")
            }
            Status::Differs => {
                differ += 1;
                format!("DIFFERS  {name} ({ms} ms)")
            }
            Status::Ran => {
                ran += 1;
                format!("ran      {name} ({ms} ms)")
            }
            Status::Error(e) => {
                errors += 1;
                format!("ERROR    {name}: {e}")
            }
        };
        report(w, out_dir.is_some(), &line)?;
    }
    let summary = format!(
        "{} specs: {matched} matched, {differ} differ, {errors} failed, {ran} without expected output ({:.1} s)",
        files.len(),
        started.elapsed().as_secs_f64()
    );
    report(w, out_dir.is_some(), &summary)?;
    Ok(if errors + differ == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Status lines go to standard output when the transcripts go to files, else to standard
/// error, so that standard output stays exactly the transcripts.
fn report(w: &mut dyn Write, to_stdout: bool, line: &str) -> Result<(), BadInput> {
    if to_stdout {
        writeln!(w, "{line}").map_err(stdout_failed)
    } else {
        eprintln!("{line}");
        Ok(())
    }
}
