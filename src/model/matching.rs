//! Indexes over the state's rules and client bindings, so that a request looks past 64
//! rules or 256 bindings at about the cost of one: rules with an exact path are found by a
//! hash of the path, client bindings by a hash of the client's address cut to each prefix
//! length in use. Built once when the state changes ([`Index::of`]), never per request.
//! Each answers exactly what the linear scan answers ([`rules::first_match`], the first
//! binding in `State::bindings` that holds the client, as `State::policy_for`); the tests
//! compare them on random states.

use crate::model::outbound::Direction;
use crate::model::policy::{Seed, State};
use crate::model::rules::{self, PathMatch, RequestView, Rule};
use fnv::FnvHashMap;
use std::net::IpAddr;

/// The rules' and the bindings' indexes, for one state.
#[derive(Debug, Default)]
pub struct Index {
    rules: RuleIndex,
    clients: ClientIndex,
}

impl Index {
    /// The index of `state`'s rules and bindings.
    pub fn of(state: &State) -> Index {
        Index { rules: RuleIndex::of(&state.rules), clients: ClientIndex::of(state.bindings.iter().map(|b| b.clients)) }
    }

    /// The first rule of `direction` that matches the request, with its position: what
    /// [`rules::first_match`] answers.
    pub fn first_match<'a>(&self, rules: &'a [Rule], direction: Direction, request: &mut dyn RequestView) -> Option<(usize, &'a Rule)> {
        self.rules.first_match(rules, direction, request)
    }

    /// Whether every request the rules see has its path read: some rule matches an exact
    /// path, which the index looks up.
    pub fn reads_path(&self) -> bool {
        !self.rules.exact.is_empty()
    }

    /// The policy for a client: the first binding of `state` that holds its address (the
    /// narrowest, as bindings are kept narrowest first), else the default.
    pub fn policy_for<'a>(&self, state: &'a State, client: Option<IpAddr>) -> &'a Seed {
        let found = if self.clients.len == state.bindings.len() {
            client.and_then(|ip| self.clients.first(ip)).and_then(|at| state.bindings.get(at))
        } else {
            // Not this state's index: the scan, rather than a wrong answer.
            client.and_then(|ip| state.bindings.iter().find(|b| b.clients.contains(ip)))
        };
        found.map_or(&state.default, |b| &b.seed)
    }
}

/// Rules by exact path; the others in order, as each must be tried.
#[derive(Debug, Default)]
struct RuleIndex {
    /// Positions of the rules whose path condition is this exact path, in order.
    exact: FnvHashMap<String, Vec<usize>>,
    /// Positions of every other rule, in order.
    others: Vec<usize>,
    /// How many rules the index was built from.
    len: usize,
}

impl RuleIndex {
    fn of(rules: &[Rule]) -> RuleIndex {
        let mut index = RuleIndex { len: rules.len(), ..RuleIndex::default() };
        for (at, rule) in rules.iter().enumerate() {
            match &rule.matcher.path {
                Some(PathMatch::Exact(path)) => index.exact.entry(path.clone()).or_default().push(at),
                _ => index.others.push(at),
            }
        }
        index
    }

    /// Tries, in the rules' order, the rules that can match: those without an exact path,
    /// and those whose exact path is the request's. A rule left out has an exact path that
    /// is not the request's, so the scan would have passed it too.
    fn first_match<'a>(&self, rules: &'a [Rule], direction: Direction, request: &mut dyn RequestView) -> Option<(usize, &'a Rule)> {
        if self.len != rules.len() {
            return rules::first_match(rules, direction, request);
        }
        let path = if self.exact.is_empty() { None } else { Some(request.path()) };
        let hits = path.and_then(|p| self.exact.get(&p)).map_or(&[][..], Vec::as_slice);
        let (mut others, mut hits) = (self.others.iter().copied().peekable(), hits.iter().copied().peekable());
        loop {
            let at = match (others.peek().copied(), hits.peek().copied()) {
                (Some(o), Some(h)) if h < o => hits.next(),
                (Some(_), _) => others.next(),
                (None, _) => hits.next(),
            }?;
            let rule = rules.get(at)?;
            if rule.direction == direction && rule.matcher.matches(request) {
                return Some((at, rule));
            }
        }
    }
}

/// Client ranges by prefix: for each family and prefix length in use, the first range's
/// position by its network address.
#[derive(Debug, Default)]
struct ClientIndex {
    /// The (IPv6?, prefix length) pairs in use.
    lengths: Vec<(bool, u8)>,
    /// The first position of each range, by (IPv6?, prefix length, network address).
    first: FnvHashMap<(bool, u8, u128), usize>,
    /// How many ranges the index was built from.
    len: usize,
}

impl ClientIndex {
    fn of(ranges: impl Iterator<Item = crate::model::net::Cidr>) -> ClientIndex {
        let mut index = ClientIndex::default();
        for (at, range) in ranges.enumerate() {
            let key = key(range.network(), range.prefix());
            index.first.entry(key).or_insert(at);
            if !index.lengths.contains(&(key.0, key.1)) {
                index.lengths.push((key.0, key.1));
            }
            index.len = at + 1;
        }
        index
    }

    /// The position of the first range that holds `ip`: of the ranges that hold it, one
    /// per prefix length at most, the earliest.
    fn first(&self, ip: IpAddr) -> Option<usize> {
        let v6 = ip.is_ipv6();
        let lengths = self.lengths.iter().filter(|(family, _)| *family == v6);
        lengths.filter_map(|&(_, prefix)| self.first.get(&key(ip, prefix)).copied()).min()
    }
}

/// `ip` cut to its first `prefix` bits, with its family: equal for every address a range
/// of that prefix holds, and for that range's network address.
fn key(ip: IpAddr, prefix: u8) -> (bool, u8, u128) {
    match ip {
        IpAddr::V4(a) => (false, prefix, u128::from(u32::from(a) & u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0))),
        IpAddr::V6(a) => (true, prefix, u128::from(a) & u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::net::Cidr;
    use crate::model::policy::{Canned, Settings, Seed};
    use proptest::prelude::*;

    /// A request as the rules read it; counts the path reads.
    struct Req {
        path: String,
        method: String,
        client: Option<IpAddr>,
        paths_read: usize,
    }

    impl RequestView for Req {
        fn path(&mut self) -> String {
            self.paths_read += 1;
            self.path.clone()
        }
        fn method(&mut self) -> String {
            self.method.clone()
        }
        fn header(&mut self, name: &str) -> Option<String> {
            (name == "x-a").then(|| "1".into())
        }
        fn client(&mut self) -> Option<IpAddr> {
            self.client
        }
        fn destination(&mut self) -> Option<IpAddr> {
            None
        }
    }

    fn req(method: &str, path: &str) -> Req {
        Req { path: path.into(), method: method.into(), client: "10.0.0.1".parse().ok(), paths_read: 0 }
    }

    fn rules(texts: &[String]) -> Vec<Rule> {
        crate::model::document::parse(format!(r#"{{"rules": [{}]}}"#, texts.join(",")).as_bytes(), 0).unwrap().rules
    }

    fn at(found: Option<(usize, &Rule)>) -> Option<usize> {
        found.map(|(at, _)| at)
    }

    #[test]
    fn exact_paths_are_found_among_the_others_in_order() {
        let rules = rules(&[
            r#"{"match": {"path": {"exact": "/a"}, "method": "POST"}, "fault": {"abort": {"status": 501}}}"#.into(),
            r#"{"match": {"path": {"prefix": "/a"}}, "fault": {"abort": {"status": 502}}}"#.into(),
            r#"{"match": {"path": {"exact": "/a"}}, "fault": {"abort": {"status": 503}}}"#.into(),
            r#"{"match": {"path": {"exact": "/b"}}, "fault": {"abort": {"status": 504}}}"#.into(),
            r#"{"fault": {"abort": {"status": 505}}, "direction": "outbound"}"#.into(),
        ]);
        let index = Index::of(&State { rules: rules.clone(), ..State::default() });
        let inbound = Direction::Inbound;
        assert_eq!(at(index.first_match(&rules, inbound, &mut req("POST", "/a"))), Some(0));
        assert_eq!(at(index.first_match(&rules, inbound, &mut req("GET", "/a"))), Some(1));
        assert_eq!(at(index.first_match(&rules[2..], inbound, &mut req("GET", "/a"))), Some(0), "another list: scanned");
        assert_eq!(at(index.first_match(&rules, inbound, &mut req("GET", "/b"))), Some(3));
        assert_eq!(at(index.first_match(&rules, inbound, &mut req("GET", "/c"))), None);
        assert_eq!(at(index.first_match(&rules, Direction::Outbound, &mut req("GET", "/c"))), Some(4));
    }

    #[test]
    fn sixty_four_exact_rules_read_the_path_once() {
        let texts: Vec<String> = (0..64).map(|i| format!(r#"{{"match": {{"path": {{"exact": "/r/{i}"}}}}, "fault": {{"abort": {{"status": 503}}}}}}"#)).collect();
        let rules = rules(&texts);
        let index = Index::of(&State { rules: rules.clone(), ..State::default() });
        let mut request = req("GET", "/");
        assert_eq!(at(index.first_match(&rules, Direction::Inbound, &mut request)), None);
        assert_eq!(request.paths_read, 1);
        let mut request = req("GET", "/r/63");
        assert_eq!(at(index.first_match(&rules, Direction::Inbound, &mut request)), Some(63));
        assert_eq!(request.paths_read, 2, "once for the index, once by the rule's own match");
        // Without exact paths, the path is read only as the rules ask for it.
        let mut request = req("GET", "/");
        assert_eq!(at(Index::default().first_match(&[], Direction::Inbound, &mut request)), None);
        assert_eq!(request.paths_read, 0);
    }

    fn bound(ranges: &[&str]) -> State {
        let mut state = State::default();
        for (i, range) in ranges.iter().enumerate() {
            let given = Settings { status: 500 + i as u16, ..Settings::default() };
            let policy = Seed { fault: Seed::build("statusResponse", &given, &Canned::default()).unwrap(), until_ms: None, given };
            state.bind(&Cidr::parse(range).unwrap(), policy);
        }
        state
    }

    #[test]
    fn the_narrowest_binding_holds_the_client() {
        let state = bound(&["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3", "::/0", "0.0.0.0/0"]);
        let index = Index::of(&state);
        let status = |ip: &str| index.policy_for(&state, Some(ip.parse().unwrap())).given.status;
        assert_eq!(status("10.1.2.3"), 502);
        assert_eq!(status("10.1.2.4"), 501);
        assert_eq!(status("10.2.0.1"), 500);
        assert_eq!(status("11.0.0.1"), 504);
        assert_eq!(status("::1"), 503);
        assert_eq!(index.policy_for(&state, None).name(), "none");
        // Another state than the index's: the scan answers.
        let other = bound(&["10.1.2.0/24"]);
        assert_eq!(index.policy_for(&other, Some("10.1.2.3".parse().unwrap())).given.status, 500);
    }

    /// Ranges and addresses from a small space, so that they often overlap.
    fn range() -> impl Strategy<Value = Cidr> {
        prop_oneof![
            (0u8..4, 0u8..4, 0u8..=32).prop_map(|(a, b, prefix)| Cidr::parse(&format!("10.{a}.{b}.7/{prefix}")).unwrap()),
            (0u16..4, 0u8..=128).prop_map(|(a, prefix)| Cidr::parse(&format!("fd00:{a}::7/{prefix}")).unwrap()),
        ]
    }

    fn address() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u8..4, 0u8..4, 0u8..9).prop_map(|(a, b, c)| format!("10.{a}.{b}.{c}").parse().unwrap()),
            (0u16..4, 0u16..9).prop_map(|(a, c)| format!("fd00:{a}::{c}").parse().unwrap()),
            Just("::ffff:10.0.0.7".parse().unwrap()),
        ]
    }

    fn rule_text() -> impl Strategy<Value = String> {
        let path = prop_oneof![
            Just(String::new()),
            prop::sample::select(vec!["/a", "/b", "/a/b"]).prop_map(|p| format!(r#""path": {{"exact": "{p}"}},"#)),
            prop::sample::select(vec!["/", "/a"]).prop_map(|p| format!(r#""path": {{"prefix": "{p}"}},"#)),
        ];
        let method = prop::sample::select(vec!["", r#""method": "GET","#, r#""method": "POST","#]);
        let header = prop::sample::select(vec!["", r#""headers": [{"name": "x-a", "present": true}],"#, r#""headers": [{"name": "x-b", "present": true}],"#]);
        let direction = prop::sample::select(vec!["", r#""direction": "outbound","#]);
        (path, method, header, direction).prop_map(|(path, method, header, direction)| {
            let conditions = format!("{path}{method}{header}");
            format!(r#"{{{direction} "match": {{{}}}, "fault": {{"abort": {{"status": 503}}}}}}"#, conditions.trim_end_matches(','))
        })
    }

    proptest! {
        #[test]
        fn the_binding_index_answers_as_the_scan(ranges in prop::collection::vec(range(), 0..24), sorted in any::<bool>(), ips in prop::collection::vec(address(), 1..16)) {
            // Kept narrowest first, as `bind` keeps them, or in any order, as a stored state
            // edited by hand might have them: the first that holds the client wins either way.
            let mut state = State::default();
            for (i, r) in ranges.iter().enumerate() {
                if state.policy_of(r).is_none() {
                    let given = Settings { retries: i as u32, ..Settings::default() };
                    let policy = Seed { fault: Seed::build("statusResponse", &given, &Canned::default()).unwrap(), until_ms: None, given };
                    if sorted {
                        state.bind(r, policy);
                    } else {
                        state.bindings.push(crate::model::policy::Binding { clients: *r, seed: policy });
                    }
                }
            }
            let index = Index::of(&state);
            for ip in ips {
                prop_assert_eq!(index.policy_for(&state, Some(ip)), state.policy_for(Some(ip)), "{}", ip);
            }
        }

        #[test]
        fn the_rule_index_answers_as_the_scan(texts in prop::collection::vec(rule_text(), 0..12), requests in prop::collection::vec((prop::sample::select(vec!["GET", "POST"]), prop::sample::select(vec!["/", "/a", "/b", "/a/b", "/c"])), 1..8)) {
            let rules = rules(&texts);
            let index = Index::of(&State { rules: rules.clone(), ..State::default() });
            for (method, path) in requests {
                for direction in [Direction::Inbound, Direction::Outbound] {
                    let indexed = at(index.first_match(&rules, direction, &mut req(method, path)));
                    prop_assert_eq!(indexed, at(rules::first_match(&rules, direction, &mut req(method, path))), "{} {}", method, path);
                }
            }
        }
    }
}
