//! An HTTP boundary between client and server actors.
//!
//! A client's `Request` waits for its response. A server's `Accept` takes the oldest pending
//! request on its route (or waits for one), and its `Respond` answers the request it accepted
//! last. When a server dies, the requests it accepted fail with `ECONNRESET`. A route whose
//! servers were declared with [`Http::listen`] refuses new requests once all of them are dead,
//! and resets the ones still queued, as a closed listening socket does.

use std::collections::BTreeMap;

use crate::op::{ActorId, Applied, ErrorCode, Footprint, HttpOp, Outcome, Resource, Value};

use super::subsystem::Subsystem;
use crate::symmetry::Renaming;

/// `connect()` to a port nobody listens on.
pub const ECONNREFUSED: ErrorCode = ErrorCode("ECONNREFUSED");

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Exchange {
    /// Sent, not accepted yet.
    Queued,
    /// Accepted by this server.
    Serving(ActorId),
    /// The client's outcome, waiting to be collected.
    Answered(Outcome),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Request {
    route: &'static str,
    arg: Value,
    state: Exchange,
}

/// A server's `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Accepting {
    Waiting(&'static str),
    /// Matched with a request; the argument waits to be collected.
    Got(Value),
}

/// The per-actor lists are empty while no actor has anything in flight (and only then), so that
/// a world whose model sends no request copies and hashes no list per actor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Http {
    actors: usize,
    /// Each client's outstanding request.
    requests: Vec<Option<Request>>,
    /// Clients whose requests are queued, oldest first.
    queued: Vec<ActorId>,
    accepting: Vec<Option<Accepting>>,
    /// Servers whose `Accept` waits, oldest first.
    acceptors: Vec<ActorId>,
    /// The client each server accepted last and has not answered yet.
    serving: Vec<Option<ActorId>>,
    /// Declared servers of each route that are still alive.
    listeners: BTreeMap<&'static str, Vec<ActorId>>,
}

impl Http {
    pub fn new(actors: usize) -> Http {
        Http {
            actors,
            requests: Vec::new(),
            queued: Vec::new(),
            accepting: Vec::new(),
            acceptors: Vec::new(),
            serving: Vec::new(),
            listeners: BTreeMap::new(),
        }
    }

    /// Is `server` waiting in `Accept` with no request yet? An idle server is not stuck.
    pub fn is_idle(&self, server: ActorId) -> bool {
        matches!(self.accepting.get(server), Some(Some(Accepting::Waiting(_))))
    }

    /// Has no actor anything in flight?
    fn quiet(&self) -> bool {
        self.requests.is_empty()
    }

    /// Give every actor its entries, before a change.
    fn unfold(&mut self) {
        if self.quiet() {
            self.requests = vec![None; self.actors];
            self.accepting = vec![None; self.actors];
            self.serving = vec![None; self.actors];
        }
    }

    /// After a change: empty lists again once nothing is in flight, so that equal states stay
    /// equal.
    fn fold(&mut self) {
        let idle = self.requests.iter().all(Option::is_none)
            && self.accepting.iter().all(Option::is_none)
            && self.serving.iter().all(Option::is_none);
        if idle {
            debug_assert!(self.queued.is_empty() && self.acceptors.is_empty());
            self.requests = Vec::new();
            self.accepting = Vec::new();
            self.serving = Vec::new();
        }
    }

    /// Declare at init that `server` serves `route`. Without it a request waits for any server.
    pub fn listen(&mut self, route: &'static str, server: ActorId) {
        self.listeners.entry(route).or_default().push(server);
    }
}

impl Subsystem for Http {
    type Op = HttpOp;

    /// Only an HTTP boundary no actor has used yet (the same for every actor).
    fn renamable(&self) -> Result<(), String> {
        let untouched = self.quiet() && self.listeners.is_empty();
        if untouched {
            Ok(())
        } else {
            Err("HTTP requests and servers are not renamed".to_string())
        }
    }

    fn rename(&mut self, _: &Renaming) {
        debug_assert!(self.renamable().is_ok());
    }

    fn name(&self) -> &'static str {
        "http"
    }

    /// Its actor signature is empty.
    fn reports_signature_changes(&self) -> bool {
        true
    }

    fn apply(&mut self, actor: ActorId, op: &HttpOp, fp: &mut Footprint) -> Applied {
        self.unfold();
        let applied = self.apply_unfolded(actor, op, fp);
        self.fold();
        applied
    }

    fn is_ready(&self, actor: ActorId) -> bool {
        matches!(self.requests.get(actor), Some(Some(Request { state: Exchange::Answered(_), .. })))
            || matches!(self.accepting.get(actor), Some(Some(Accepting::Got(_))))
    }

    fn take_ready(&mut self, actor: ActorId, fp: &mut Footprint) -> Option<Outcome> {
        if self.quiet() {
            return None;
        }
        let outcome = self.take_ready_unfolded(actor, fp);
        self.fold();
        outcome
    }

    /// A timeout fires: a client abandons its request, or a server stops accepting (a request
    /// it was matched with but had not collected goes back to the head of the queue).
    fn cancel_wait(&mut self, actor: ActorId, fp: &mut Footprint) -> Outcome {
        self.unfold();
        let outcome = self.cancel_wait_unfolded(actor, fp);
        self.fold();
        outcome
    }

    fn on_crash(&mut self, dead: &[ActorId], fp: &mut Footprint) {
        self.unfold();
        for &actor in dead {
            self.crash(actor, fp);
        }
        self.fold();
    }

    fn is_idle(&self, actor: ActorId) -> bool {
        Http::is_idle(self, actor)
    }
}

impl Http {
    fn apply_unfolded(&mut self, actor: ActorId, op: &HttpOp, fp: &mut Footprint) -> Applied {
        fp.write(Resource::Http);
        match *op {
            HttpOp::Request { route, arg } => {
                assert!(self.requests[actor].is_none(), "actor {actor} already has a request in flight");
                if self.listeners.get(route).is_some_and(Vec::is_empty) {
                    return Applied::Done(Outcome::Err(ECONNREFUSED));
                }
                self.requests[actor] = Some(Request { route, arg, state: Exchange::Queued });
                self.queued.push(actor);
                self.dispatch();
                Applied::Blocked
            }
            HttpOp::Accept { route } => {
                assert!(self.accepting[actor].is_none(), "actor {actor} already accepts");
                self.accepting[actor] = Some(Accepting::Waiting(route));
                self.acceptors.push(actor);
                self.dispatch();
                match self.accepting[actor] {
                    Some(Accepting::Got(arg)) => {
                        self.accepting[actor] = None;
                        Applied::Done(Outcome::Value(arg))
                    }
                    _ => Applied::Blocked,
                }
            }
            HttpOp::Respond { status } => {
                let client = self.serving[actor].take().unwrap_or_else(|| panic!("actor {actor} responds to nothing"));
                // The client may have given up (timeout) or died meanwhile; then nobody hears it.
                if let Some(r) = self.requests[client].as_mut().filter(|r| r.state == Exchange::Serving(actor)) {
                    r.state = Exchange::Answered(Outcome::Status(status));
                }
                Applied::Done(Outcome::Ok)
            }
        }
    }

    fn take_ready_unfolded(&mut self, actor: ActorId, fp: &mut Footprint) -> Option<Outcome> {
        if let Some(Request { state: Exchange::Answered(outcome), .. }) = &self.requests[actor] {
            let outcome = outcome.clone();
            self.requests[actor] = None;
            fp.read(Resource::Http);
            return Some(outcome);
        }
        if let Some(Accepting::Got(arg)) = self.accepting[actor] {
            self.accepting[actor] = None;
            fp.read(Resource::Http);
            return Some(Outcome::Value(arg));
        }
        None
    }

    fn cancel_wait_unfolded(&mut self, actor: ActorId, fp: &mut Footprint) -> Outcome {
        fp.write(Resource::Http);
        if self.requests[actor].take().is_some() {
            self.queued.retain(|&c| c != actor);
        } else {
            match self.accepting[actor].take().expect("cancel_wait on an actor that does not wait in HTTP") {
                Accepting::Waiting(_) => self.acceptors.retain(|&s| s != actor),
                Accepting::Got(_) => {
                    let client = self.serving[actor].take().expect("a matched server serves a client");
                    self.requests[client].as_mut().expect("a served client has a request").state = Exchange::Queued;
                    self.queued.insert(0, client);
                    self.dispatch();
                }
            }
        }
        Outcome::Err(ErrorCode::ETIMEDOUT)
    }

    /// `actor` died: requests it was serving fail with ECONNRESET for their clients, and so do
    /// queued requests on a route that has no live server left. Its own request disappears.
    fn crash(&mut self, actor: ActorId, fp: &mut Footprint) {
        fp.write(Resource::Http);
        if self.requests[actor].take().is_some() {
            self.queued.retain(|&c| c != actor);
        }
        self.accepting[actor] = None;
        self.acceptors.retain(|&s| s != actor);
        self.serving[actor] = None;
        for r in self.requests.iter_mut().flatten() {
            if r.state == Exchange::Serving(actor) {
                r.state = Exchange::Answered(Outcome::Err(ErrorCode::ECONNRESET));
            }
        }
        for servers in self.listeners.values_mut() {
            servers.retain(|&s| s != actor);
        }
        let closed = |route| self.listeners.get(route).is_some_and(Vec::is_empty);
        let (reset, kept): (Vec<ActorId>, Vec<ActorId>) =
            self.queued.iter().partition(|&&c| closed(self.requests[c].as_ref().expect("queued").route));
        for c in reset {
            self.requests[c].as_mut().expect("queued").state = Exchange::Answered(Outcome::Err(ErrorCode::ECONNRESET));
        }
        self.queued = kept;
    }

    /// Match queued requests with waiting servers of the same route, oldest first on both sides.
    fn dispatch(&mut self) {
        let mut i = 0;
        while i < self.queued.len() {
            let client = self.queued[i];
            let req = self.requests[client].as_mut().expect("a queued client has a request");
            let route = req.route;
            let server = self.acceptors.iter().position(|&s| self.accepting[s] == Some(Accepting::Waiting(route)));
            match server {
                Some(k) => {
                    let server = self.acceptors.remove(k);
                    req.state = Exchange::Serving(server);
                    self.accepting[server] = Some(Accepting::Got(req.arg));
                    self.serving[server] = Some(client);
                    self.queued.remove(i);
                }
                None => i += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JUDGE: &str = "/judge";

    fn apply(http: &mut Http, actor: ActorId, op: HttpOp) -> Applied {
        http.apply(actor, &op, &mut Footprint::default())
    }

    fn take(http: &mut Http, actor: ActorId) -> Option<Outcome> {
        http.take_ready(actor, &mut Footprint::default())
    }

    fn request(arg: i64) -> HttpOp {
        HttpOp::Request { route: JUDGE, arg: Value::Int(arg) }
    }

    fn accept() -> HttpOp {
        HttpOp::Accept { route: JUDGE }
    }

    #[test]
    fn request_then_accept_then_respond() {
        let mut http = Http::new(2);
        assert_eq!(apply(&mut http, 0, request(7)), Applied::Blocked);
        assert!(!http.is_ready(0));
        assert_eq!(apply(&mut http, 1, accept()), Applied::Done(Outcome::Value(Value::Int(7))));
        assert!(!http.is_ready(0));
        assert_eq!(apply(&mut http, 1, HttpOp::Respond { status: 200 }), Applied::Done(Outcome::Ok));
        assert!(http.is_ready(0));
        assert_eq!(take(&mut http, 0), Some(Outcome::Status(200)));
        assert_eq!(http, Http::new(2));
    }

    #[test]
    fn accept_waits_for_a_request_on_its_route() {
        let mut http = Http::new(3);
        assert_eq!(apply(&mut http, 1, accept()), Applied::Blocked);
        assert_eq!(apply(&mut http, 2, HttpOp::Request { route: "/other", arg: Value::Null }), Applied::Blocked);
        assert!(!http.is_ready(1));
        apply(&mut http, 0, request(3));
        assert!(http.is_ready(1));
        assert_eq!(take(&mut http, 1), Some(Outcome::Value(Value::Int(3))));
        apply(&mut http, 1, HttpOp::Respond { status: 500 });
        assert_eq!(take(&mut http, 0), Some(Outcome::Status(500)));
        assert_eq!(take(&mut http, 2), None);
    }

    #[test]
    fn requests_are_accepted_oldest_first() {
        let mut http = Http::new(3);
        apply(&mut http, 1, request(1));
        apply(&mut http, 0, request(0));
        assert_eq!(apply(&mut http, 2, accept()), Applied::Done(Outcome::Value(Value::Int(1))));
        apply(&mut http, 2, HttpOp::Respond { status: 200 });
        assert!(http.is_ready(1) && !http.is_ready(0));
        assert_eq!(apply(&mut http, 2, accept()), Applied::Done(Outcome::Value(Value::Int(0))));
    }

    #[test]
    fn a_server_crash_resets_the_request_it_serves() {
        let mut http = Http::new(2);
        apply(&mut http, 0, request(7));
        apply(&mut http, 1, accept());
        http.crash(1, &mut Footprint::default());
        assert_eq!(take(&mut http, 0), Some(Outcome::Err(ErrorCode::ECONNRESET)));
    }

    #[test]
    fn a_crash_between_match_and_collect_resets_too() {
        let mut http = Http::new(2);
        apply(&mut http, 1, accept());
        apply(&mut http, 0, request(7));
        assert!(http.is_ready(1));
        http.crash(1, &mut Footprint::default());
        assert_eq!(take(&mut http, 0), Some(Outcome::Err(ErrorCode::ECONNRESET)));
    }

    #[test]
    fn a_route_without_live_listeners_resets_and_refuses() {
        let mut http = Http::new(3);
        http.listen(JUDGE, 2);
        apply(&mut http, 0, request(7));
        assert!(!http.is_ready(0));
        http.crash(2, &mut Footprint::default());
        assert_eq!(take(&mut http, 0), Some(Outcome::Err(ErrorCode::ECONNRESET)));
        assert_eq!(apply(&mut http, 1, request(8)), Applied::Done(Outcome::Err(ECONNREFUSED)));
    }

    #[test]
    fn without_listen_a_request_outlives_a_crashed_server() {
        let mut http = Http::new(3);
        apply(&mut http, 0, request(7));
        http.crash(2, &mut Footprint::default());
        assert!(!http.is_ready(0));
        assert_eq!(apply(&mut http, 1, accept()), Applied::Done(Outcome::Value(Value::Int(7))));
    }

    #[test]
    fn a_response_to_a_client_that_died_goes_nowhere() {
        let mut http = Http::new(2);
        apply(&mut http, 0, request(7));
        apply(&mut http, 1, accept());
        http.crash(0, &mut Footprint::default());
        assert_eq!(apply(&mut http, 1, HttpOp::Respond { status: 200 }), Applied::Done(Outcome::Ok));
        assert!(!http.is_ready(0));
    }

    #[test]
    fn cancel_wait_abandons_a_request_or_an_accept() {
        let mut http = Http::new(3);
        apply(&mut http, 0, request(7));
        assert_eq!(http.cancel_wait(0, &mut Footprint::default()), Outcome::Err(ErrorCode::ETIMEDOUT));
        assert_eq!(apply(&mut http, 1, accept()), Applied::Blocked);
        assert_eq!(http.cancel_wait(1, &mut Footprint::default()), Outcome::Err(ErrorCode::ETIMEDOUT));
        assert_eq!(http, Http::new(3));
    }

    #[test]
    fn a_timed_out_accept_hands_its_request_to_the_next_server() {
        let mut http = Http::new(3);
        apply(&mut http, 1, accept());
        apply(&mut http, 2, accept());
        apply(&mut http, 0, request(7));
        assert!(http.is_ready(1) && !http.is_ready(2));
        http.cancel_wait(1, &mut Footprint::default());
        assert_eq!(take(&mut http, 2), Some(Outcome::Value(Value::Int(7))));
        apply(&mut http, 2, HttpOp::Respond { status: 200 });
        assert_eq!(take(&mut http, 0), Some(Outcome::Status(200)));
    }

    #[test]
    fn every_transition_touches_http() {
        let mut http = Http::new(2);
        let mut fp = Footprint::default();
        http.apply(0, &request(1), &mut fp);
        let mut other = Footprint::default();
        other.read(Resource::Http);
        assert!(fp.conflicts(&other));
    }
}
