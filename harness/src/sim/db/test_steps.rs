//! Steps the database's rule tests share: run a statement that completes, one that blocks,
//! collect a granted wait; and the tagged table most of them use.

use super::*;

/// `t(id, tag, n)` with a unique index on `tag`.
pub(super) fn tagged_schema() -> Schema {
    Schema {
        tables: vec![TableDef {
            name: "t",
            columns: vec!["id", "tag", "n"],
            unique: vec![UniqueIndex { name: "t_tag", columns: vec!["tag"], predicate: None }],
        }],
    }
}

/// `sessions` sessions and a committed row (1, a, 0) in [`tagged_schema`].
pub(super) fn tagged_db(sessions: usize) -> Db {
    let mut db = Db::new(tagged_schema());
    db.seed_row("t", row(1, "a", 0));
    for _ in 0..sessions {
        db.open_session();
    }
    db
}

pub(super) fn row(id: i64, tag: &'static str, n: i64) -> Row {
    vec![Value::Int(id), Value::Str(tag), Value::Int(n)]
}

/// Run `s` on session `c`; it must complete.
pub(super) fn run(db: &mut Db, c: ConnId, s: Sql) -> Outcome {
    match db.execute(c, &s, &mut Footprint::default()) {
        Applied::Done(o) => o,
        Applied::Blocked => panic!("{s:?} blocked"),
    }
}

/// Run `s` on session `c`; it must wait.
pub(super) fn block(db: &mut Db, c: ConnId, s: Sql) {
    assert_eq!(db.execute(c, &s, &mut Footprint::default()), Applied::Blocked, "{s:?} should block");
}

/// Step a ready session: its outcome, or `None` when it re-ran and waits again.
pub(super) fn take(db: &mut Db, c: ConnId) -> Option<Outcome> {
    assert!(db.is_ready(c), "session {c} is not ready");
    db.take_ready(c, &mut Footprint::default())
}
