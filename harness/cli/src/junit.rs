//! `racelab check --junit FILE`: the verdicts as JUnit XML, the format CI systems read. One test
//! case per scenario; a case fails when its verdict differs from the one its file expects, and
//! the failure carries the counterexample's timeline and replay command.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use racelab_harness::run::Checked;
use racelab_harness::scenario::Scenario;

use crate::diagram::xml;
use crate::BadInput;

/// One scenario's outcome, as a test case.
pub struct Case {
    pub id: String,
    pub classname: String,
    pub name: String,
    /// `None` for a scenario the backend could not run (skipped).
    pub checked: Option<Checked>,
    pub expected: String,
}

impl Case {
    pub fn ran(s: &Scenario, checked: &Checked) -> Case {
        Case {
            id: s.id.clone(),
            classname: s.race.clone(),
            name: s.variant.clone(),
            checked: Some(checked.clone()),
            expected: s.expected.to_string(),
        }
    }

    pub fn skipped(s: &Scenario) -> Case {
        Case {
            id: s.id.clone(),
            classname: s.race.clone(),
            name: s.variant.clone(),
            checked: None,
            expected: s.expected.to_string(),
        }
    }

    fn failed(&self) -> bool {
        self.checked.as_ref().is_some_and(|c| c.verdict.to_string() != self.expected)
    }
}

/// The JUnit file, opened (and so checked writable) before any exploration starts. If the run
/// ends without writing it, the file is removed again.
pub struct JunitFile {
    path: PathBuf,
    file: Option<File>,
}

impl JunitFile {
    pub fn create(path: &Path) -> Result<JunitFile, BadInput> {
        let file = File::create(path).map_err(|e| BadInput(format!("--junit {}: {e}", path.display())))?;
        Ok(JunitFile { path: path.to_path_buf(), file: Some(file) })
    }

    /// Write every case as one test suite named after the backend and mode.
    pub fn write(mut self, suite: &str, cases: &[Case], terminal_width: u16) -> Result<(), BadInput> {
        let xml = render(suite, cases, terminal_width);
        let mut file = self.file.take().expect("written once");
        file.write_all(xml.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| BadInput(format!("--junit {}: {e}", self.path.display())))
    }
}

impl Drop for JunitFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// XML 1.0 allows no control characters other than tab, newline and carriage return.
fn text(s: &str) -> String {
    xml(&s.chars().filter(|&c| !c.is_control() || matches!(c, '\t' | '\n' | '\r')).collect::<String>())
}

fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

pub fn render(suite: &str, cases: &[Case], width: u16) -> String {
    let failures = cases.iter().filter(|c| c.failed()).count();
    let skipped = cases.iter().filter(|c| c.checked.is_none()).count();
    let total_ms: u64 = cases.iter().filter_map(|c| c.checked.as_ref()).map(|c| c.elapsed_ms).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"racelab\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{}\">\n",
        cases.len(),
        seconds(total_ms)
    ));
    out.push_str(&format!(
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{}\">\n",
        text(suite),
        cases.len(),
        seconds(total_ms)
    ));
    for case in cases {
        let time = case.checked.as_ref().map_or(0, |c| c.elapsed_ms);
        out.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\">\n",
            text(&case.classname),
            text(&case.name),
            seconds(time)
        ));
        let Some(c) = &case.checked else {
            out.push_str("      <skipped message=\"this backend cannot run this scenario\"/>\n    </testcase>\n");
            continue;
        };
        let mut body = String::new();
        if let Some(cx) = &c.counterexample {
            body.push_str(&cx.timeline.render(width));
            body.push_str(&format!("\n\nviolated: {}: {}\n", cx.invariant, cx.detail));
            for line in &cx.final_state {
                body.push_str(&format!("  {line}\n"));
            }
            body.push_str(&format!("replay: racelab replay {} {}\n", case.id, cx.token));
        } else {
            body.push_str(&format!(
                "{} states, {} executions, complete: {}\n",
                c.stats.states, c.stats.executions, c.complete
            ));
            if let Some(reason) = &c.reason {
                body.push_str(&format!("inconclusive: {reason}\n"));
            }
        }
        if case.failed() {
            let mut message = format!("{}: expected {}, explored {}", case.id, case.expected, c.verdict);
            if let Some(cx) = &c.counterexample {
                message.push_str(&format!(" ({}: {})", cx.invariant, cx.detail));
            }
            out.push_str(&format!(
                "      <failure type=\"verdict\" message=\"{}\">{}</failure>\n",
                text(&message),
                text(&body)
            ));
        } else {
            out.push_str(&format!("      <system-out>{}</system-out>\n", text(&body)));
        }
        out.push_str("    </testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_drops_control_characters_that_xml_forbids() {
        assert_eq!(text("a\u{1b}[1mb\tc\nd<e>"), "a[1mb\tc\nd&lt;e&gt;");
    }

    #[test]
    fn seconds_have_three_decimals() {
        assert_eq!(seconds(1234), "1.234");
        assert_eq!(seconds(5), "0.005");
    }
}
