//! A Notion-like page API: pages in one database, each with a title, queried by title and
//! created one at a time. Like Notion, it has no unique constraint: two creates with one title
//! make two pages. A query may fail when the model says so (the seed's `AttributeError` from
//! `client.databases.query()`), through the explorer's error fault.
//!
//! A create may carry an idempotency key: a second create with a key the API has seen returns
//! the first create's page instead of making a new one (`Idempotency-Key` as payment and storage
//! APIs offer it; Notion's public API does not, so a service that needs it puts it in front).

use std::fmt;

use crate::op::{ActorId, Applied, ErrorCode, Footprint, Outcome, Resource, Value};

use super::subsystem::{PartOp, Subsystem};

/// What `client.databases.query()` raised in the seed.
pub const QUERY_FAILED: ErrorCode = ErrorCode("AttributeError");

/// Upper bound on pages in one simulated database.
pub const MAX_PAGES: usize = 64;

/// Ops on [`Notion`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotionOp {
    /// `databases.query(filter={"title": {"equals": title}})`: the first page's id
    /// (`Value(Int)`) or `Value(Null)`. Fails only when `may_fail` and the explorer injects it.
    Query { title: Value, may_fail: bool },
    /// `pages.create(title)`: a new page's id, `Value(Int)`; with a key seen before, the page
    /// that key created.
    Create { title: Value, idempotency_key: Option<Value> },
    /// `pages.retrieve(page_id)`: `Bool`, whether the page exists.
    Retrieve { page: i64 },
}

impl fmt::Display for NotionOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotionOp::Query { title, .. } => write!(f, "({title})"),
            NotionOp::Create { title, idempotency_key: None } => write!(f, "({title})"),
            NotionOp::Create { title, idempotency_key: Some(k) } => write!(f, "({title}, key={k})"),
            NotionOp::Retrieve { page } => write!(f, "(page={page})"),
        }
    }
}

impl PartOp for NotionOp {
    /// Only a query may fail: the seed's failure is the query's, and a create that fails after
    /// taking effect is what a crash after it already explores.
    fn is_fallible(&self) -> bool {
        matches!(self, NotionOp::Query { may_fail: true, .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Page {
    id: i64,
    title: Value,
    key: Option<Value>,
}

/// The pages of one Notion database, in creation order; ids count from 1.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Notion {
    pages: Vec<Page>,
}

impl Notion {
    pub fn new() -> Notion {
        Notion::default()
    }

    /// Add a page at init (an area that exists before the scenario starts). Returns its id.
    pub fn seed_page(&mut self, title: Value) -> i64 {
        self.create(title, None)
    }

    /// The ids of the pages titled `title`, oldest first.
    pub fn pages_titled(&self, title: Value) -> Vec<i64> {
        self.pages.iter().filter(|p| p.title == title).map(|p| p.id).collect()
    }

    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    fn create(&mut self, title: Value, key: Option<Value>) -> i64 {
        if let Some(k) = key {
            if let Some(p) = self.pages.iter().find(|p| p.key == Some(k)) {
                return p.id;
            }
        }
        assert!(self.pages.len() < MAX_PAGES, "more than {MAX_PAGES} pages");
        let id = self.pages.len() as i64 + 1;
        self.pages.push(Page { id, title, key });
        id
    }
}

fn title_resource(title: Value) -> Resource {
    let key = match title {
        Value::Str(s) => s.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
        Value::Int(i) => i as u64,
        Value::Null => 0,
    };
    Resource::Custom(key.wrapping_mul(0x9e37_79b9).wrapping_add(5))
}

impl Subsystem for Notion {
    type Op = NotionOp;

    fn name(&self) -> &'static str {
        "notion"
    }

    fn apply(&mut self, _actor: ActorId, op: &NotionOp, fp: &mut Footprint) -> Applied {
        let outcome = match *op {
            NotionOp::Query { title, .. } => {
                fp.read(title_resource(title));
                Outcome::Value(self.pages_titled(title).first().map_or(Value::Null, |&id| Value::Int(id)))
            }
            NotionOp::Create { title, idempotency_key } => {
                // Page ids are handed out in creation order, so every create touches them all.
                fp.write(title_resource(title));
                fp.write(Resource::Custom(6));
                Outcome::Value(Value::Int(self.create(title, idempotency_key)))
            }
            NotionOp::Retrieve { page } => {
                fp.read(Resource::Custom(6));
                Outcome::Bool(self.pages.iter().any(|p| p.id == page))
            }
        };
        Applied::Done(outcome)
    }

    fn inject_error(&mut self, _actor: ActorId, _op: &NotionOp, _fp: &mut Footprint) -> Outcome {
        Outcome::Err(QUERY_FAILED)
    }

    fn describe(&self) -> Vec<String> {
        let pages: Vec<String> = self.pages.iter().map(|p| format!("{}={}", p.id, p.title)).collect();
        vec![format!("notion pages: {}", if pages.is_empty() { "none".into() } else { pages.join(", ") })]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: &mut Notion, op: NotionOp) -> Outcome {
        match n.apply(0, &op, &mut Footprint::default()) {
            Applied::Done(o) => o,
            Applied::Blocked => panic!("the page API never waits"),
        }
    }

    const HOME: Value = Value::Str("HOME");

    #[test]
    fn two_creates_with_one_title_make_two_pages_and_a_query_returns_the_first() {
        let mut n = Notion::new();
        let query = NotionOp::Query { title: HOME, may_fail: false };
        assert_eq!(run(&mut n, query), Outcome::Value(Value::Null));
        let create = NotionOp::Create { title: HOME, idempotency_key: None };
        assert_eq!(run(&mut n, create), Outcome::Value(Value::Int(1)));
        assert_eq!(run(&mut n, create), Outcome::Value(Value::Int(2)));
        assert_eq!(n.pages_titled(HOME), [1, 2]);
        assert_eq!(run(&mut n, query), Outcome::Value(Value::Int(1)));
        assert_eq!(run(&mut n, NotionOp::Retrieve { page: 2 }), Outcome::Bool(true));
        assert_eq!(run(&mut n, NotionOp::Retrieve { page: 3 }), Outcome::Bool(false));
        assert_eq!(n.describe(), ["notion pages: 1=HOME, 2=HOME"]);
    }

    #[test]
    fn a_repeated_idempotency_key_returns_the_first_page() {
        let mut n = Notion::new();
        let key = Some(Value::Str("area:HOME"));
        let create = NotionOp::Create { title: HOME, idempotency_key: key };
        assert_eq!(run(&mut n, create), Outcome::Value(Value::Int(1)));
        assert_eq!(run(&mut n, create), Outcome::Value(Value::Int(1)));
        let other = NotionOp::Create { title: HOME, idempotency_key: Some(Value::Str("other")) };
        assert_eq!(run(&mut n, other), Outcome::Value(Value::Int(2)), "a key makes nothing unique but itself");
        assert_eq!(n.page_count(), 2);
    }

    #[test]
    fn only_a_query_that_may_fail_is_fallible_and_it_fails_as_the_seed_did() {
        assert!(NotionOp::Query { title: HOME, may_fail: true }.is_fallible());
        assert!(!NotionOp::Query { title: HOME, may_fail: false }.is_fallible());
        assert!(!NotionOp::Create { title: HOME, idempotency_key: None }.is_fallible());
        let mut n = Notion::new();
        let op = NotionOp::Query { title: HOME, may_fail: true };
        assert_eq!(n.inject_error(0, &op, &mut Footprint::default()), Outcome::Err(QUERY_FAILED));
        assert_eq!(n.page_count(), 0);
    }

    #[test]
    fn queries_of_one_title_commute_and_a_create_conflicts_with_them() {
        let mut n = Notion::new();
        let (mut a, mut b, mut c) = (Footprint::default(), Footprint::default(), Footprint::default());
        n.apply(0, &NotionOp::Query { title: HOME, may_fail: false }, &mut a);
        n.apply(1, &NotionOp::Query { title: HOME, may_fail: false }, &mut b);
        n.apply(2, &NotionOp::Create { title: HOME, idempotency_key: None }, &mut c);
        assert!(!a.conflicts(&b));
        assert!(a.conflicts(&c) && c.conflicts(&b));
    }
}
