//! Symmetry: identical actors are interchangeable, so a state and the same state with two
//! identical actors swapped have the same future up to that swap. The exhaustive search keys
//! its visited set by a canonical fingerprint (identical actors sorted, and everything they own
//! renamed to match) and so explores one state of each class instead of up to n! of them.
//!
//! A model opts in with [`crate::model::Model::symmetry`]: it names groups of identical actors
//! (same code, same parameters up to their id) and the values each actor owns (its request id,
//! its content string), which the world renames in rows, statements and outcomes. The actor
//! renames what it holds itself ([`crate::model::Actor::rename`]): its connection, its own
//! values. Every subsystem of the world must be able to rename what it keeps about actors
//! ([`crate::sim::World::renamable`]); one that cannot turns the reduction off, with the reason
//! in the result, so a search never silently reduces by a symmetry it cannot apply.
//!
//! The search still walks concrete states: only the visited-set key is canonical. So every
//! counterexample is a real schedule and its token replays as it is.
//!
//! Soundness needs the model's properties to be symmetric too (they must not single out one
//! of the identical actors). `harness/tests/symmetry.rs` checks reduced against unreduced
//! search on every model that declares a symmetry, and on random small programs.

use crate::op::{ActorId, ConnId, Outcome, Row, Sql, Value, MAX_ACTORS};

/// Groups of interchangeable actors, and what each actor owns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Symmetry {
    /// Disjoint sets of actor indices, each in increasing order; within one, any permutation
    /// maps reachable states to reachable states and keeps every property's verdict.
    pub groups: Vec<Vec<ActorId>>,
    /// For each actor (indexed by actor), the values that name it, in the same order for every
    /// actor of a group: actor `a`'s `k`-th value becomes actor `b`'s `k`-th when `a` is renamed
    /// to `b`. Empty when the actors own no values.
    pub owned_values: Vec<Vec<Value>>,
    /// Pairs `(leader, follower)` of indices into `groups`, of equal length: the follower group
    /// is permuted exactly as the leader, so that its `k`-th member goes wherever the leader's
    /// `k`-th goes. For units of several actors: a hook and the daemon it spawns.
    pub coupled: Vec<(usize, usize)>,
    /// The actors rename the pool slots and pids they remember ([`Renaming::slot`],
    /// [`Renaming::pid`]), so the world may renumber slots and processes to follow the actors
    /// that hold them. Without it, a world with processes is not renamed at all.
    pub renumbers: bool,
}

impl Symmetry {
    /// One group of the actors in `group`, owning `owned_values[a]` each.
    pub fn group(group: impl IntoIterator<Item = ActorId>, owned_values: Vec<Vec<Value>>) -> Symmetry {
        Symmetry { groups: vec![group.into_iter().collect()], owned_values, ..Symmetry::default() }
    }

    /// Interchangeable units of several actors each: `units[k][i]` is the `i`-th actor of unit
    /// `k`; every unit has the same number of actors, and a renaming moves whole units.
    pub fn units(units: &[Vec<ActorId>], owned_values: Vec<Vec<Value>>) -> Symmetry {
        let width = units.first().map_or(0, Vec::len);
        assert!(units.iter().all(|u| u.len() == width), "units of one width");
        let groups: Vec<Vec<ActorId>> = (0..width).map(|i| units.iter().map(|u| u[i]).collect()).collect();
        let coupled = (1..width).map(|i| (0, i)).collect();
        Symmetry { groups, owned_values, coupled, ..Symmetry::default() }
    }

    /// The same symmetry, its actors renaming the slots and pids they hold.
    pub fn renumbering(self) -> Symmetry {
        Symmetry { renumbers: true, ..self }
    }

    /// The groups coupled with group `g` (those that follow it, or that it follows, and their
    /// followers), `g` first.
    pub(crate) fn parallel(&self, g: usize) -> Vec<usize> {
        let leader = self.coupled.iter().find(|&&(_, f)| f == g).map_or(g, |&(l, _)| l);
        let mut all = vec![leader];
        all.extend(self.coupled.iter().filter(|&&(l, _)| l == leader).map(|&(_, f)| f));
        all.sort_by_key(|&h| h != g);
        all
    }

    /// The groups no other group follows: the ones a renaming permutes freely.
    pub fn leaders(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.groups.len()).filter(|g| !self.coupled.iter().any(|&(_, f)| f == *g))
    }

    /// Each group sorted as one permutation: `sort_keys[a]` orders the members of each leading
    /// group together with their counterparts in the groups that follow it (ties keep their
    /// index order), and the `k`-th smallest moves to the group's `k`-th index, its followers'
    /// counterparts with it; actors outside every group stay put.
    pub fn sorting_permutation<K: Ord + Copy + Default>(&self, actors: usize, sort_keys: &[K]) -> Vec<ActorId> {
        sort_units(&self.unit_lanes(), actors, sort_keys)
    }

    /// For each leading group, its lanes: its members, then those of each group that follows
    /// it, so that `lanes[i][k]` is the `i`-th actor of the `k`-th unit.
    pub(crate) fn unit_lanes(&self) -> Vec<Vec<Vec<ActorId>>> {
        self.leaders().map(|g| self.parallel(g).into_iter().map(|h| self.groups[h].clone()).collect()).collect()
    }

    /// Every renaming the symmetry allows, as permutations of `actors` actors: the leading
    /// groups' orderings, their followers moved alike. Factorial: for small groups only.
    pub fn all_permutations(&self, actors: usize) -> Vec<Vec<ActorId>> {
        let mut perms: Vec<Vec<usize>> = vec![(0..actors).collect()];
        for g in self.leaders() {
            let lanes = self.parallel(g);
            let mut next = Vec::new();
            for p in &perms {
                for order in permutations(self.groups[g].len()) {
                    let mut q = p.clone();
                    for &h in &lanes {
                        let group = &self.groups[h];
                        for (k, &o) in order.iter().enumerate() {
                            q[group[k]] = group[o];
                        }
                    }
                    next.push(q);
                }
            }
            perms = next;
        }
        perms
    }

    /// Is the declaration well formed for `actors` actors? Groups disjoint and in range, two
    /// or more members each, owned values the same in number within a group and all distinct,
    /// coupled groups of one length, each following one leader that follows none.
    pub fn validate(&self, actors: usize) -> Result<(), String> {
        let mut seen = vec![false; actors];
        for g in &self.groups {
            if g.len() < 2 || g.iter().any(|&a| a >= actors) || !g.windows(2).all(|w| w[0] < w[1]) {
                return Err(format!("symmetry group {g:?} must name two or more of the {actors} actors, in order"));
            }
            for &a in g {
                if std::mem::replace(&mut seen[a], true) {
                    return Err(format!("actor {a} is in two symmetry groups"));
                }
                let kinds = |a: usize| {
                    let owned = self.owned_values.get(a).map_or(&[][..], Vec::as_slice);
                    owned.iter().map(std::mem::discriminant).collect::<Vec<_>>()
                };
                if kinds(a) != kinds(g[0]) {
                    return Err(format!("actors {} and {a} own different kinds or numbers of values", g[0]));
                }
            }
        }
        for &(leader, follower) in &self.coupled {
            let (Some(l), Some(f)) = (self.groups.get(leader), self.groups.get(follower)) else {
                return Err(format!("coupled groups ({leader}, {follower}) past the {} groups", self.groups.len()));
            };
            if leader == follower || l.len() != f.len() {
                return Err(format!("coupled groups {l:?} and {f:?} must be two groups of one length"));
            }
            if self.coupled.iter().filter(|&&(_, x)| x == follower).count() > 1
                || self.coupled.iter().any(|&(_, x)| x == leader)
            {
                return Err(format!("group {f:?} must follow one group, which follows none"));
            }
        }
        let mut all: Vec<Value> = self.owned_values.iter().flatten().copied().collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        if all.len() != n {
            return Err("two actors own the same value".to_string());
        }
        Ok(())
    }
}

/// Every ordering of `0..n`.
pub(crate) fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

/// What [`Renaming::abstracting`] puts for another member of the group.
const OTHER_ACTOR: ActorId = ActorId::MAX;
const OTHER_CONN: ConnId = ConnId::MAX - 1;

/// A placeholder of the same kind as `v` for another member's `k`-th owned value.
fn placeholder(v: Value, k: usize) -> Value {
    match v {
        Value::Int(_) => Value::Int(i64::MIN + k as i64),
        Value::Str(_) => Value::Str("(another member)"),
        Value::Null => Value::Null,
    }
}

impl Symmetry {
    /// The symmetry `model` declares, checked against its actors and its initial world. A
    /// malformed or unsound declaration is a bug in the model, not an input error: it panics.
    pub fn declared_by<M: crate::model::Model>(model: &M, init: &crate::sim::World) -> Option<Symmetry> {
        let symmetry = model.symmetry()?;
        if let Err(why) = symmetry.validate(model.actor_names().len()) {
            panic!("the model's symmetry declaration is malformed: {why}");
        }
        if let Err(why) = symmetry.check_fresh(init) {
            panic!("the model's symmetry declaration is unsound: {why}");
        }
        Some(symmetry)
    }

    /// Owned values name their owner and nothing else, so none may be in the world before any
    /// actor moved: a seeded row holding one (a count equal to an id, say) would be renamed with
    /// it. A check of the initial world only; values computed later are the model's care.
    pub fn check_fresh(&self, world: &crate::sim::World) -> Result<(), String> {
        let owned: Vec<Value> = self.owned_values.iter().flatten().copied().collect();
        for table in &world.db.schema().tables {
            for row in world.db.committed_rows(table.name) {
                if let Some(v) = row.iter().find(|v| owned.contains(v)) {
                    return Err(format!("the seeded row {row:?} of {} holds {v}, a value an actor owns", table.name));
                }
            }
        }
        Ok(())
    }
}

/// A consistent renaming of actors and of what they own: connections and values, and the
/// numbered slots of a connection pool that the world renumbers to match (see [`Renaming::slot`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renaming {
    /// Old actor → new actor.
    actors: Vec<ActorId>,
    /// `actors` as the swaps that carry it out, worked out once: a renaming permutes a dozen
    /// vectors indexed by actor.
    swaps: Swaps,
    /// Old connection → new connection.
    conns: Vec<ConnId>,
    /// Old value → new value, only for values that change.
    values: Vec<(Value, Value)>,
    /// The connection pool's slots.
    slots: Numbers,
    /// Process ids.
    pids: Numbers,
}

/// How numbers the world hands out in turn (pool slots, pids) are renamed. They name nothing
/// but what holds them and are compared only for equality, so any permutation of them is a
/// symmetry too; the world picks the one that numbers them in the order of their holders.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Numbers {
    Keep,
    /// To be renumbered by the world to follow the renamed actors (see [`Symmetry::renumbers`]).
    Follow,
    /// Old number → new number: `to[n - base]` for the numbers from `base` on that `to` covers
    /// (the least to the greatest that change), every other number kept. Numbers are handed out
    /// in turn, so the table is dense.
    Renumber {
        base: i64,
        to: Vec<i64>,
    },
    /// Every number becomes one placeholder: for an actor's sort key, where which one it holds
    /// must not matter because the numbers are renumbered after sorting.
    Abstract,
}

impl Numbers {
    fn get(&self, n: i64) -> i64 {
        match self {
            Numbers::Keep | Numbers::Follow => n,
            Numbers::Renumber { base, to } => {
                usize::try_from(n.wrapping_sub(*base)).ok().and_then(|k| to.get(k)).copied().unwrap_or(n)
            }
            Numbers::Abstract => ANY_NUMBER,
        }
    }

    fn renumber(renumbering: Renumbering) -> Numbers {
        let Renumbering { base, to } = renumbering;
        debug_assert!({
            let mut sorted = to.clone();
            sorted.sort_unstable();
            sorted.iter().enumerate().all(|(k, &n)| n == base + k as i64)
        });
        match to.iter().enumerate().all(|(k, &n)| n == base + k as i64) {
            true => Numbers::Keep,
            false => Numbers::Renumber { base, to },
        }
    }
}

/// Numbers handed out in turn from `base` given new ones: `base + k` becomes `to[k]`, and any
/// number past `to` is kept. A permutation of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Renumbering {
    pub base: i64,
    pub to: Vec<i64>,
}

impl Renumbering {
    /// Every number from `base` kept.
    pub(crate) fn kept(base: i64) -> Renumbering {
        Renumbering { base, to: Vec::new() }
    }

    /// The numbers from `base` on renumbered in the order `order` lists their old positions.
    pub(crate) fn in_order(base: i64, len: usize, order: impl IntoIterator<Item = usize>) -> Renumbering {
        let mut to = vec![i64::MIN; len];
        let mut placed = 0;
        for (new, old) in order.into_iter().enumerate() {
            assert!(to[old] == i64::MIN, "each old number once");
            to[old] = base + new as i64;
            placed += 1;
        }
        assert_eq!(placed, len, "every old number placed");
        Renumbering { base, to }
    }
}

/// What [`Renaming::slot`] and [`Renaming::pid`] give for every number under
/// [`Renaming::abstracting`].
const ANY_NUMBER: i64 = i64::MIN;

impl Renaming {
    /// The renaming that sends actor `a` to `perm[a]`, each connection of `a` to the connection
    /// of `perm[a]` at the same position (`conn_owner[c]` is connection `c`'s actor), and each
    /// owned value to its counterpart.
    pub fn new(perm: Vec<ActorId>, conn_owner: &[ActorId], symmetry: &Symmetry) -> Renaming {
        assert!(perm.len() <= MAX_ACTORS);
        debug_assert!({
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            sorted.iter().enumerate().all(|(i, &p)| i == p)
        });
        let mut canon = Canonicaliser::build(symmetry, false);
        canon.for_owners(conn_owner);
        canon.renaming(perm)
    }

    /// Actor `a` as it sees itself and the others, for sorting: `a` and what it owns are
    /// renamed to the group's first member's, and every other member of the group's connections and
    /// values become placeholders, so that references to them compare equal whoever they are.
    /// Not a bijection: only for renaming one actor's own state before hashing it.
    pub fn abstracting(a: ActorId, group: &[ActorId], conn_owner: &[ActorId], symmetry: &Symmetry) -> Renaming {
        let j = group.iter().position(|&b| b == a).expect("an actor of the group");
        // A coupled group abstracts whole units: `a`'s counterparts become the first unit's.
        let lanes: Vec<&[ActorId]> = match symmetry.groups.iter().position(|g| g == group) {
            Some(g) => symmetry.parallel(g).into_iter().map(|h| symmetry.groups[h].as_slice()).collect(),
            None => vec![group],
        };
        let owned = |b: usize| symmetry.owned_values.get(b).map_or(&[][..], Vec::as_slice);
        let conns_of = |b: ActorId| conn_owner.iter().enumerate().filter(move |&(_, &o)| o == b).map(|(c, _)| c);
        let last = lanes.iter().flat_map(|l| l.iter()).copied().max().expect("a group has members");
        let mut actors: Vec<ActorId> = (0..conn_owner.iter().copied().max().unwrap_or(0).max(last) + 1).collect();
        let mut conns: Vec<ConnId> = (0..conn_owner.len()).map(|c| c as ConnId).collect();
        let mut values = Vec::new();
        for lane in lanes {
            let first = lane[0];
            for (k, &b) in lane.iter().enumerate() {
                let mine = k == j;
                actors[b] = if mine { first } else { OTHER_ACTOR };
                for (n, c) in conns_of(b).enumerate() {
                    conns[c] = match mine {
                        true => conns_of(first).nth(n).expect("members own as many connections") as ConnId,
                        false => OTHER_CONN,
                    };
                }
                for (n, &v) in owned(b).iter().enumerate() {
                    let to = if mine { owned(first)[n] } else { placeholder(v, n) };
                    values.push((v, to));
                }
            }
        }
        values.sort_unstable();
        // Not a permutation: nothing indexed by actor is permuted by it.
        Renaming {
            actors,
            conns,
            values,
            swaps: Swaps::NOT_A_PERMUTATION,
            slots: Numbers::Abstract,
            pids: Numbers::Abstract,
        }
    }

    /// Does this renaming change nothing? (One that lets the world renumber slots and pids
    /// may change them even when it keeps every actor.)
    pub fn is_identity(&self) -> bool {
        self.actors.iter().enumerate().all(|(i, &a)| i == a)
            && self.values.is_empty()
            && self.slots == Numbers::Keep
            && self.pids == Numbers::Keep
    }

    /// Does it leave the world to renumber slots and pids (see [`Symmetry::renumbers`])?
    pub(crate) fn follows_numbers(&self) -> bool {
        self.slots == Numbers::Follow || self.pids == Numbers::Follow
    }

    /// This renaming with the numbers the world picked: slots old → new (none: kept) and pids
    /// old → new (none: kept).
    pub(crate) fn with_numbers(self, slots: Option<Renumbering>, pids: Option<Renumbering>) -> Renaming {
        Renaming {
            slots: slots.map_or(Numbers::Keep, Numbers::renumber),
            pids: pids.map_or(Numbers::Keep, Numbers::renumber),
            ..self
        }
    }

    /// Old actor → new actor.
    pub(crate) fn actors(&self) -> &[ActorId] {
        &self.actors
    }

    /// The number a connection pool slot gets. Slots are interchangeable, so the world
    /// renumbers them to follow the actors that hold them; an actor that remembers which slot
    /// it checked out renames it here.
    pub fn slot(&self, slot: i64) -> i64 {
        self.slots.get(slot)
    }

    /// The pid a process gets. Processes are numbered to follow the actors they run; an actor
    /// that remembers a pid (its own, one it spawned or read) renames it here.
    pub fn pid(&self, pid: crate::op::Pid) -> crate::op::Pid {
        match self.pids.get(i64::from(pid)) {
            ANY_NUMBER => crate::op::Pid::MAX,
            p => crate::op::Pid::try_from(p).expect("a pid renamed to a pid"),
        }
    }

    /// How many actors it renames.
    pub fn len(&self) -> usize {
        self.actors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.actors.is_empty()
    }

    pub fn actor(&self, a: ActorId) -> ActorId {
        self.actors[a]
    }

    pub fn conn(&self, c: ConnId) -> ConnId {
        self.conns.get(usize::from(c)).copied().unwrap_or(c)
    }

    pub fn value(&self, v: Value) -> Value {
        match self.values.binary_search_by(|(from, _)| from.cmp(&v)) {
            Ok(k) => self.values[k].1,
            Err(_) => v,
        }
    }

    /// An integer as a value: advisory lock keys and ids an actor owns.
    pub fn int(&self, i: i64) -> i64 {
        match self.value(Value::Int(i)) {
            Value::Int(j) => j,
            other => panic!("integer {i} renamed to {other}"),
        }
    }

    pub fn row(&self, row: &mut Row) {
        if self.values.is_empty() {
            return;
        }
        for v in row {
            *v = self.value(*v);
        }
    }

    /// Values in a statement: filters, inserted rows, `SET` constants, advisory keys.
    pub fn sql(&self, stmt: &mut Sql) {
        use crate::op::{Expr, OnConflict};
        let expr = |e: &mut Expr| {
            if let Expr::Value(v) = e {
                *v = self.value(*v);
            }
        };
        match stmt {
            Sql::Select { filter, .. } | Sql::Delete { filter, .. } => {
                filter.iter_mut().for_each(|(_, v)| *v = self.value(*v))
            }
            Sql::Insert { row, on_conflict, .. } => {
                self.row(row);
                if let OnConflict::DoUpdate { set, .. } = on_conflict {
                    set.iter_mut().for_each(|(_, e)| expr(e));
                }
            }
            Sql::Update { filter, set, .. } => {
                filter.iter_mut().for_each(|(_, v)| *v = self.value(*v));
                set.iter_mut().for_each(|(_, e)| expr(e));
            }
            Sql::AdvisoryLock { key, .. } | Sql::AdvisoryTryLock { key, .. } | Sql::AdvisoryUnlock { key } => {
                *key = self.int(*key)
            }
            _ => {}
        }
    }

    pub fn outcome(&self, outcome: &mut Outcome) {
        match outcome {
            Outcome::Rows(rows) => rows.iter_mut().for_each(|r| self.row(r)),
            Outcome::Value(v) => *v = self.value(*v),
            _ => {}
        }
    }

    /// Permute a vector indexed by actor.
    pub fn permute<T>(&self, by_actor: &mut [T]) {
        assert_eq!(by_actor.len(), self.actors.len(), "a vector indexed by actor");
        self.swaps.apply(by_actor);
    }

    /// Permute a vector indexed by connection.
    pub fn permute_conns<T>(&self, by_conn: &mut [T]) {
        permute_in_place(by_conn, |c| usize::from(self.conn(c as ConnId)));
    }
}

/// [`Symmetry::sorting_permutation`] for the groups' [`Symmetry::unit_lanes`]. Units of one
/// or two actors (the usual cases) are sorted as tuples gathered on the stack.
fn sort_units<K: Ord + Copy + Default>(leading: &[Vec<Vec<ActorId>>], actors: usize, keys: &[K]) -> Vec<ActorId> {
    let mut perm: Vec<ActorId> = (0..actors).collect();
    for lanes in leading {
        let len = lanes[0].len();
        assert!(len <= MAX_ACTORS, "at most {MAX_ACTORS} units a group");
        // `order[k]`: the unit that moves to index `k`.
        let mut order = [0u8; MAX_ACTORS];
        match &lanes[..] {
            [only] => {
                let mut units = [(K::default(), 0u8); MAX_ACTORS];
                (0..len).for_each(|j| units[j] = (keys[only[j]], j as u8));
                units[..len].sort_unstable();
                (0..len).for_each(|k| order[k] = units[k].1);
            }
            [first, second] => {
                let mut units = [(K::default(), K::default(), 0u8); MAX_ACTORS];
                (0..len).for_each(|j| units[j] = (keys[first[j]], keys[second[j]], j as u8));
                units[..len].sort_unstable();
                (0..len).for_each(|k| order[k] = units[k].2);
            }
            _ => {
                // A unit's key is its members' keys, lane by lane, compared in place.
                let unit = |j: u8| lanes.iter().map(move |lane| &keys[lane[usize::from(j)]]);
                (0..len).for_each(|j| order[j] = j as u8);
                order[..len].sort_by(|&i, &j| unit(i).cmp(unit(j)).then(i.cmp(&j)));
            }
        }
        for lane in lanes {
            for (k, &old) in order[..len].iter().enumerate() {
                perm[lane[usize::from(old)]] = lane[k];
            }
        }
    }
    perm
}

/// A permutation of at most [`MAX_ACTORS`] items as the swaps [`permute_in_place`] would make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Swaps {
    /// `u8::MAX` for a renaming that is not a permutation.
    len: u8,
    swaps: [(u8, u8); MAX_ACTORS],
}

impl Swaps {
    const NOT_A_PERMUTATION: Swaps = Swaps { len: u8::MAX, swaps: [(0, 0); MAX_ACTORS] };

    fn of(perm: &[ActorId]) -> Swaps {
        assert!(perm.len() <= MAX_ACTORS, "at most {MAX_ACTORS} actors");
        let mut swaps = Swaps { len: 0, swaps: [(0, 0); MAX_ACTORS] };
        let mut placed = [false; MAX_ACTORS];
        for start in 0..perm.len() {
            if placed[start] {
                continue;
            }
            placed[start] = true;
            let mut target = perm[start];
            while target != start {
                assert!(!placed[target], "not a permutation");
                swaps.swaps[usize::from(swaps.len)] = (start as u8, target as u8);
                swaps.len += 1;
                placed[target] = true;
                target = perm[target];
            }
        }
        swaps
    }

    fn apply<T>(&self, items: &mut [T]) {
        assert!(self.len != u8::MAX, "an abstracting renaming permutes nothing");
        for &(a, b) in &self.swaps[..usize::from(self.len)] {
            items.swap(usize::from(a), usize::from(b));
        }
    }
}

/// Move `items[i]` to `items[to(i)]` for every `i` (`to` a permutation), by swaps along each
/// cycle: no item is copied, which matters when items own heap data.
pub(crate) fn permute_in_place<T>(items: &mut [T], to: impl Fn(usize) -> usize) {
    assert!(items.len() <= 1 << 16, "a permutation of at most 65,536 items");
    // Most permutations are of actors, pids or slots: no allocation for those.
    let mut few = [false; 64];
    let mut many = Vec::new();
    let placed: &mut [bool] = match items.len() {
        n if n <= few.len() => &mut few[..n],
        n => {
            many.resize(n, false);
            &mut many
        }
    };
    for start in 0..items.len() {
        if placed[start] {
            continue;
        }
        placed[start] = true;
        // `items[start]` holds the next item to place; each swap puts one where it belongs.
        let mut target = to(start);
        while target != start {
            assert!(!placed[target], "not a permutation");
            items.swap(start, target);
            placed[target] = true;
            target = to(target);
        }
    }
}

/// What renaming under one symmetry needs, worked out once per assignment of connections to
/// actors (which rarely changes during a search): each actor's connections, every owned value
/// in sorted order, and each group member's [`Renaming::abstracting`]. The search canonicalises
/// every state it reaches, and building these afresh each time cost more than the rest of it.
#[derive(Clone, Debug)]
pub struct Canonicaliser {
    symmetry: Symmetry,
    /// [`Symmetry::unit_lanes`].
    lanes: Vec<Vec<Vec<ActorId>>>,
    owners: Vec<ActorId>,
    /// Actor → its connections, in increasing order.
    conns_of: Vec<Vec<ConnId>>,
    /// Every owned value with its owner and position, sorted by value.
    owned: Vec<(Value, ActorId, usize)>,
    /// Actor → how it sees itself and its group (`None` outside every group, or when only
    /// renamings are wanted).
    abstracting: Vec<Option<Renaming>>,
    with_abstractions: bool,
    /// Reused for the bytes of each member's sort key.
    scratch: Vec<u8>,
    /// See [`Canonicaliser::check_reused_keys`].
    check_reused_keys: bool,
}

impl Canonicaliser {
    pub fn new(symmetry: &Symmetry) -> Canonicaliser {
        Canonicaliser::build(symmetry, true)
    }

    fn build(symmetry: &Symmetry, with_abstractions: bool) -> Canonicaliser {
        let mut owned: Vec<(Value, ActorId, usize)> = Vec::new();
        for (a, values) in symmetry.owned_values.iter().enumerate() {
            owned.extend(values.iter().enumerate().map(|(k, &v)| (v, a, k)));
        }
        owned.sort_unstable();
        let mut canon = Canonicaliser {
            symmetry: symmetry.clone(),
            lanes: symmetry.unit_lanes(),
            owners: Vec::new(),
            conns_of: Vec::new(),
            owned,
            abstracting: Vec::new(),
            with_abstractions,
            scratch: Vec::new(),
            check_reused_keys: false,
        };
        canon.refit(&[]);
        canon
    }

    pub fn symmetry(&self) -> &Symmetry {
        &self.symmetry
    }

    /// [`Symmetry::unit_lanes`], worked out once.
    pub(crate) fn unit_lanes(&self) -> &[Vec<Vec<ActorId>>] {
        &self.lanes
    }

    /// [`Symmetry::sorting_permutation`].
    pub(crate) fn sorting_permutation(&self, actors: usize, sort_keys: &[u128]) -> Vec<ActorId> {
        sort_units(&self.lanes, actors, sort_keys)
    }

    /// Make it fit a world whose connection `c` belongs to actor `conn_owner[c]`. Returns whether
    /// it had to change (sort keys made for other owners are then stale).
    pub fn for_owners(&mut self, conn_owner: &[ActorId]) -> bool {
        let refit = self.owners != conn_owner;
        if refit {
            self.refit(conn_owner);
        }
        refit
    }

    /// Check every sort key made from a parent state's against one made afresh (slow: for tests).
    pub fn check_reused_keys(&mut self) {
        self.check_reused_keys = true;
    }

    pub(crate) fn checks_reused_keys(&self) -> bool {
        self.check_reused_keys
    }

    fn refit(&mut self, conn_owner: &[ActorId]) {
        let actors = self.symmetry.groups.iter().flatten().copied().max().map_or(0, |m| m + 1);
        let actors = actors.max(conn_owner.iter().copied().max().map_or(0, |m| m + 1));
        self.owners = conn_owner.to_vec();
        self.conns_of = vec![Vec::new(); actors];
        for (c, &a) in conn_owner.iter().enumerate() {
            self.conns_of[a].push(c as ConnId);
        }
        self.abstracting = vec![None; actors];
        if self.with_abstractions {
            for g in &self.symmetry.groups {
                for &a in g {
                    self.abstracting[a] = Some(Renaming::abstracting(a, g, conn_owner, &self.symmetry));
                }
            }
        }
    }

    /// The buffer sort keys are written into, kept from state to state.
    pub(crate) fn take_scratch(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.scratch)
    }

    pub(crate) fn put_scratch(&mut self, bytes: Vec<u8>) {
        self.scratch = bytes;
    }

    /// [`Renaming::abstracting`] for group member `a`.
    pub fn abstracting(&self, a: ActorId) -> &Renaming {
        self.abstracting[a].as_ref().expect("a member of a symmetry group")
    }

    /// [`Renaming::new`] for `perm`, without searching or sorting.
    pub fn renaming(&self, perm: Vec<ActorId>) -> Renaming {
        let mut conns: Vec<ConnId> = (0..self.owners.len()).map(|c| c as ConnId).collect();
        for (old, &new) in perm.iter().enumerate() {
            if old == new {
                continue;
            }
            let (from, to) = (&self.conns_of[old], &self.conns_of[new]);
            assert_eq!(from.len(), to.len(), "actors {old} and {new} own different connections");
            for (&f, &t) in from.iter().zip(to) {
                conns[usize::from(f)] = t;
            }
        }
        // Sorted by the old value already, as `value` looks them up.
        let values = self
            .owned
            .iter()
            .filter(|&&(_, a, _)| perm[a] != a)
            .map(|&(v, a, k)| (v, self.symmetry.owned_values[perm[a]][k]))
            .collect();
        let numbers = if self.symmetry.renumbers { Numbers::Follow } else { Numbers::Keep };
        Renaming { swaps: Swaps::of(&perm), actors: perm, conns, values, slots: numbers.clone(), pids: numbers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uncoupled groups sorted as one permutation.
    fn sorting_permutation(groups: &[Vec<ActorId>], actors: usize, keys: &[i32]) -> Vec<ActorId> {
        Symmetry { groups: groups.to_vec(), ..Symmetry::default() }.sorting_permutation(actors, keys)
    }

    fn two_requests() -> Symmetry {
        Symmetry::group(0..2, vec![vec![Value::Int(1)], vec![Value::Int(2)]])
    }

    #[test]
    fn a_permutation_in_place_puts_every_item_where_a_copy_would() {
        // Every permutation of five items: cycles of every length, fixed points, the identity.
        for perm in permutations(5) {
            let mut items: Vec<String> = (0..5).map(|i| format!("item {i}")).collect();
            let mut expected = items.clone();
            for (i, item) in items.iter().enumerate() {
                expected[perm[i]] = item.clone();
            }
            permute_in_place(&mut items, |i| perm[i]);
            assert_eq!(items, expected, "{perm:?}");
        }
    }

    #[test]
    fn a_swap_renames_connections_and_values() {
        let r = Renaming::new(vec![1, 0], &[0, 1], &two_requests());
        assert_eq!((r.actor(0), r.conn(0), r.value(Value::Int(1))), (1, 1, Value::Int(2)));
        assert_eq!(r.value(Value::Int(7)), Value::Int(7), "values no actor owns stay");
        let mut stmt = Sql::AdvisoryLock { key: 2, scope: crate::op::LockScope::Xact };
        r.sql(&mut stmt);
        assert_eq!(stmt, Sql::AdvisoryLock { key: 1, scope: crate::op::LockScope::Xact });
        let mut by_actor = vec!["first", "second"];
        r.permute(&mut by_actor);
        assert_eq!(by_actor, ["second", "first"]);
    }

    #[test]
    fn the_sorting_permutation_sorts_within_groups_only() {
        assert_eq!(sorting_permutation(&[vec![1, 2, 3]], 4, &[9, 3, 1, 2]), vec![0, 3, 1, 2]);
        assert_eq!(sorting_permutation(&[vec![0, 1]], 3, &[5, 5, 0]), vec![0, 1, 2], "ties keep their order");
    }

    #[test]
    fn coupled_groups_move_as_units() {
        // Hooks 0..3 and their daemons 3..6: hook i and daemon 3 + i move together, sorted by
        // the pair of their keys.
        let units = Symmetry::units(&[vec![0, 3], vec![1, 4], vec![2, 5]], Vec::new());
        assert_eq!(units.groups, [vec![0, 1, 2], vec![3, 4, 5]]);
        assert!(units.validate(6).is_ok());
        // Hooks tie; their daemons decide: unit 2 < unit 0 < unit 1.
        let keys = [1, 1, 1, 5, 7, 2];
        assert_eq!(units.sorting_permutation(6, &keys), vec![1, 2, 0, 4, 5, 3]);
        assert_eq!(units.all_permutations(6).len(), 6, "3! renamings, not 3!·3!");
        // A hook abstracts its own daemon as the first unit's, the others' as another member's.
        let r = Renaming::abstracting(4, &units.groups[1], &[], &units);
        assert_eq!((r.actor(1), r.actor(4), r.actor(0), r.actor(3)), (0, 3, OTHER_ACTOR, OTHER_ACTOR));
    }

    #[test]
    fn malformed_couplings_are_refused() {
        let mut units = Symmetry::units(&[vec![0, 2], vec![1, 3]], Vec::new());
        units.coupled.push((1, 1));
        assert!(units.validate(4).is_err(), "a group following itself");
        let mut uneven = Symmetry { groups: vec![vec![0, 1], vec![2, 3, 4]], ..Symmetry::default() };
        uneven.coupled.push((0, 1));
        assert!(uneven.validate(5).is_err(), "groups of two lengths");
        let mut chain = Symmetry { groups: vec![vec![0, 1], vec![2, 3], vec![4, 5]], ..Symmetry::default() };
        chain.coupled.extend([(0, 1), (1, 2)]);
        assert!(chain.validate(6).is_err(), "a follower leading");
    }

    #[test]
    fn groups_need_not_be_contiguous() {
        assert_eq!(sorting_permutation(&[vec![0, 2], vec![1, 3]], 4, &[5, 4, 3, 0]), vec![2, 3, 0, 1]);
    }

    #[test]
    fn an_owned_value_in_a_seeded_row_is_refused() {
        use crate::sim::{Schema, TableDef, World};
        let schema = Schema { tables: vec![TableDef { name: "t", columns: vec!["id", "n"], unique: vec![] }] };
        let mut world = World::new(schema, 2);
        world.db.seed_row("t", vec![Value::Int(7), Value::Int(3)]);
        assert!(two_requests().check_fresh(&world).is_ok());
        world.db.seed_row("t", vec![Value::Int(8), Value::Int(2)]);
        let err = two_requests().check_fresh(&world).unwrap_err();
        assert!(err.contains("holds 2"), "{err}");
    }

    #[test]
    fn malformed_declarations_are_refused() {
        assert!(two_requests().validate(2).is_ok());
        assert!(Symmetry::group(0..1, vec![]).validate(2).is_err(), "a group of one");
        assert!(Symmetry::group(0..3, vec![]).validate(2).is_err(), "past the last actor");
        let shared = Symmetry::group(0..2, vec![vec![Value::Int(1)], vec![Value::Int(1)]]);
        assert!(shared.validate(2).is_err(), "one value owned twice");
        let mixed = Symmetry::group(0..2, vec![vec![Value::Int(1)], vec![Value::Str("x")]]);
        assert!(mixed.validate(2).is_err(), "an id and a string in one position");
    }
}
