//! `racelab play`: the learner is the scheduler. A local web server (127.0.0.1, any free port)
//! holds the schedule chosen so far and replays it on the simulator for every request; the page
//! only renders what the server says: the choices enabled now (which actor moves, which fault
//! strikes), the timeline, the sequence diagram, the world, and whether an invariant broke. On
//! request the explorer shows the shortest way to break the variant, or, for a variant that
//! holds, what it explored to show that no choice can.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use racelab_harness::catalogue::RaceDef;
use racelab_harness::explore::Choice;
use racelab_harness::run::{Backend, Verdict};
use racelab_harness::scenario::Scenario;
use racelab_harness::token;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::walk::{self, kind_name};
use crate::{diagram, BadInput};

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("play.js");
const STYLE: &str = include_str!("play.css");

/// What a race says about itself, for the page.
struct RaceText {
    seed: &'static str,
    passage: &'static str,
    invariant: &'static str,
}

/// The explorer's answer for one scenario, computed once on request.
#[derive(Clone)]
struct Analysis {
    verdict: Verdict,
    text: String,
    schedule: Option<Vec<Choice>>,
}

struct Session {
    current: usize,
    schedule: Vec<Choice>,
    /// Set once the learner asked the explorer, until the schedule changes by hand.
    shown: Option<Analysis>,
}

struct Game {
    scenarios: Vec<Scenario>,
    races: BTreeMap<String, RaceText>,
    session: Mutex<Session>,
    analyses: Mutex<BTreeMap<usize, Analysis>>,
}

type Shared = Arc<Game>;
type Answer = Result<Json<Value>, (StatusCode, String)>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A handler that panicked leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serve until the process is stopped. Prints the URL on standard output.
pub fn serve(
    scenarios: Vec<Scenario>,
    catalogue: &[RaceDef],
    start: usize,
    port: u16,
    name: &str,
) -> Result<ExitCode, BadInput> {
    if scenarios.is_empty() {
        return Err(BadInput("no scenario files to play".into()));
    }
    assert!(start < scenarios.len());
    let races = catalogue
        .iter()
        .map(|r| (r.id.to_string(), RaceText { seed: r.seed, passage: r.passage, invariant: r.invariant }))
        .collect();
    let game = Arc::new(Game {
        scenarios,
        races,
        session: Mutex::new(Session { current: start, schedule: Vec::new(), shown: None }),
        analyses: Mutex::new(BTreeMap::new()),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BadInput(format!("cannot start the server: {e}")))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| BadInput(format!("cannot listen on 127.0.0.1:{port}: {e}")))?;
        let addr = listener.local_addr().map_err(|e| BadInput(format!("cannot listen: {e}")))?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{name} play: http://{addr}/ (stop with Ctrl-C)");
        let _ = out.flush();
        drop(out);
        axum::serve(listener, router(game)).await.map_err(|e| BadInput(format!("the server stopped: {e}")))?;
        Ok(ExitCode::SUCCESS)
    })
}

fn router(game: Shared) -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", PAGE) }))
        .route("/play.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/play.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", crate::report::html::STYLE) }))
        .route("/api/state", get(state))
        .route("/api/scenario", post(scenario))
        .route("/api/choose", post(choose))
        .route("/api/undo", post(undo))
        .route("/api/reset", post(reset))
        .route("/api/solve", post(solve))
        .with_state(game)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

fn bad(message: impl Into<String>) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, message.into())
}

async fn state(State(game): State<Shared>) -> Answer {
    let session = lock(&game.session);
    view(&game, &session)
}

#[derive(Deserialize)]
struct ScenarioQuery {
    id: String,
}

async fn scenario(State(game): State<Shared>, Query(q): Query<ScenarioQuery>) -> Answer {
    let Some(i) = game.scenarios.iter().position(|s| s.id == q.id) else {
        return Err(bad(format!("unknown scenario `{}`", q.id)));
    };
    let mut session = lock(&game.session);
    *session = Session { current: i, schedule: Vec::new(), shown: None };
    view(&game, &session)
}

#[derive(Deserialize)]
struct ChooseQuery {
    actor: u8,
    kind: String,
}

async fn choose(State(game): State<Shared>, Query(q): Query<ChooseQuery>) -> Answer {
    let mut session = lock(&game.session);
    let s = &game.scenarios[session.current];
    let walked = walk::walk(s.model.as_ref(), &s.bounds, &session.schedule)
        .map_err(|e| bad(format!("the schedule no longer replays at step {}", e.step)))?;
    let Some(&choice) = walked.enabled.iter().find(|c| c.actor == q.actor && kind_name(c.kind) == q.kind) else {
        return Err(bad(format!("`{} {}` is not a choice here", q.kind, q.actor)));
    };
    if session.schedule.len() >= walk::MAX_STEPS {
        return Err(bad(format!("a schedule holds at most {} steps", walk::MAX_STEPS)));
    }
    session.schedule.push(choice);
    session.shown = None;
    view(&game, &session)
}

async fn undo(State(game): State<Shared>) -> Answer {
    let mut session = lock(&game.session);
    session.schedule.pop();
    session.shown = None;
    view(&game, &session)
}

async fn reset(State(game): State<Shared>) -> Answer {
    let mut session = lock(&game.session);
    session.schedule.clear();
    session.shown = None;
    view(&game, &session)
}

/// Ask the explorer: load the shortest counterexample, or say what was explored.
async fn solve(State(game): State<Shared>) -> Answer {
    let current = lock(&game.session).current;
    let cached = lock(&game.analyses).get(&current).cloned();
    let analysis = match cached {
        Some(a) => a,
        None => {
            let a = analyse(&game.scenarios[current]);
            lock(&game.analyses).insert(current, a.clone());
            a
        }
    };
    let mut session = lock(&game.session);
    if session.current != current {
        return view(&game, &session);
    }
    if let Some(schedule) = &analysis.schedule {
        session.schedule = schedule.clone();
    }
    session.shown = Some(analysis);
    view(&game, &session)
}

fn analyse(s: &Scenario) -> Analysis {
    let c = s.model.check(&s.id, &s.mode, &s.bounds, &Backend::Sim);
    let b = &s.bounds;
    let bounds = format!(
        "{} actors, up to {} crashes, {} injected errors and {} timeouts per execution, {} steps deep",
        s.model.actor_names().len(),
        b.crashes,
        b.errors,
        b.timeouts,
        b.max_depth
    );
    let explored = format!(
        "{} states and {} executions ({} transitions)",
        c.stats.states, c.stats.executions, c.stats.transitions
    );
    match (&c.verdict, &c.counterexample) {
        (Verdict::Violated, Some(cx)) => Analysis {
            verdict: c.verdict,
            text: format!(
                "The shortest way to break it takes {} steps; it is loaded below. Undo to step back through it. ({}: {})",
                cx.steps, cx.invariant, cx.detail
            ),
            schedule: token::decode(&s.id, &cx.token).ok(),
        },
        (Verdict::Holds, _) => Analysis {
            verdict: c.verdict,
            text: format!(
                "It holds: the explorer made every choice you can make, with {bounds}. It visited {explored}, \
                 and the search was complete: no sequence of choices breaks an invariant."
            ),
            schedule: None,
        },
        _ => Analysis {
            verdict: c.verdict,
            text: format!(
                "Inconclusive after {explored} ({bounds}): {}",
                c.reason.as_deref().unwrap_or("the search was not complete")
            ),
            schedule: None,
        },
    }
}

/// Everything the page shows, from replaying the schedule.
fn view(game: &Game, session: &Session) -> Answer {
    let s = &game.scenarios[session.current];
    let model = s.model.as_ref();
    let walked = walk::walk(model, &s.bounds, &session.schedule)
        .map_err(|e| bad(format!("the schedule no longer replays at step {}", e.step)))?;
    let choices: Vec<Value> = walked
        .enabled
        .iter()
        .map(|&c| {
            json!({
                "actor": c.actor,
                "kind": kind_name(c.kind),
                "label": walk::choice_label(model, &s.bounds, &session.schedule, c),
            })
        })
        .collect();
    let (status, message) = match (&walked.violation, walked.enabled.is_empty()) {
        (Some((inv, detail)), _) => ("violated", format!("Invariant violated: {inv}: {detail}")),
        (None, true) => (
            "finished",
            "Every actor is done and no invariant broke on this path. Try another order, or ask the explorer.".into(),
        ),
        (None, false) if walked.steps.is_empty() => ("playing", "Pick who moves first.".into()),
        (None, false) => ("playing", "No invariant is broken yet. Pick who moves next.".into()),
    };
    let world = walked.steps.last().map_or(&walked.initial, |st| &st.world);
    let waiting: &[String] = walked.steps.last().map_or(&[], |st| &st.waiting);
    let race = game.races.get(&s.race);
    let title = format!("Sequence diagram of your schedule on {}", s.id);
    Ok(Json(json!({
        "scenarios": game.scenarios.iter().map(|x| json!({"id": x.id, "expected": x.expected})).collect::<Vec<_>>(),
        "id": s.id,
        "description": s.description,
        "expected": s.expected,
        "seed": race.map(|r| r.seed),
        "passage": race.map(|r| r.passage),
        "invariant": race.map(|r| r.invariant),
        "actors": walked.actors,
        "steps": walked.steps,
        "world": world,
        "waiting": waiting,
        "choices": choices,
        "status": status,
        "message": message,
        "violation": walked.violation.as_ref().map(|(i, d)| json!({"invariant": i, "detail": d})),
        "token": if session.schedule.is_empty() { None } else { Some(token::encode(&s.id, &session.schedule)) },
        "svg": if walked.steps.is_empty() { String::new() } else { diagram::svg(&walked, "play", &title) },
        "analysis": session.shown.as_ref().map(|a| json!({"verdict": a.verdict, "text": a.text})),
    })))
}
