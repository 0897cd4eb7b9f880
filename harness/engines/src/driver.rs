// One execution on the engine whose `Mutex`, `Condvar` and `thread` are in scope where this file
// is included (loom.rs, shuttle.rs): the same code runs under both.

/// Stack for each engine thread: world steps render and clone, more than a default
/// coroutine stack holds.
const STACK_BYTES: usize = 1 << 20;

/// Run one execution of `initial`, recording into `record`.
pub(crate) fn execution(
    initial: &std::sync::Mutex<Box<dyn Machine>>,
    record: &std::sync::Arc<Record>,
    faults: Faults,
) {
    if !record.begin() {
        stop_exploring();
        return;
    }
    let machine = initial.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).boxed_clone();
    let who = participants(&*machine, faults);
    let shared = std::sync::Arc::new(Mutex::new(Shared::new(machine, who.len(), faults)));
    let wakers: std::sync::Arc<Vec<Condvar>> = std::sync::Arc::new(who.iter().map(|_| Condvar::new()).collect());
    let who = std::sync::Arc::new(who);
    // The first participant runs on the engine's own first thread when it is an injector.
    let on_main = matches!(who.first(), Some(Participant::Injector(_)));
    let spawned: Vec<_> = (usize::from(on_main)..who.len())
        .map(|me| {
            let (shared, wakers, who, record) = (shared.clone(), wakers.clone(), who.clone(), record.clone());
            thread::Builder::new()
                .stack_size(STACK_BYTES)
                .spawn(move || participate(me, &shared, &wakers, &who, &record))
                .expect("spawn an engine thread")
        })
        .collect();
    if on_main {
        participate(0, &shared, &wakers, &who, record);
    }
    for handle in spawned {
        handle.join().expect("an engine thread finished");
    }
}

/// Participant `me`'s loop: under the lock, make its next move and wake whoever can move now,
/// or wait to be woken.
fn participate(
    me: usize,
    shared: &Mutex<Shared>,
    wakers: &[Condvar],
    who: &[Participant],
    record: &Record,
) {
    let mut guard = shared.lock().expect("the engine lock is never poisoned");
    loop {
        let mut next = guard.next_move(who[me]);
        if let (Move::Draw, Participant::Actor(actor)) = (next, who[me]) {
            next = guard.drawn_move(actor, &mut draw);
        }
        match next {
            Move::Exit => return,
            Move::Draw => unreachable!("a draw is resolved above"),
            Move::Wait => {
                guard.sleeping[me] = true;
                guard = wakers[me].wait(guard).expect("the engine lock is never poisoned");
            }
            mv => {
                guard.perform(mv, record);
                // Wake only sleepers that can move now: every engine operation is a point the
                // engine explores, so a needless one multiplies the schedules.
                for (other, waker) in wakers.iter().enumerate() {
                    if guard.sleeping[other] && guard.next_move(who[other]) != Move::Wait {
                        guard.sleeping[other] = false;
                        waker.notify_one();
                    }
                }
                // One move per turn: when this participant can move again, let the engine
                // choose who moves next. When it cannot, it waits (or exits) without a turn of
                // its own, which would only add schedules that differ in nothing.
                if matches!(guard.next_move(who[me]), Move::Apply(_) | Move::Arm(_) | Move::Draw) {
                    drop(guard);
                    guard = shared.lock().expect("the engine lock is never poisoned");
                }
            }
        }
    }
}
