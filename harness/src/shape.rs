//! What a real database needs to know about a model before running it: its schema, how many
//! sessions it opens, and which columns hold text (the simulator's values are untyped).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::hash::BuildHasherDefault;

use crate::explore::{Bounds, State};
use crate::model::{Actor, Model};
use crate::op::{Col, Expr, OnConflict, OpKind, Sql, TableId, Value};
use crate::sim::Schema;

/// States visited to find the text columns; models are far smaller than this.
const MAX_STATES: usize = 200_000;

#[derive(Clone, Debug)]
pub struct DatabaseShape {
    pub schema: Schema,
    pub sessions: usize,
    pub text_columns: Vec<(TableId, Col)>,
}

/// The database shape of `model`, or `None` when it opens no database connection.
pub fn database_shape<M: Model>(model: &M, bounds: &Bounds) -> Option<DatabaseShape> {
    let init = State::initial(model);
    let schema = init.world.db.schema().clone();
    if init.world.connections() == 0 {
        return None;
    }
    let mut text: BTreeSet<(TableId, Col)> = BTreeSet::new();
    for t in &schema.tables {
        for row in init.world.db.committed_rows(t.name) {
            note_row(&mut text, &schema, t.name, &row);
        }
    }
    // Every op any reachable state can issue, breadth first and bounded.
    let mut seen: HashSet<u128, BuildHasherDefault<DefaultHasher>> = HashSet::default();
    let mut queue = VecDeque::from([init.clone()]);
    seen.insert(init.fingerprint());
    while let Some(state) = queue.pop_front() {
        for a in &state.actors {
            if let Some(OpKind::Sql { stmt, .. }) = a.next_op().map(|op| op.kind) {
                note_stmt(&mut text, &schema, &stmt);
            }
        }
        for choice in state.choices(bounds) {
            let mut next = state.clone();
            next.apply(choice, bounds);
            if seen.len() < MAX_STATES && seen.insert(next.fingerprint()) {
                queue.push_back(next);
            }
        }
    }
    Some(DatabaseShape { schema, sessions: init.world.connections(), text_columns: text.into_iter().collect() })
}

fn note_row(text: &mut BTreeSet<(TableId, Col)>, schema: &Schema, table: TableId, row: &[Value]) {
    let Some(t) = schema.tables.iter().find(|t| t.name == table) else { return };
    for (c, v) in t.columns.iter().zip(row) {
        if matches!(v, Value::Str(_)) {
            text.insert((table, c));
        }
    }
}

fn note_stmt(text: &mut BTreeSet<(TableId, Col)>, schema: &Schema, stmt: &Sql) {
    let mut note = |table: TableId, col: Col, v: &Value| {
        if matches!(v, Value::Str(_)) {
            text.insert((table, col));
        }
    };
    let sets = |table, set: &[(Col, Expr)], note: &mut dyn FnMut(TableId, Col, &Value)| {
        for (c, e) in set {
            if let Expr::Value(v) = e {
                note(table, c, v);
            }
        }
    };
    match stmt {
        Sql::Select { table, filter, .. } | Sql::Delete { table, filter } => {
            filter.iter().for_each(|(c, v)| note(table, c, v));
        }
        Sql::Update { table, filter, set } => {
            filter.iter().for_each(|(c, v)| note(table, c, v));
            sets(table, set, &mut note);
        }
        Sql::Insert { table, row, on_conflict } => {
            note_row(text, schema, table, row);
            if let OnConflict::DoUpdate { set, .. } = on_conflict {
                let mut note = |t: TableId, c: Col, v: &Value| {
                    if matches!(v, Value::Str(_)) {
                        text.insert((t, c));
                    }
                };
                sets(table, set, &mut note);
            }
        }
        _ => {}
    }
}
