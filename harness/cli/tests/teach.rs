//! The teaching outputs at the command line: `check --junit`, `report`, and `play`'s HTTP API on
//! every scenario (the browser test drives the page itself).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};

mod common;
use common::{command, racelab, scenarios_dir, stderr};

/// Ids of every scenario file, from `list --json`.
fn scenario_ids() -> Vec<(String, String)> {
    let out = racelab(&["list", "--json", "--scenarios", &scenarios_dir()]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON lines"))
        .filter(|v| !v["scenario"].is_null())
        .map(|v| (v["id"].as_str().unwrap().to_string(), v["expected"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn junit_has_one_passing_case_per_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("junit.xml");
    let out = racelab(&["check", "all", "--scenarios", &scenarios_dir(), "--junit", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let xml = std::fs::read_to_string(&file).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let ids = scenario_ids();
    let cases: Vec<_> = root.descendants().filter(|n| n.has_tag_name("testcase")).collect();
    assert_eq!(cases.len(), ids.len(), "one case per scenario");
    let mut names: Vec<String> = cases
        .iter()
        .map(|case| {
            let name = format!("{}/{}", case.attribute("classname").unwrap(), case.attribute("name").unwrap());
            assert!(!case.children().any(|c| c.has_tag_name("failure")), "{name} passes");
            name
        })
        .collect();
    names.sort();
    let mut expected: Vec<String> = ids.iter().map(|(id, _)| id.clone()).collect();
    expected.sort();
    assert_eq!(names, expected, "one case per scenario");
    assert_eq!(root.attribute("tests"), Some(ids.len().to_string().as_str()));
    assert_eq!(root.attribute("failures"), Some("0"));
    // A violation that was expected still shows its timeline.
    assert!(xml.contains("| Time |") && xml.contains("racelab replay summary-upsert/check-then-insert rl1."));
}

#[test]
fn junit_failure_carries_the_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let scenarios = dir.path().join("scenarios");
    std::fs::create_dir_all(scenarios.join("summary-upsert")).unwrap();
    let original =
        std::fs::read_to_string(Path::new(&scenarios_dir()).join("summary-upsert/check-then-insert.toml")).unwrap();
    assert!(original.contains("expected = \"violated\""));
    std::fs::write(
        scenarios.join("summary-upsert/check-then-insert.toml"),
        original.replace("expected = \"violated\"", "expected = \"holds\""),
    )
    .unwrap();
    let file = dir.path().join("junit.xml");
    let out = racelab(&["check", "all", "--scenarios", scenarios.to_str().unwrap(), "--junit", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "a mismatch exits 1: {}", stderr(&out));
    let xml = std::fs::read_to_string(&file).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let failure = doc.descendants().find(|n| n.has_tag_name("failure")).expect("a failure");
    let message = failure.attribute("message").unwrap();
    assert!(message.contains("expected holds, explored violated"), "{message}");
    assert!(message.contains("no-two-documents-per-tag"), "{message}");
    let body = failure.text().unwrap();
    assert!(body.contains("| T3   |"), "the timeline: {body}");
    assert!(body.contains("racelab replay summary-upsert/check-then-insert rl1."), "{body}");
    assert_eq!(doc.root_element().attribute("failures"), Some("1"));
}

#[test]
fn junit_to_an_unwritable_file_exits_2_before_exploring() {
    let dir = tempfile::tempdir().unwrap();
    for target in [dir.path().join("no/such/dir/junit.xml"), dir.path().to_path_buf()] {
        let out = racelab(&["check", "all", "--scenarios", &scenarios_dir(), "--junit", target.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(&format!("--junit {}", target.display())), "{}", stderr(&out));
        assert!(out.stdout.is_empty(), "nothing explored");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing left behind");
}

#[test]
fn report_writes_every_race_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for out in [&a, &b] {
        let o = racelab(&["report", "--scenarios", &scenarios_dir(), "--out", out.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let ids = scenario_ids();
    let mut races: Vec<&str> = ids.iter().map(|(id, _)| id.split('/').next().unwrap()).collect();
    races.dedup();
    let mut names: Vec<String> =
        std::fs::read_dir(&a).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for race in &races {
        assert!(names.contains(&format!("{race}.html")) && names.contains(&format!("{race}.md")), "{race}: {names:?}");
    }
    for name in &names {
        assert_eq!(std::fs::read(a.join(name)).unwrap(), std::fs::read(b.join(name)).unwrap(), "{name} differs");
    }
    let index = std::fs::read_to_string(a.join("index.html")).unwrap();
    assert!(!index.contains("http://") && !index.contains("https://"), "nothing loads from the network");
    for (id, expected) in &ids {
        let (race, variant) = id.split_once('/').unwrap();
        assert!(index.contains(&format!("href=\"{race}.html#{variant}\"")), "{id} in the index");
        let page = std::fs::read_to_string(a.join(format!("{race}.html"))).unwrap();
        let section = page.split(&format!("id=\"{variant}\"")).nth(1).expect("a section per variant");
        let section = section.split("<section class=\"variant\"").next().unwrap();
        let md = std::fs::read_to_string(a.join(format!("{race}.md"))).unwrap();
        let md_section = md.split(&format!("\n## {variant}\n")).nth(1).expect("a Markdown section per variant");
        let md_section = md_section.split("\n## ").next().unwrap();
        if expected == "violated" {
            assert!(section.contains("<svg") && section.contains("class=\"state\""), "{id}: diagram and state table");
            assert!(section.contains(&format!("racelab replay {id} rl1.")), "{id}: the replay command");
            assert!(md_section.contains("```mermaid\nsequenceDiagram\n"), "{id}: a mermaid diagram");
        } else {
            assert!(
                section.contains("What was explored") && section.contains("complete: <strong>true</strong>"),
                "{id}"
            );
            assert!(!section.contains("<svg"), "{id}: no counterexample drawn for a variant that holds");
        }
    }
}

#[test]
fn report_to_an_unusable_directory_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = racelab(&["report", "--scenarios", &scenarios_dir(), "--out", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("--out {}", file.display())), "{}", stderr(&out));
}

#[test]
fn play_with_an_unknown_id_exits_2() {
    let out = racelab(&["play", "no-such-race/at-all", "--scenarios", &scenarios_dir()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown id `no-such-race/at-all`"), "{}", stderr(&out));
}

/// The play server, stopped when dropped.
struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(server: &Server, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(&server.1).expect("the server accepts");
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", server.1)
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn api(server: &Server, method: &str, path: &str) -> serde_json::Value {
    let (status, body) = http(server, method, path);
    assert_eq!(status, 200, "{method} {path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

/// On every scenario: the first enabled choice until nothing moves, undo, then the explorer's
/// answer, which must match the scenario file's verdict.
#[test]
fn play_serves_every_scenario() {
    let mut child = command(&["play", "--scenarios", &scenarios_dir()]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split("http://").nth(1).and_then(|r| r.split('/').next()).expect("a URL").to_string();
    let server = Server(child, addr);
    assert!(addr_is_loopback(&server.1), "bound to 127.0.0.1: {}", server.1);
    let (status, page) = http(&server, "GET", "/");
    assert_eq!(status, 200);
    assert!(page.contains("<script src=\"/play.js\"></script>"));
    for (id, expected) in scenario_ids() {
        let mut state = api(&server, "POST", &format!("/api/scenario?id={id}"));
        assert_eq!(state["id"], id.as_str());
        let mut steps = 0;
        while let Some(choice) = state["choices"].as_array().and_then(|c| c.first()).cloned() {
            assert!(steps < 4096, "{id}: a bounded game");
            let path = format!("/api/choose?actor={}&kind={}", choice["actor"], choice["kind"].as_str().unwrap());
            state = api(&server, "POST", &path);
            steps += 1;
            assert_eq!(state["steps"].as_array().unwrap().len(), steps, "{id}");
        }
        assert!(steps > 0, "{id}: something can move");
        assert!(state["status"] == "violated" || state["status"] == "finished", "{id}: {}", state["status"]);
        let undone = api(&server, "POST", "/api/undo");
        assert_eq!(undone["steps"].as_array().unwrap().len(), steps - 1, "{id}: undo takes one step back");
        assert_eq!(undone["status"], "playing", "{id}: after undo a choice is open again");
        let solved = api(&server, "POST", "/api/solve");
        assert_eq!(solved["analysis"]["verdict"], expected.as_str(), "{id}");
        match expected.as_str() {
            "violated" => assert_eq!(solved["status"], "violated", "{id}: the counterexample is loaded"),
            "holds" => assert!(solved["analysis"]["text"].as_str().unwrap().starts_with("It holds"), "{id}"),
            other => panic!("{id}: unexpected verdict {other}"),
        }
    }
    let (status, body) = http(&server, "POST", "/api/choose?actor=31&kind=step");
    assert_eq!(status, 400, "a choice that is not offered is refused: {body}");
    let (status, _) = http(&server, "POST", "/api/scenario?id=no/such");
    assert_eq!(status, 400);
}

fn addr_is_loopback(addr: &str) -> bool {
    addr.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback())
}
