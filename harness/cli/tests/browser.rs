//! The report site and the play page in a real browser: headless Chromium driven over WebDriver
//! (chromedriver). It opens the report index, follows a race, checks the sequence diagram and the
//! state table; then plays `summary-upsert/check-then-insert` to the duplicate, sees the violation
//! announced, undoes, and on a variant that holds asks the explorer and reads that it holds.
//! Every page is also checked on a phone-sized viewport and for labels, contrast and keyboard use,
//! and screenshots are decoded and checked not to be blank.
//!
//! `RACELAB_SCREENSHOTS=DIR` keeps the screenshots in DIR.
//!
//! Skipped, with a message, only when no Chromium is installed (`.ci/run` installs Debian's
//! `chromium` and `chromium-driver`, and sets RACELAB_REQUIRE_BROWSER=1 so that CI never skips).

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Most time any one wait in the browser may take.
const WAIT: Duration = Duration::from_secs(20);

fn find_in_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| std::env::split_paths(&path).map(|d| d.join(n)).find(|p| p.is_file()))
}

/// Chromium's own binary: Debian's `/usr/bin/chromium` is a wrapper script around it.
fn chromium() -> Option<PathBuf> {
    // An explicit path that does not exist means "no Chromium here".
    if let Some(p) = std::env::var_os("RACELAB_CHROMIUM") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let real = Path::new("/usr/lib/chromium/chromium");
    if real.is_file() {
        return Some(real.to_path_buf());
    }
    find_in_path(&["chromium", "chromium-browser", "google-chrome"])
}

/// A child process in a process group of its own; dropping it ends the whole group (chromedriver
/// takes its browser with it).
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = self.0.id() as i32;
        // SAFETY: signalling the process group this test created; no memory is involved.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

fn spawn_group(cmd: &mut Command) -> Group {
    Group(cmd.process_group(0).spawn().expect("the process starts"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("an address").port()
}

fn racelab() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_racelab"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    cmd
}

/// Labels, names, contrast (WCAG AA, 4.5:1 for text), `lang` and `title`: the problems found.
const ACCESSIBILITY: &str = r#"
function parse(c) { var m = c.match(/rgba?\(([^)]+)\)/); if (!m) return null;
  var p = m[1].split(/[ ,\/]+/).filter(Boolean).map(parseFloat); return p; }
function lum(p) { return p.slice(0, 3).map(function (v) { v /= 255;
  return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); })
  .reduce(function (a, v, i) { return a + v * [0.2126, 0.7152, 0.0722][i]; }, 0); }
function background(el) { for (; el && el.nodeType === 1; el = el.parentElement) {
  var p = parse(getComputedStyle(el).backgroundColor); if (p && (p.length < 4 || p[3] > 0.5)) return p; }
  return [255, 255, 255]; }
var problems = [];
document.querySelectorAll('body *').forEach(function (el) {
  if (el.closest('svg')) return;
  var own = Array.prototype.some.call(el.childNodes, function (n) { return n.nodeType === 3 && n.textContent.trim(); });
  if (!own) return;
  var r = el.getBoundingClientRect(); if (!r.width || !r.height) return;
  var fg = parse(getComputedStyle(el).color); if (!fg) return;
  var a = lum(fg), b = lum(background(el));
  var ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < 4.5) problems.push('contrast ' + ratio.toFixed(2) + ' on ' + el.tagName + ': ' + el.textContent.trim().slice(0, 40));
});
document.querySelectorAll('input, select, textarea').forEach(function (el) {
  if (!((el.labels && el.labels.length) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')))
    problems.push('no label for ' + el.tagName + '#' + el.id); });
document.querySelectorAll('button, a[href]').forEach(function (el) {
  if (!(el.textContent.trim() || el.getAttribute('aria-label'))) problems.push('no name for a ' + el.tagName); });
document.querySelectorAll('svg').forEach(function (el) {
  if (el.getAttribute('role') !== 'img' || !el.getAttribute('aria-labelledby')) problems.push('svg without role and name'); });
if (!document.documentElement.lang) problems.push('no lang');
if (!document.title) problems.push('no title');
return problems;
"#;

async fn eval(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

/// Poll a JavaScript condition until it is true.
async fn wait_until(c: &Client, condition: &str) {
    let script = format!("return !!({condition});");
    let deadline = Instant::now() + WAIT;
    loop {
        if eval(c, &script).await == json!(true) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for `{condition}`");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn accessible(c: &Client, page: &str) {
    let problems = eval(c, ACCESSIBILITY).await;
    assert_eq!(problems, json!([]), "accessibility problems on {page}");
}

/// Take a screenshot, save it beside the test's other files, and check it is not blank: the
/// pixels' luminance must vary.
async fn screenshot(c: &Client, dir: &Path, name: &str) {
    let png_bytes = c.screenshot().await.expect("a screenshot");
    std::fs::write(dir.join(format!("{name}.png")), &png_bytes).expect("the screenshot is saved");
    // RACELAB_SCREENSHOTS=DIR keeps them, e.g. for a CI artifact.
    if let Some(keep) = std::env::var_os("RACELAB_SCREENSHOTS") {
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep).expect("the screenshot directory");
        std::fs::write(keep.join(format!("{name}.png")), &png_bytes).expect("the screenshot is kept");
    }
    let decoder = png::Decoder::new(std::io::Cursor::new(&png_bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a bounded image")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{name}: a colour screenshot");
    let pixels = &buf[..info.buffer_size()];
    let lum: Vec<f64> = pixels
        .chunks(channels)
        .map(|p| 0.2126 * f64::from(p[0]) + 0.7152 * f64::from(p[1]) + 0.0722 * f64::from(p[2]))
        .collect();
    let mean = lum.iter().sum::<f64>() / lum.len() as f64;
    let variance = lum.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / lum.len() as f64;
    let dark = lum.iter().filter(|&&l| l < 128.0).count() as f64 / lum.len() as f64;
    println!(
        "{name}: {}x{} px, luminance variance {variance:.0}, dark pixels {:.1}%",
        info.width,
        info.height,
        dark * 100.0
    );
    assert!(info.width >= 300 && info.height >= 300, "{name}: a real page size");
    assert!(variance > 200.0, "{name}: the screenshot is blank (variance {variance:.1})");
    assert!(dark > 0.005, "{name}: no text drawn ({:.3}% dark pixels)", dark * 100.0);
}

/// Phone-sized: no horizontal scrolling of the page itself (wide tables and diagrams scroll in
/// their own boxes).
async fn fits_phone(c: &Client, page: &str) {
    c.set_window_size(390, 844).await.expect("a phone-sized window");
    wait_until(c, "window.innerWidth <= 420").await;
    let overflow = eval(c, "return document.documentElement.scrollWidth - window.innerWidth;").await;
    assert!(overflow.as_i64().is_some_and(|o| o <= 0), "{page} scrolls sideways on a phone by {overflow} px");
    let font = eval(c, "return parseFloat(getComputedStyle(document.body).fontSize);").await;
    assert!(font.as_f64().is_some_and(|f| f >= 14.0), "{page}: body text at least 14 px on a phone");
}

async fn click_choice(c: &Client, prefix: &str) {
    let before = eval(c, "return document.querySelectorAll('#timeline tbody tr').length;").await;
    let buttons = c.find_all(Locator::Css("#choices button")).await.expect("choice buttons");
    let mut labels = Vec::new();
    for b in buttons {
        let text = b.text().await.expect("a label");
        if text.starts_with(prefix) {
            b.click().await.expect("a click");
            wait_until(c, &format!("document.querySelectorAll('#timeline tbody tr').length > {before}")).await;
            return;
        }
        labels.push(text);
    }
    panic!("no choice starts with `{prefix}`; offered: {labels:?}");
}

#[test]
fn report_and_play_in_headless_chromium() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("RACELAB_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "RACELAB_REQUIRE_BROWSER=1 but no Chromium is installed (apt-get install chromium chromium-driver)"
        );
        println!("SKIPPED report_and_play_in_headless_chromium: Chromium is not installed (apt-get install chromium chromium-driver)");
        return;
    };
    let driver = std::env::var_os("RACELAB_CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| find_in_path(&["chromedriver"]))
        .expect("Chromium is installed but chromedriver is not (apt-get install chromium-driver)");
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let site = dir.path().join("site");

    let report = racelab().arg("report").arg("--out").arg(&site).output().expect("racelab report runs");
    assert!(report.status.success(), "racelab report: {}", String::from_utf8_lossy(&report.stderr));

    let mut play = spawn_group(
        racelab().args(["play", "summary-upsert/check-then-insert"]).stdout(Stdio::piped()).stderr(Stdio::inherit()),
    );
    let mut line = String::new();
    // Kept open for the whole test, so that the server never writes into a closed pipe.
    let mut play_out = BufReader::new(play.0.stdout.take().expect("stdout"));
    play_out.read_line(&mut line).expect("the URL line");
    let url = line.split_whitespace().find(|w| w.starts_with("http://127.0.0.1:")).expect("a local URL").to_string();

    let port = free_port();
    let _driver = spawn_group(Command::new(&driver).arg(format!("--port={port}")).stdout(Stdio::null()));
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let profile = dir.path().join("profile");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": browser,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-crash-reporter", "--disable-breakpad", "--window-size=1280,1000", format!("--user-data-dir={}", profile.display())],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let c = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");

        // The report: index, filter, a race page with its diagram and state table.
        let index = format!("file://{}", site.join("index.html").display());
        c.goto(&index).await.expect("the index opens");
        wait_until(&c, "document.querySelectorAll('#scenarios tbody tr').length >= 17").await;
        accessible(&c, "the report index").await;
        screenshot(&c, dir.path(), "report-index").await;
        let filter = c.find(Locator::Id("filter")).await.expect("the filter box");
        filter.send_keys("summary-upsert").await.expect("typing");
        // Exactly the summary-upsert rows stay visible, however many variants the race has.
        wait_until(
            &c,
            "(() => { const rows = [...document.querySelectorAll('#scenarios tbody tr')]; \
             const want = rows.filter(r => r.textContent.includes('summary-upsert/')).length; \
             const shown = rows.filter(r => !r.hidden); \
             return want >= 5 && shown.length === want && shown.every(r => r.textContent.includes('summary-upsert/')); })()",
        )
        .await;
        c.find(Locator::LinkText("summary-upsert/check-then-insert")).await.expect("the race link").click().await.expect("a click");
        wait_until(&c, "location.pathname.endsWith('summary-upsert.html')").await;
        wait_until(&c, "document.querySelector('#check-then-insert svg.sequence line') !== null").await;
        let diagram = eval(
            &c,
            "var s = document.querySelector('#check-then-insert svg.sequence'); return [s.querySelectorAll('.participant').length, s.querySelectorAll('.step').length, s.getBoundingClientRect().height];",
        )
        .await;
        assert_eq!(diagram[0], json!(3), "two requests and the database as lifelines: {diagram}");
        assert_eq!(diagram[1], json!(4), "four steps drawn: {diagram}");
        let state = eval(
            &c,
            "return Array.from(document.querySelectorAll('#check-then-insert table.state tbody tr')).map(function (r) { return r.textContent; });",
        )
        .await;
        let rows: Vec<&str> = state.as_array().expect("rows").iter().filter_map(Value::as_str).collect();
        assert_eq!(rows.len(), 5, "a start row and one per step: {rows:?}");
        assert!(rows[4].contains("(id=1, tag=s1, content=summary-1) (id=2, tag=s1, content=summary-2)"), "{rows:?}");
        let text = c.find(Locator::Css("#check-then-insert")).await.expect("the section").text().await.expect("text");
        assert!(text.contains("violated: no-two-documents-per-tag"), "{text}");
        assert!(text.contains("racelab replay summary-upsert/check-then-insert rl1."), "{text}");
        accessible(&c, "the race page").await;
        screenshot(&c, dir.path(), "report-race").await;
        fits_phone(&c, "the race page").await;
        screenshot(&c, dir.path(), "report-race-phone").await;
        c.goto(&index).await.expect("the index opens");
        fits_phone(&c, "the report index").await;
        c.set_window_size(1280, 1000).await.expect("a desktop window");

        // Play: be the scheduler.
        c.goto(&url).await.expect("the play page opens");
        wait_until(&c, "document.querySelectorAll('#choices button').length === 2").await;
        accessible(&c, "the play page").await;
        // Keyboard only: tab to the first choice and press Enter.
        let body = c.find(Locator::Css("body")).await.expect("the body");
        let mut reached = false;
        for _ in 0..30 {
            body.send_keys("\u{E004}").await.expect("Tab");
            let on_choice = eval(&c, "return document.activeElement.parentNode.id === 'choices';").await;
            if on_choice == json!(true) {
                reached = true;
                break;
            }
        }
        assert!(reached, "Tab reaches the choices");
        c.active_element().await.expect("the focused choice").send_keys("\u{E007}").await.expect("Enter");
        wait_until(&c, "document.querySelectorAll('#timeline tbody tr').length === 1").await;
        c.find(Locator::Id("undo")).await.expect("undo").click().await.expect("a click");
        wait_until(&c, "document.querySelectorAll('#timeline tbody tr').length === 0").await;

        // The two requests to the duplicate: both look, both insert.
        click_choice(&c, "request 1: find_document_by_tag").await;
        click_choice(&c, "request 2: find_document_by_tag").await;
        click_choice(&c, "request 1: add_document").await;
        let status = c.find(Locator::Id("status")).await.expect("the status").text().await.expect("text");
        assert!(status.contains("No invariant is broken yet"), "{status}");
        click_choice(&c, "request 2: add_document").await;
        wait_until(&c, "document.getElementById('status').classList.contains('violated')").await;
        let status = c.find(Locator::Id("status")).await.expect("the status").text().await.expect("text");
        assert!(status.contains("Invariant violated: no-two-documents-per-tag"), "{status}");
        assert_eq!(eval(&c, "return document.getElementById('status').getAttribute('role');").await, json!("status"));
        wait_until(&c, "document.querySelector('#diagram svg.sequence') !== null").await;
        accessible(&c, "the play page after a violation").await;
        screenshot(&c, dir.path(), "play-violated").await;
        fits_phone(&c, "the play page").await;
        screenshot(&c, dir.path(), "play-violated-phone").await;
        c.set_window_size(1280, 1000).await.expect("a desktop window");

        c.find(Locator::Id("undo")).await.expect("undo").click().await.expect("a click");
        wait_until(&c, "document.querySelectorAll('#timeline tbody tr').length === 3").await;
        wait_until(&c, "!document.getElementById('status').classList.contains('violated')").await;
        wait_until(&c, "document.querySelectorAll('#choices button').length >= 1").await;

        // A fix that holds: the explorer says why no choice can break it.
        c.find(Locator::Id("scenario"))
            .await
            .expect("the scenario list")
            .select_by_value("summary-upsert/unique-on-conflict")
            .await
            .expect("a scenario chosen");
        wait_until(&c, "document.querySelectorAll('#timeline tbody tr').length === 0 && document.getElementById('scenario').value === 'summary-upsert/unique-on-conflict'").await;
        c.find(Locator::Id("solve")).await.expect("the explorer button").click().await.expect("a click");
        wait_until(&c, "!document.getElementById('analysis').hidden").await;
        let analysis = c.find(Locator::Id("analysis")).await.expect("the analysis").text().await.expect("text");
        assert!(analysis.starts_with("It holds"), "{analysis}");
        assert!(analysis.contains("the search was complete"), "{analysis}");
        accessible(&c, "the play page on a variant that holds").await;
        screenshot(&c, dir.path(), "play-holds").await;

        c.close().await.expect("the session ends");
    });
    drop(play);
    println!("report and play in headless Chromium: {:.1} s", started.elapsed().as_secs_f64());
}
