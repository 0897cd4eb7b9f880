//! What a real database needs to know about a model before running it: its schema, how many
//! sessions it opens, and which columns hold text (the simulator's values are untyped).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::hash::BuildHasherDefault;

use crate::explore::{Bounds, State};
use crate::model::{Actor, Model};
use crate::op::{Col, Expr, OnConflict, OpKind, Sql, SqlOp, TableId, Value};
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
    let sessions = init.world.connections();
    if schema.tables.is_empty() {
        // Advisory locks only: there are no columns to type.
        return Some(DatabaseShape { schema, sessions, text_columns: Vec::new() });
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
            if let Some(OpKind::Sql(SqlOp { stmt, .. })) = a.next_op().map(|op| op.kind) {
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
    Some(DatabaseShape { schema, sessions, text_columns: text.into_iter().collect() })
}

/// Record the columns of `table` that receive a string value anywhere in `pairs`.
fn note_text<'a>(
    text: &mut BTreeSet<(TableId, Col)>,
    table: TableId,
    pairs: impl IntoIterator<Item = (Col, &'a Value)>,
) {
    text.extend(pairs.into_iter().filter(|(_, v)| matches!(v, Value::Str(_))).map(|(c, _)| (table, c)));
}

fn note_row(text: &mut BTreeSet<(TableId, Col)>, schema: &Schema, table: TableId, row: &[Value]) {
    let Some(t) = schema.tables.iter().find(|t| t.name == table) else { return };
    note_text(text, table, t.columns.iter().copied().zip(row));
}

/// The constants of `SET col = value`; other expressions carry no new value.
fn set_values(set: &[(Col, Expr)]) -> impl Iterator<Item = (Col, &Value)> {
    set.iter().filter_map(|(c, e)| match e {
        Expr::Value(v) => Some((*c, v)),
        Expr::Add(..) | Expr::Excluded(_) => None,
    })
}

fn note_stmt(text: &mut BTreeSet<(TableId, Col)>, schema: &Schema, stmt: &Sql) {
    match stmt {
        Sql::Select { table, filter, .. } | Sql::Delete { table, filter } => {
            note_text(text, table, filter.iter().map(|(c, v)| (*c, v)));
        }
        Sql::Update { table, filter, set } => {
            note_text(text, table, filter.iter().map(|(c, v)| (*c, v)));
            note_text(text, table, set_values(set));
        }
        Sql::Insert { table, row, on_conflict } => {
            note_row(text, schema, table, row);
            if let OnConflict::DoUpdate { set, .. } = on_conflict {
                note_text(text, table, set_values(set));
            }
        }
        _ => {}
    }
}
