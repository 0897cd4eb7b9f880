//! `judge-persist` under turmoil: seed 002's `POST /judge` as an async handler on a `judge` host,
//! saving to a database on a `db` host, called by a `client`. The variants and invariants are
//! the simulator model's (`racelab_models::judge_persist`).
//!
//! `fire-and-forget` spawns `_persist_judgment` as a task of the server and answers 200 at once;
//! its errors are logged and dropped. `await-persist` awaits the save and answers 500 when it
//! fails. The database fails a save at random (the seed's "DB maybe saves, maybe fails
//! silently"); the fault plan crashes and restarts the judge host, and partitions or holds its
//! links.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use racelab_models::judge_persist::{Variant, GET_AFTER_200_FINDS_JUDGMENT, JUDGMENT_ID, JUDGMENT_WITH_200_IS_STORED};

use crate::rpc;
use crate::{Coin, FaultPlan, SeedRun, Trace};

const DB: &str = "db";
const JUDGE: &str = "judge";
/// How often the database fails a save.
const SAVE_FAILURE_RATE: f64 = 0.15;

/// The scenario's variant, from its id.
pub fn variant(id: &str) -> Option<Variant> {
    Some(match id.strip_prefix("judge-persist/")? {
        "fire-and-forget" => Variant::FireAndForget,
        "await-persist" => Variant::AwaitPersist,
        _ => return None,
    })
}

/// `repo.save(judgment)`: the INSERT, over the network.
async fn save(judgment_id: i64, verdict: &str) -> Result<(), String> {
    match rpc::call(DB, &format!("INSERT {judgment_id} {verdict}")).await {
        Ok(answer) if answer == "OK" => Ok(()),
        Ok(answer) => Err(answer),
        Err(e) => Err(e.to_string()),
    }
}

/// The old `_persist_judgment()`: errors "logged at DEBUG level, never raised".
async fn persist_judgment(judgment_id: i64, verdict: String, trace: Rc<Trace>) {
    if let Err(e) = save(judgment_id, &verdict).await {
        trace.log(JUDGE, format!("_persist_judgment({judgment_id}) failed: {e} (logged at DEBUG)"));
    }
}

/// `POST /judge` and `GET /judge/{id}`.
async fn judge_server(variant: Variant, trace: Rc<Trace>) -> turmoil::Result {
    rpc::serve(move |request: String| {
        let trace = Rc::clone(&trace);
        async move {
            let words: Vec<&str> = request.split(' ').collect();
            match words.as_slice() {
                ["POST", "/judge", id] => {
                    let Ok(judgment_id) = id.parse::<i64>() else { return "400".to_string() };
                    // `judgment = await state.orchestrator.run(cell, …)`
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let verdict = "APPROVE".to_string();
                    match variant {
                        Variant::FireAndForget => {
                            tokio::task::spawn_local(persist_judgment(judgment_id, verdict, Rc::clone(&trace)));
                        }
                        Variant::AwaitPersist => {
                            if let Err(e) = save(judgment_id, &verdict).await {
                                trace.log(JUDGE, format!("_persist_judgment_async({judgment_id}) raised {e}"));
                                return "500".to_string();
                            }
                        }
                    }
                    trace.log(JUDGE, format!("POST /judge {judgment_id} → 200"));
                    "200".to_string()
                }
                ["GET", "/judge", id] => match rpc::call(DB, &format!("SELECT {id}")).await {
                    Ok(row) if row == "NONE" => "404".to_string(),
                    Ok(row) => format!("200 {row}"),
                    Err(_) => "503".to_string(),
                },
                _ => "400".to_string(),
            }
        }
    })
    .await
}

async fn database(rows: Rc<RefCell<BTreeMap<i64, String>>>, coin: Coin, trace: Rc<Trace>) -> turmoil::Result {
    rpc::serve(move |request: String| {
        let words: Vec<&str> = request.split(' ').collect();
        let answer = match words.as_slice() {
            ["INSERT", _, _] if coin.flip(SAVE_FAILURE_RATE) => {
                trace.log(DB, "INSERT failed: 58030 io_error");
                "58030".to_string()
            }
            ["INSERT", id, verdict] => match id.parse() {
                Ok(id) => {
                    rows.borrow_mut().insert(id, verdict.to_string());
                    trace.log(DB, format!("INSERT judgment {id} committed"));
                    "OK".to_string()
                }
                Err(_) => "22P02".to_string(),
            },
            ["SELECT", id] => id
                .parse()
                .ok()
                .and_then(|id: i64| rows.borrow().get(&id).cloned())
                .unwrap_or_else(|| "NONE".to_string()),
            _ => "400".to_string(),
        };
        std::future::ready(answer)
    })
    .await
}

/// What the client saw.
#[derive(Default)]
struct Seen {
    status: Option<String>,
    found: Option<bool>,
}

fn shown(answer: &std::io::Result<String>) -> String {
    answer.as_ref().map_or_else(|e| format!("{} ({e})", e.kind()), String::clone)
}

/// The caller: `POST /judge`, then, after a 200, `GET /judge/{id}`.
async fn client(seen: Rc<RefCell<Seen>>, trace: Rc<Trace>) -> turmoil::Result {
    let posted = rpc::call(JUDGE, &format!("POST /judge {JUDGMENT_ID}")).await;
    trace.log("client", format!("POST /judge → {}", shown(&posted)));
    let Ok(status) = posted else { return Ok(()) };
    seen.borrow_mut().status = Some(status.clone());
    if status != "200" {
        return Ok(());
    }
    let got = rpc::call(JUDGE, &format!("GET /judge {JUDGMENT_ID}")).await;
    trace.log("client", format!("GET /judge/{JUDGMENT_ID} → {}", shown(&got)));
    match got.as_deref() {
        Ok("404") => seen.borrow_mut().found = Some(false),
        Ok(answer) if answer.starts_with("200") => seen.borrow_mut().found = Some(true),
        _ => {}
    }
    Ok(())
}

/// Run one seed.
pub fn run(variant: Variant, seed: u64) -> Result<SeedRun, String> {
    let trace = Rc::new(Trace::default());
    let rows = Rc::new(RefCell::new(BTreeMap::new()));
    let seen = Rc::new(RefCell::new(Seen::default()));
    let mut sim = crate::simulation(seed);
    {
        let (rows, coin, trace) = (Rc::clone(&rows), Coin::new(seed, 2), Rc::clone(&trace));
        sim.host(DB, move || database(Rc::clone(&rows), coin.clone(), Rc::clone(&trace)));
    }
    {
        let trace = Rc::clone(&trace);
        sim.host(JUDGE, move || judge_server(variant, Rc::clone(&trace)));
    }
    sim.client("client", client(Rc::clone(&seen), Rc::clone(&trace)));

    let plan = FaultPlan { crashable: vec![JUDGE], max_crashes: 1, links: vec![(JUDGE, DB), ("client", JUDGE)] };
    let got_200 = || seen.borrow().status.as_deref() == Some("200");
    let not_found = || {
        (got_200() && seen.borrow().found == Some(false)).then(|| {
            let detail = format!("POST /judge answered 200 but GET /judge/{JUDGMENT_ID} found no judgment");
            (GET_AFTER_200_FINDS_JUDGMENT.to_string(), detail)
        })
    };
    let lost = || {
        (got_200() && !rows.borrow().contains_key(&JUDGMENT_ID)).then(|| {
            let detail = format!("POST /judge answered 200 but judgment {JUDGMENT_ID} was never committed");
            (JUDGMENT_WITH_200_IS_STORED.to_string(), detail)
        })
    };
    let (steps, violation) = crate::drive(&mut sim, seed, &plan, &trace, not_found, || not_found().or_else(lost))?;
    drop(sim);
    let trace = Rc::try_unwrap(trace).map_err(|_| "the trace outlived the simulation".to_string())?;
    Ok(SeedRun { seed, steps, violation, trace: trace.lines.into_inner() })
}
