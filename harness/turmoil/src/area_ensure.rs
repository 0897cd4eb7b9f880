//! `area-ensure` under turmoil: seed 001's `ensure_area_exists` as the async code of a service
//! scaled out to Cloud Run instances, over a Notion API and a Firestore store on hosts of their
//! own, fed by Pub/Sub push deliveries. The story, the variants and the invariant are the
//! simulator model's (`racelab_models::area_ensure`).
//!
//! Hosts: `notion` (pages, no unique title; a query raises `AttributeError` at random when the
//! lookup may fail), `firestore` (documents with versions; a commit names the version its
//! transaction read and is `ABORTED` if it changed), `instance-1..n` (each serving pushes, one
//! tokio task per message, with its own in-process lock table), and the `pubsub` client, which
//! pushes every message at once and redelivers one that was not acknowledged (a 500, a reset,
//! a timeout) up to [`MAX_DELIVERIES`] times.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use racelab_harness::catalogue::Params;
use racelab_models::area_ensure::{Variant, AREA_KEY_NAME, AREA_NAME, NO_TWO_PAGES_PER_AREA};
use tokio::sync::Mutex;

use crate::rpc;
use crate::{Coin, FaultPlan, SeedRun, Trace};

const NOTION: &str = "notion";
const FIRESTORE: &str = "firestore";
/// Pub/Sub's delivery attempts per message in this scenario.
pub const MAX_DELIVERIES: u32 = 5;
/// How often a Notion query raises when the lookup may fail.
const QUERY_FAILURE_RATE: f64 = 0.2;

/// The scenario's variant, from its id.
pub fn variant(id: &str) -> Option<Variant> {
    Some(match id.strip_prefix("area-ensure/")? {
        "swallow-error" => Variant::SwallowError,
        "check-then-create" => Variant::CheckThenCreate,
        "in-process-lock" => Variant::InProcessLock,
        "transactional-cache" => Variant::TransactionalCache,
        "idempotency-key" => Variant::IdempotencyKey,
        _ => return None,
    })
}

/// The scenario's parameters, as the simulator model reads them.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub variant: Variant,
    pub instances: usize,
    pub workers: usize,
    pub lookup_may_fail: bool,
    pub area_exists: bool,
}

impl Config {
    pub fn from_params(variant: Variant, p: &Params) -> Result<Config, String> {
        Ok(Config {
            variant,
            instances: p.count("instances", 2, 1, 4)?,
            workers: p.count("workers", 2, 1, 4)?,
            lookup_may_fail: p.bool("lookup_may_fail", true)?,
            area_exists: p.bool("area_exists", false)?,
        })
    }
}

type ApiError = String;

// ---------------------------------------------------------------------------------------------
// The service: what each instance runs.

/// The service's view of Notion: `find_area_by_name`, `create_area_page`, `pages.retrieve`.
struct NotionClient;

impl NotionClient {
    async fn find_area_by_name(&self, area_name: &str) -> Result<Option<i64>, ApiError> {
        let answer = rpc::call(NOTION, &format!("QUERY {area_name}")).await.map_err(|e| e.to_string())?;
        match answer.split_once(' ') {
            Some(("PAGE", id)) => id.parse().map(Some).map_err(|_| answer.clone()),
            _ if answer == "NONE" => Ok(None),
            _ => Err(answer),
        }
    }

    async fn create_area_page(&self, area_name: &str, idempotency_key: Option<&str>) -> Result<i64, ApiError> {
        let request = format!("CREATE {area_name} {}", idempotency_key.unwrap_or("-"));
        let answer = rpc::call(NOTION, &request).await.map_err(|e| e.to_string())?;
        answer.strip_prefix("PAGE ").and_then(|id| id.parse().ok()).ok_or(answer)
    }

    async fn page_exists(&self, page_id: i64) -> Result<bool, ApiError> {
        Ok(rpc::call(NOTION, &format!("RETRIEVE {page_id}")).await.map_err(|e| e.to_string())? == "YES")
    }
}

/// A Firestore transaction as the client library keeps it: the version each read saw, and the
/// writes to send with the commit.
struct Transaction {
    read: Option<(String, u64)>,
    write: Option<(String, i64)>,
}

enum CommitError {
    Aborted,
    Failed(ApiError),
}

impl Transaction {
    fn new() -> Transaction {
        Transaction { read: None, write: None }
    }

    async fn get(&mut self, doc: &str) -> Result<Option<i64>, ApiError> {
        let answer = rpc::call(FIRESTORE, &format!("GET {doc}")).await.map_err(|e| e.to_string())?;
        let fields: Vec<&str> = answer.split(' ').collect();
        let version = fields.get(1).and_then(|v| v.parse().ok()).ok_or_else(|| answer.clone())?;
        self.read = Some((doc.to_string(), version));
        Ok(fields.get(2).and_then(|p| p.parse().ok()))
    }

    fn set(&mut self, doc: &str, page_id: i64) {
        self.write = Some((doc.to_string(), page_id));
    }

    async fn commit(self) -> Result<(), CommitError> {
        let (doc, version) = self.read.expect("this service's transactions read before they commit");
        let page = self.write.map_or("-".to_string(), |(_, p)| p.to_string());
        let answer = rpc::call(FIRESTORE, &format!("COMMIT {doc} {version} {page}"))
            .await
            .map_err(|e| CommitError::Failed(e.to_string()))?;
        match answer.as_str() {
            "OK" => Ok(()),
            "ABORTED" => Err(CommitError::Aborted),
            _ => Err(CommitError::Failed(answer)),
        }
    }
}

/// What one instance process holds: its lock table is lost when the instance dies.
struct Instance {
    variant: Variant,
    notion: NotionClient,
    area_locks: Mutex<BTreeMap<String, Rc<Mutex<()>>>>,
    trace: Rc<Trace>,
}

/// The seed's `NotionClient`, as one message's task in an instance uses it.
struct AreaService {
    instance: Rc<Instance>,
    who: String,
}

impl AreaService {
    async fn ensure_area_exists(&self, area_name: &str) -> Result<i64, ApiError> {
        match self.instance.variant {
            Variant::SwallowError => {
                let existing = self.instance.notion.find_area_by_name(area_name).await.unwrap_or_else(|e| {
                    self.instance
                        .trace
                        .log(&self.who, format!("find_area_by_name({area_name}) raised {e}; logged, None"));
                    None
                });
                if let Some(id) = existing {
                    return Ok(id);
                }
                self.create(area_name, None).await
            }
            Variant::CheckThenCreate => self.find_then_create(area_name, None).await,
            Variant::InProcessLock => {
                let lock = self.get_area_lock(area_name).await;
                let _held = lock.lock().await;
                self.find_then_create(area_name, None).await
            }
            Variant::TransactionalCache => self.ensure_in_transaction(area_name).await,
            Variant::IdempotencyKey => self.find_then_create(area_name, Some(AREA_KEY_NAME)).await,
        }
    }

    async fn find_then_create(&self, area_name: &str, key: Option<&str>) -> Result<i64, ApiError> {
        if let Some(id) = self.find(area_name).await? {
            return Ok(id);
        }
        self.create(area_name, key).await
    }

    async fn get_area_lock(&self, area_name: &str) -> Rc<Mutex<()>> {
        let mut locks = self.instance.area_locks.lock().await;
        Rc::clone(locks.entry(area_name.to_string()).or_default())
    }

    /// Option 2B: `@firestore.async_transactional`, re-run on `ABORTED` as the library does.
    async fn ensure_in_transaction(&self, area_name: &str) -> Result<i64, ApiError> {
        let doc = format!("area_cache/{area_name}");
        for _attempt in 0..racelab_harness::sim::firestore::MAX_ATTEMPTS {
            let mut transaction = Transaction::new();
            let page_id = self.create_or_get_area(&mut transaction, &doc, area_name).await?;
            match transaction.commit().await {
                Ok(()) => return Ok(page_id),
                Err(CommitError::Aborted) => {
                    self.instance.trace.log(&self.who, "commit → ABORTED; the function runs again")
                }
                Err(CommitError::Failed(e)) => return Err(e),
            }
        }
        Err("transaction aborted at every attempt".into())
    }

    async fn create_or_get_area(&self, tx: &mut Transaction, doc: &str, area_name: &str) -> Result<i64, ApiError> {
        let cached = tx.get(doc).await;
        let shown = match &cached {
            Ok(Some(id)) => format!("page {id}"),
            Ok(None) => "missing".to_string(),
            Err(e) => format!("raised {e}"),
        };
        self.instance.trace.log(&self.who, format!("doc_ref.get({doc}) → {shown}"));
        if let Some(cached) = cached? {
            if self.instance.notion.page_exists(cached).await.unwrap_or(false) {
                return Ok(cached);
            }
        }
        let page_id = match self.find(area_name).await? {
            Some(id) => id,
            None => self.create(area_name, None).await?,
        };
        tx.set(doc, page_id);
        Ok(page_id)
    }

    async fn find(&self, area_name: &str) -> Result<Option<i64>, ApiError> {
        let found = self.instance.notion.find_area_by_name(area_name).await;
        let shown = match &found {
            Ok(Some(id)) => format!("page {id}"),
            Ok(None) => "None".to_string(),
            Err(e) => format!("raised {e}"),
        };
        self.instance.trace.log(&self.who, format!("find_area_by_name({area_name}) → {shown}"));
        found
    }

    async fn create(&self, area_name: &str, key: Option<&str>) -> Result<i64, ApiError> {
        let created = self.instance.notion.create_area_page(area_name, key).await;
        let shown = match &created {
            Ok(id) => format!("page {id}"),
            Err(e) => format!("raised {e}"),
        };
        let key = key.map_or(String::new(), |k| format!(", idempotency_key={k}"));
        self.instance.trace.log(&self.who, format!("create_area_page({area_name}{key}) → {shown}"));
        created
    }
}

/// An instance: a push endpoint handling each message in a task of its own.
async fn instance(name: &'static str, variant: Variant, trace: Rc<Trace>) -> turmoil::Result {
    let instance = Rc::new(Instance { variant, notion: NotionClient, area_locks: Mutex::default(), trace });
    rpc::serve(move |request: String| {
        let instance = Rc::clone(&instance);
        async move {
            let words: Vec<&str> = request.split(' ').collect();
            let ["PUSH", message, area_name] = words.as_slice() else { return "400".to_string() };
            let service = AreaService { instance, who: format!("{name}/message {message}") };
            match service.ensure_area_exists(area_name).await {
                Ok(page_id) => format!("200 {page_id}"),
                Err(e) => format!("500 {e}"),
            }
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// The services it depends on.

#[derive(Default)]
struct Pages {
    /// (id, title, idempotency key), ids from 1.
    pages: Vec<(i64, String, Option<String>)>,
}

impl Pages {
    fn titled(&self, title: &str) -> Vec<i64> {
        self.pages.iter().filter(|p| p.1 == title).map(|p| p.0).collect()
    }

    fn create(&mut self, title: &str, key: Option<&str>) -> i64 {
        if let Some(page) = key.and_then(|k| self.pages.iter().find(|p| p.2.as_deref() == Some(k))) {
            return page.0;
        }
        let id = self.pages.len() as i64 + 1;
        self.pages.push((id, title.to_string(), key.map(str::to_string)));
        id
    }
}

async fn notion_api(pages: Rc<RefCell<Pages>>, lookup_may_fail: bool, coin: Coin, trace: Rc<Trace>) -> turmoil::Result {
    rpc::serve(move |request: String| {
        let mut pages = pages.borrow_mut();
        let words: Vec<&str> = request.split(' ').collect();
        let answer = match words.as_slice() {
            ["QUERY", _] if lookup_may_fail && coin.flip(QUERY_FAILURE_RATE) => "AttributeError".to_string(),
            ["QUERY", title] => pages.titled(title).first().map_or("NONE".to_string(), |id| format!("PAGE {id}")),
            ["CREATE", title, key] => {
                let id = pages.create(title, Some(*key).filter(|k| *k != "-"));
                trace.log(NOTION, format!("pages.create({title}) → page {id}"));
                format!("PAGE {id}")
            }
            ["RETRIEVE", id] => {
                let exists = pages.pages.iter().any(|p| id.parse() == Ok(p.0));
                (if exists { "YES" } else { "NO" }).to_string()
            }
            _ => "400".to_string(),
        };
        std::future::ready(answer)
    })
    .await
}

async fn firestore(docs: Rc<RefCell<BTreeMap<String, (u64, i64)>>>) -> turmoil::Result {
    rpc::serve(move |request: String| {
        let mut docs = docs.borrow_mut();
        let words: Vec<&str> = request.split(' ').collect();
        let answer = match words.as_slice() {
            ["GET", doc] => match docs.get(*doc) {
                Some((version, page)) => format!("DOC {version} {page}"),
                None => "MISSING 0".to_string(),
            },
            ["COMMIT", doc, read_version, page] => {
                let current = docs.get(*doc).map_or(0, |d| d.0);
                if read_version.parse() != Ok(current) {
                    "ABORTED".to_string()
                } else {
                    if let Ok(page) = page.parse() {
                        docs.insert(doc.to_string(), (current + 1, page));
                    }
                    "OK".to_string()
                }
            }
            _ => "400".to_string(),
        };
        std::future::ready(answer)
    })
    .await
}

/// Pub/Sub: push every message at once; redeliver what was not acknowledged, with backoff.
async fn pubsub(messages: Vec<&'static str>, trace: Rc<Trace>) -> turmoil::Result {
    let deliveries = messages.into_iter().enumerate().map(|(m, endpoint)| {
        let trace = Rc::clone(&trace);
        tokio::task::spawn_local(async move {
            for attempt in 1..=MAX_DELIVERIES {
                let answer = rpc::call(endpoint, &format!("PUSH {m} {AREA_NAME}")).await;
                let shown = answer.as_ref().map_or_else(|e| format!("{} ({e})", e.kind()), String::clone);
                trace.log("pubsub", format!("push message {m} to {endpoint} → {shown}"));
                if answer.as_deref().is_ok_and(|a| a.starts_with("200")) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
        })
    });
    for delivery in deliveries.collect::<Vec<_>>() {
        delivery.await?;
    }
    Ok(())
}

const INSTANCES: [&str; 4] = ["instance-1", "instance-2", "instance-3", "instance-4"];

/// Run one seed.
pub fn run(config: &Config, seed: u64) -> Result<SeedRun, String> {
    let trace = Rc::new(Trace::default());
    let pages = Rc::new(RefCell::new(Pages::default()));
    if config.area_exists {
        pages.borrow_mut().create(AREA_NAME, None);
    }
    let docs = Rc::new(RefCell::new(BTreeMap::new()));
    let mut sim = crate::simulation(seed);
    {
        let (pages, coin, trace) = (Rc::clone(&pages), Coin::new(seed, 1), Rc::clone(&trace));
        let may_fail = config.lookup_may_fail;
        sim.host(NOTION, move || notion_api(Rc::clone(&pages), may_fail, coin.clone(), Rc::clone(&trace)));
    }
    {
        let docs = Rc::clone(&docs);
        sim.host(FIRESTORE, move || firestore(Rc::clone(&docs)));
    }
    let instances = &INSTANCES[..config.instances];
    for &name in instances {
        let (trace, variant) = (Rc::clone(&trace), config.variant);
        sim.host(name, move || instance(name, variant, Rc::clone(&trace)));
    }
    let messages = (0..config.instances * config.workers).map(|m| instances[m / config.workers]).collect();
    sim.client("pubsub", pubsub(messages, Rc::clone(&trace)));

    let plan = FaultPlan {
        crashable: instances.to_vec(),
        max_crashes: 1,
        links: instances.iter().flat_map(|&i| [(i, NOTION), (i, FIRESTORE)]).collect(),
    };
    let duplicate = || {
        let ids = pages.borrow().titled(AREA_NAME);
        (ids.len() > 1).then(|| {
            let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
            (
                NO_TWO_PAGES_PER_AREA.to_string(),
                format!("{} pages titled {AREA_NAME}: ids {}", ids.len(), ids.join(", ")),
            )
        })
    };
    let (steps, violation) = crate::drive(&mut sim, seed, &plan, &trace, duplicate, duplicate)?;
    drop(sim);
    let trace = Rc::try_unwrap(trace).map_err(|_| "the trace outlived the simulation".to_string())?;
    Ok(SeedRun { seed, steps, violation, trace: trace.lines.into_inner() })
}
