//! The lost-reply fault end to end: explored within its own budget, minimised, encoded in a token
//! that replays to the same violation, and shown in the timeline.
//!
//! The story: a payment handler inserts the charge in autocommit, and on any error retries it
//! once. With no unique key, a charge whose reply was lost (it committed, but the client saw a
//! timeout) is charged twice.

use racelab_harness::explore::{Bounds, ChoiceKind};
use racelab_harness::model::{Actor, Invariant, Model, Target, View};
use racelab_harness::op::{ConnId, OnConflict, Op, Outcome, Sql, Value};
use racelab_harness::run::{check, replay, Backend, Mode, Verdict};
use racelab_harness::sim::{Schema, TableDef, World};
use racelab_harness::token;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Charge {
    conn: ConnId,
    tries_left: u8,
    done: bool,
}

impl Actor for Charge {
    fn next_op(&self) -> Option<Op> {
        (!self.done).then(|| {
            let row = vec![Value::Int(1), Value::Int(100)];
            Op::sql("insert_charge", self.conn, Sql::Insert { table: "charges", row, on_conflict: OnConflict::Error })
        })
    }
    fn on_outcome(&mut self, outcome: &Outcome) {
        self.done = !outcome.is_err() || self.tries_left == 0;
        self.tries_left = self.tries_left.saturating_sub(1);
    }
}

struct Payment;

impl Model for Payment {
    type Actor = Charge;
    fn init(&self) -> (World, Vec<Charge>) {
        let table = TableDef { name: "charges", columns: vec!["order_id", "amount"], unique: vec![] };
        let mut world = World::new(Schema { tables: vec![table] }, 1);
        let conn = world.connect(0);
        (world, vec![Charge { conn, tries_left: 1, done: false }])
    }
    fn actor_names(&self) -> Vec<String> {
        vec!["payment handler".into()]
    }
    fn invariants(&self) -> Vec<Invariant<Charge>> {
        vec![Invariant::new("charged-once", |v: &View<Charge>| match v.world.db.committed_rows("charges").len() {
            0 | 1 => Ok(()),
            n => Err(format!("order 1 charged {n} times")),
        })]
    }
    fn targets(&self) -> Vec<Target<Charge>> {
        vec![Target::new("the order was charged", |v: &View<Charge>| !v.world.db.committed_rows("charges").is_empty())]
    }
}

#[test]
fn without_lost_replies_the_retry_is_harmless() {
    let checked = check("payment/retry", &Payment, &Mode::Exhaustive, &Bounds::default(), &Backend::Sim);
    assert_eq!(checked.verdict, Verdict::Holds);
}

#[test]
fn injected_errors_alone_never_charge_twice() {
    let bounds = Bounds { errors: 1, ..Bounds::default() };
    let checked = check("payment/retry", &Payment, &Mode::Exhaustive, &bounds, &Backend::Sim);
    assert_eq!(checked.verdict, Verdict::Holds, "an injected error means the insert did not run");
}

#[test]
fn a_lost_reply_charges_twice_and_the_token_replays_it() {
    let bounds = Bounds { lost_replies: 1, ..Bounds::default() };
    let checked = check("payment/retry", &Payment, &Mode::Exhaustive, &bounds, &Backend::Sim);
    assert_eq!(checked.verdict, Verdict::Violated);
    let cx = checked.counterexample.expect("a counterexample");
    assert_eq!(cx.invariant, "charged-once");
    assert_eq!(cx.steps, 2);
    let table = cx.timeline.render(200);
    assert!(
        table.contains("insert_charge(1, 100) → [1, 100] [reply lost: 57014 query_canceled]"),
        "the timeline shows the effect and what the client saw:\n{table}"
    );
    let schedule = token::decode("payment/retry", &cx.token).expect("a valid token");
    assert_eq!(schedule[0].kind, ChoiceKind::LostReply);
    let replayed = replay(&Payment, &bounds, &schedule, &Backend::Sim).expect("the token replays");
    assert_eq!(replayed.invariant.as_deref(), Some("charged-once"));
    // Without the budget the same schedule is not enabled: the fault is bounded like the others.
    assert!(replay(&Payment, &Bounds::default(), &schedule, &Backend::Sim).is_err());
}
