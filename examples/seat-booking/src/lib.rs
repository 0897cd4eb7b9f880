//! # `seat-booking`: two customers book the last seat
//!
//! An example of a race modelled outside racelab's catalogue, with its public API only. The
//! walk-through in racelab's `docs/writing-a-model.md` follows this file.
//!
//! A booking service looks the seat up, and if nobody holds it, writes the customer's name into
//! it and tells the customer "booked":
//!
//! ```python
//! seat = db.fetch_one("SELECT * FROM seats WHERE id = $1", seat_id)
//! if seat.booked_by == "nobody":
//!     db.execute("UPDATE seats SET booked_by = $1 WHERE id = $2", customer, seat_id)
//!     return "booked"
//! ```
//!
//! Two customers can both read "nobody" before either writes; both are told "booked", and the
//! seat names only the later one.
//!
//! ## Variants
//!
//! - `check-then-book` (as found): look up, then update unconditionally. Violated in 4 steps.
//! - `conditional-update`: `UPDATE seats SET booked_by = $1 WHERE id = $2 AND booked_by =
//!   'nobody' RETURNING *`, and "booked" only when it returned the row. At READ COMMITTED the
//!   second UPDATE waits for the first to commit, re-reads the row, finds it taken, and returns
//!   nothing. Holds, explored completely with every customer and one crash.
//!
//! ## Invariant
//!
//! `no-overbooking`: no more customers are told "booked" than there are seats, and every
//! customer told "booked" is the one a committed seat names. It reads the model's `seats`
//! parameter.

use racelab_harness::catalogue::{DynModel, Params, RaceDef, VariantDef};
use racelab_harness::model::{Actor, Invariant, Model, Target, View};
use racelab_harness::op::{ConnId, Expr, Op, Outcome, Sql, Value, MAX_ACTORS};
use racelab_harness::sim::{Schema, TableDef, World};

const SEATS: &str = "seats";
const NOBODY: Value = Value::Str("nobody");
pub const NO_OVERBOOKING: &str = "no-overbooking";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    CheckThenBook,
    ConditionalUpdate,
}

/// Where a booking request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pc {
    /// Look seat `n` up (check-then-book).
    Find(i64),
    /// Write the customer into seat `n`: unconditionally, or only if it is free.
    Book(i64),
    Done,
}

/// What the customer was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Answer {
    Booked(i64),
    SoldOut,
    Failed,
}

/// One booking request: the sans-IO state machine. It names its next statement and consumes
/// the statement's outcome; it never talks to a database itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Booking {
    variant: Variant,
    customer: &'static str,
    seats: i64,
    conn: ConnId,
    pc: Pc,
    pub answer: Option<Answer>,
}

impl Actor for Booking {
    fn next_op(&self) -> Option<Op> {
        let seat = |n: i64| vec![("id", Value::Int(n))];
        let me = Value::Str(self.customer);
        let op = match (self.variant, self.pc) {
            (_, Pc::Done) => return None,
            (_, Pc::Find(n)) => {
                Op::sql("find_seat", self.conn, Sql::Select { table: SEATS, filter: seat(n), lock: None })
            }
            (Variant::CheckThenBook, Pc::Book(n)) => Op::sql(
                "book_seat",
                self.conn,
                Sql::Update { table: SEATS, filter: seat(n), set: vec![("booked_by", Expr::Value(me))] },
            ),
            (Variant::ConditionalUpdate, Pc::Book(n)) => {
                let mut filter = seat(n);
                filter.push(("booked_by", NOBODY));
                let set = vec![("booked_by", Expr::Value(me))];
                Op::sql("book_seat_if_free", self.conn, Sql::Update { table: SEATS, filter, set })
            }
        };
        Some(op)
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        self.pc = match (self.pc, outcome) {
            (_, Outcome::Err(_)) => self.answer(Answer::Failed),
            (Pc::Find(n), found) => match found.rows().first().and_then(|row| row.get(1)) {
                Some(&NOBODY) => Pc::Book(n),
                _ => self.next_seat(n),
            },
            (Pc::Book(n), written) if written.rows().len() == 1 => self.answer(Answer::Booked(n)),
            // Only the conditional update returns no row: someone took the seat first.
            (Pc::Book(n), _) => self.next_seat(n),
            (Pc::Done, _) => Pc::Done,
        };
    }
}

impl Booking {
    fn answer(&mut self, answer: Answer) -> Pc {
        self.answer = Some(answer);
        Pc::Done
    }

    /// Try the next seat, or tell the customer the flight is sold out.
    fn next_seat(&mut self, n: i64) -> Pc {
        if n < self.seats {
            self.first_try(n + 1)
        } else {
            self.answer(Answer::SoldOut)
        }
    }

    fn first_try(&self, n: i64) -> Pc {
        match self.variant {
            Variant::CheckThenBook => Pc::Find(n),
            Variant::ConditionalUpdate => Pc::Book(n),
        }
    }
}

/// `customers` concurrent bookings on a flight with `seats` free seats.
pub struct SeatBooking {
    pub variant: Variant,
    pub customers: usize,
    pub seats: i64,
}

impl Model for SeatBooking {
    type Actor = Booking;

    fn init(&self) -> (World, Vec<Booking>) {
        let schema =
            Schema { tables: vec![TableDef { name: SEATS, columns: vec!["id", "booked_by"], unique: vec![] }] };
        let mut world = World::new(schema, self.customers);
        for n in 1..=self.seats {
            world.db.seed_row(SEATS, vec![Value::Int(n), NOBODY]);
        }
        let actors = (0..self.customers)
            .map(|i| {
                let mut booking = Booking {
                    variant: self.variant,
                    customer: racelab_harness::intern(format!("customer-{}", i + 1)),
                    seats: self.seats,
                    conn: world.connect(i),
                    pc: Pc::Done,
                    answer: None,
                };
                booking.pc = booking.first_try(1);
                booking
            })
            .collect();
        (world, actors)
    }

    fn actor_names(&self) -> Vec<String> {
        (1..=self.customers).map(|i| format!("customer {i}")).collect()
    }

    fn invariants(&self) -> Vec<Invariant<Booking>> {
        let seats = self.seats;
        vec![Invariant::new(NO_OVERBOOKING, move |v: &View<Booking>| {
            let booked: Vec<&Booking> =
                v.actors.iter().filter(|a| matches!(a.answer, Some(Answer::Booked(_)))).collect();
            if booked.len() as i64 > seats {
                return Err(format!("{} customers were told \"booked\" for {seats} seat(s)", booked.len()));
            }
            let rows = v.world.db.committed_rows(SEATS);
            for a in booked {
                let Some(Answer::Booked(n)) = a.answer else { continue };
                let holder = rows.iter().find(|r| r[0] == Value::Int(n)).map(|r| r[1]);
                if holder != Some(Value::Str(a.customer)) {
                    let shown = holder.map_or("no row".to_string(), |h| h.to_string());
                    return Err(format!("{} was told \"booked\" but seat {n} names {shown}", a.customer));
                }
            }
            Ok(())
        })]
    }

    fn targets(&self) -> Vec<Target<Booking>> {
        let customers = self.customers as i64;
        let seats = self.seats;
        vec![Target::new("every seat booked and every other customer turned away", move |v: &View<Booking>| {
            let booked = v.actors.iter().filter(|a| matches!(a.answer, Some(Answer::Booked(_)))).count() as i64;
            let away = v.actors.iter().filter(|a| a.answer == Some(Answer::SoldOut)).count() as i64;
            booked == seats.min(customers) && away == customers - booked
        })]
    }
}

fn build(params: &Params, variant: Variant) -> Result<Box<dyn DynModel>, String> {
    let customers = params.workers("customers", 2, 1, MAX_ACTORS)?;
    let seats = params.int("seats", 1, 1, 8)?;
    Ok(Box::new(SeatBooking { variant, customers, seats }))
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "seat-booking",
        seed: "(an example outside the catalogue)",
        passage: "if seat.booked_by == \"nobody\": UPDATE seats SET booked_by = $1 WHERE id = $2",
        invariant: "No more customers are told \"booked\" than there are seats, and each is the one its seat names.",
        variants: vec![
            VariantDef {
                id: "check-then-book",
                summary: "look the seat up, then update it unconditionally (as found)",
                build: |p| build(p, Variant::CheckThenBook),
            },
            VariantDef {
                id: "conditional-update",
                summary: "UPDATE … WHERE id = $2 AND booked_by = 'nobody' RETURNING *; booked only if a row came back",
                build: |p| build(p, Variant::ConditionalUpdate),
            },
        ],
    }
}

/// This crate's catalogue, for [`racelab::main`].
pub fn catalogue() -> Vec<RaceDef> {
    vec![race()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_harness::explore::shortest::replay;
    use racelab_harness::explore::Bounds;
    use racelab_harness::testing::{steps, texts};

    #[test]
    fn both_customers_read_nobody_and_both_are_told_booked() {
        let model = SeatBooking { variant: Variant::CheckThenBook, customers: 2, seats: 1 };
        let r = replay(&model, &Bounds::default(), &steps(&[0, 1, 0, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "find_seat(id=1) → [1, nobody]",
                "find_seat(id=1) → [1, nobody]",
                "book_seat(id=1; booked_by=customer-1) → [1, customer-1]",
                "book_seat(id=1; booked_by=customer-2) → [1, customer-2]",
            ]
        );
        assert_eq!(r.violation.unwrap().invariant, NO_OVERBOOKING);
    }
}
