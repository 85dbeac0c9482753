//! HTTPRoute matching, precedence, traffic split, header filters and URL rewrites, compiled from
//! config.

use std::cmp::Ordering;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use regex::Regex;

use crate::config::{self, HeaderModifier, HttpRouteFilter, PathMatchType, PathModifier, ValueMatchType};

/// The routes of one service, compiled for matching.
#[derive(Debug)]
pub struct RouteTable {
    rules: Vec<Arc<Rule>>,
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Name used in metrics.
    pub name: String,
    matches: Vec<Match>,
    /// Weighted backends (service names); never empty for a forwarding rule.
    pub backends: Vec<(String, u32)>,
    total_weight: u64,
    /// Request header changes.
    pub request_headers: Vec<HeaderModifier>,
    /// Response header changes.
    pub response_headers: Vec<HeaderModifier>,
    /// When set, answer with this redirect instead of forwarding.
    pub redirect: Option<config::RequestRedirect>,
    /// Timeouts.
    pub timeouts: config::Timeouts,
    /// Retry policy.
    pub retry: Option<config::RetryPolicy>,
    /// Fault injection.
    pub fault: Option<config::FaultInjection>,
    /// URLRewrite filter.
    pub rewrite: Option<Rewrite>,
    /// RequestMirror filters.
    pub mirrors: Vec<config::RequestMirror>,
}

/// A compiled URLRewrite filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewrite {
    /// New `Host` / `:authority`.
    pub hostname: Option<String>,
    /// New path.
    pub path: Option<PathRewrite>,
}

/// How a URLRewrite changes the path.
#[derive(Debug, Clone, PartialEq)]
pub enum PathRewrite {
    /// Replace the whole path.
    Full(String),
    /// Replace the matched `prefix` with `replacement`; both are kept without a trailing `/`.
    Prefix {
        /// The rule's PathPrefix match value.
        prefix: String,
        /// What replaces it.
        replacement: String,
    },
}

impl PathRewrite {
    /// The rewritten path, following Gateway API's ReplacePrefixMatch table: path elements are
    /// replaced whole and trailing slashes of prefix and replacement are ignored, so with prefix
    /// `/foo`, `/foo/bar` becomes `/xyz/bar` for `/xyz` or `/xyz/`, and `/bar` for `` or `/`;
    /// a path that would be empty is `/`.
    pub fn apply(&self, path: &str) -> String {
        match self {
            PathRewrite::Full(p) => p.clone(),
            PathRewrite::Prefix { prefix, replacement } => {
                // Requests reaching here matched the prefix; anything else is left as it is.
                let rest = path.strip_prefix(prefix.as_str()).filter(|r| r.is_empty() || r.starts_with('/'));
                let Some(rest) = rest else { return path.to_string() };
                let out = format!("{replacement}{rest}");
                if out.is_empty() { "/".to_string() } else { out }
            }
        }
    }
}

/// The URI of a request after `rewrite` (query kept), and its `Host` header changed when the
/// hostname is rewritten. `None` when the result is not a valid URI.
pub fn rewrite_uri(uri: &Uri, headers: &mut HeaderMap, rewrite: &Rewrite) -> Option<Uri> {
    let mut parts = uri.clone().into_parts();
    if let Some(path) = &rewrite.path {
        let new = path.apply(uri.path());
        let pq = match uri.query() {
            Some(q) => format!("{new}?{q}"),
            None => new,
        };
        parts.path_and_query = Some(pq.parse().ok()?);
    }
    if let Some(host) = &rewrite.hostname {
        headers.insert(header::HOST, HeaderValue::from_str(host).ok()?);
        if parts.authority.is_some() {
            parts.authority = Some(host.parse().ok()?);
        }
    }
    Uri::from_parts(parts).ok()
}

#[derive(Debug)]
struct Match {
    path: PathMatcher,
    method: Option<Method>,
    headers: Vec<(HeaderName, ValueMatcher)>,
    query: Vec<(String, ValueMatcher)>,
}

#[derive(Debug)]
enum PathMatcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
enum ValueMatcher {
    Exact(String),
    Regex(Regex),
}

impl ValueMatcher {
    fn compile(m: &config::ValueMatch) -> Result<Self, regex::Error> {
        Ok(match m.kind {
            ValueMatchType::Exact => ValueMatcher::Exact(m.value.clone()),
            ValueMatchType::RegularExpression => ValueMatcher::Regex(anchored(&m.value)?),
        })
    }

    fn matches(&self, v: &str) -> bool {
        match self {
            ValueMatcher::Exact(want) => want == v,
            ValueMatcher::Regex(re) => re.is_match(v),
        }
    }
}

fn anchored(re: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{re})$"))
}

/// How specific a match is; greater wins (Gateway API precedence, §1.6 of the mesh notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Score {
    /// 2 = Exact, 1 = RegularExpression (implementation-specific: above prefixes), 0 = PathPrefix.
    path_kind: u8,
    path_len: usize,
    method: bool,
    headers: usize,
    query: usize,
}

/// What a request looks like to the matcher.
pub struct RequestView<'a> {
    /// Method.
    pub method: &'a Method,
    /// Path without query.
    pub path: &'a str,
    /// Raw query string, if any.
    pub query: Option<&'a str>,
    /// Headers.
    pub headers: &'a HeaderMap,
}

impl RouteTable {
    /// Compiles a service's routes. The config must have been validated.
    pub fn compile(service: &config::Service) -> Result<Self, regex::Error> {
        let rules = service.routes.iter().enumerate().map(|(i, r)| Rule::compile(i, r, &service.name).map(Arc::new));
        Ok(RouteTable { rules: rules.collect::<Result<_, _>>()? })
    }

    /// Whether any rule retries.
    pub fn retries(&self) -> bool {
        self.rules.iter().any(|r| r.retry.is_some())
    }

    /// True when the service has no routes (all traffic goes to its own endpoints).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The most specific matching rule; ties go to the earlier rule. `None` = 404.
    pub fn find(&self, req: &RequestView<'_>) -> Option<&Arc<Rule>> {
        let mut best: Option<(Score, &Arc<Rule>)> = None;
        for rule in &self.rules {
            let Some(score) = rule.matches.iter().filter_map(|m| m.score(req)).max() else { continue };
            if best.as_ref().is_none_or(|(b, _)| score.cmp(b) == Ordering::Greater) {
                best = Some((score, rule));
            }
        }
        best.map(|(_, r)| r)
    }
}

impl Rule {
    /// The rule of a service without routes: every request, to the service's own endpoints.
    pub fn default_for(service: &str) -> Self {
        Rule {
            name: "default".into(),
            matches: vec![Match::any()],
            backends: vec![(service.to_string(), 1)],
            total_weight: 1,
            request_headers: vec![],
            response_headers: vec![],
            redirect: None,
            timeouts: config::Timeouts::default(),
            retry: None,
            fault: None,
            rewrite: None,
            mirrors: vec![],
        }
    }

    fn compile(index: usize, r: &config::HttpRoute, service: &str) -> Result<Self, regex::Error> {
        let mut matches = r.matches.iter().map(Match::compile).collect::<Result<Vec<_>, _>>()?;
        if matches.is_empty() {
            matches.push(Match::any());
        }
        let mut backends: Vec<(String, u32)> = r.backend_refs.iter().map(|b| (b.name.clone(), b.weight)).collect();
        if backends.is_empty() {
            backends.push((service.to_string(), 1));
        }
        let mut rule = Rule {
            name: r.name.clone().unwrap_or_else(|| index.to_string()),
            matches,
            total_weight: backends.iter().map(|(_, w)| u64::from(*w)).sum(),
            backends,
            request_headers: vec![],
            response_headers: vec![],
            redirect: None,
            timeouts: r.timeouts,
            retry: r.retry.clone(),
            fault: r.fault.clone(),
            rewrite: None,
            mirrors: vec![],
        };
        // Validation allows ReplacePrefixMatch only with a single PathPrefix match (or none: `/`).
        let prefix = r.matches.first().and_then(|m| m.path.as_ref()).map_or("", |p| p.value.trim_end_matches('/'));
        for f in &r.filters {
            match f {
                HttpRouteFilter::RequestHeaderModifier { request_header_modifier: m } => {
                    // A `Host` it sets names the request's authority too, as a URLRewrite
                    // hostname does (where the request target has one, the upstream request is
                    // addressed by it); a URLRewrite hostname wins, as it is applied last.
                    if let Some(host) = m.set.iter().chain(&m.add).find(|h| h.name.eq_ignore_ascii_case("host")) {
                        let rewrite = rule.rewrite.get_or_insert(Rewrite { hostname: None, path: None });
                        rewrite.hostname.get_or_insert_with(|| host.value.clone());
                    }
                    rule.request_headers.push(m.clone())
                }
                HttpRouteFilter::ResponseHeaderModifier { response_header_modifier } => {
                    rule.response_headers.push(response_header_modifier.clone())
                }
                HttpRouteFilter::RequestRedirect { request_redirect } => rule.redirect = Some(request_redirect.clone()),
                HttpRouteFilter::UrlRewrite { url_rewrite } => {
                    let path = url_rewrite.path.as_ref().map(|p| match p {
                        PathModifier::ReplaceFullPath { replace_full_path } => {
                            PathRewrite::Full(replace_full_path.clone())
                        }
                        PathModifier::ReplacePrefixMatch { replace_prefix_match } => PathRewrite::Prefix {
                            prefix: prefix.to_string(),
                            replacement: replace_prefix_match.trim_end_matches('/').to_string(),
                        },
                    });
                    let set_host = rule.rewrite.take().and_then(|r| r.hostname);
                    rule.rewrite = Some(Rewrite { hostname: url_rewrite.hostname.clone().or(set_host), path });
                }
                HttpRouteFilter::RequestMirror { request_mirror } => rule.mirrors.push(request_mirror.clone()),
            }
        }
        Ok(rule)
    }

    /// Picks a backend by weight; `roll` is uniform in `[0, 1)`.
    pub fn pick_backend(&self, roll: f64) -> &str {
        let mut target = (roll * self.total_weight as f64) as u64;
        for (name, weight) in &self.backends {
            if target < u64::from(*weight) {
                return name;
            }
            target -= u64::from(*weight);
        }
        // Only reachable through float rounding at roll ≈ 1: the last weighted backend.
        self.backends.iter().rev().find(|(_, w)| *w > 0).map_or(self.backends[0].0.as_str(), |(n, _)| n)
    }
}

impl Match {
    fn any() -> Self {
        Match { path: PathMatcher::Prefix(String::new()), method: None, headers: vec![], query: vec![] }
    }

    fn compile(m: &config::HttpRouteMatch) -> Result<Self, regex::Error> {
        let path = match &m.path {
            None => PathMatcher::Prefix(String::new()),
            Some(p) => match p.kind {
                PathMatchType::Exact => PathMatcher::Exact(p.value.clone()),
                PathMatchType::PathPrefix => PathMatcher::Prefix(p.value.trim_end_matches('/').to_string()),
                PathMatchType::RegularExpression => PathMatcher::Regex(anchored(&p.value)?),
            },
        };
        let headers = m
            .headers
            .iter()
            .filter_map(|h| Some((HeaderName::from_bytes(h.name.as_bytes()).ok()?, ValueMatcher::compile(h))))
            .map(|(n, v)| v.map(|v| (n, v)))
            .collect::<Result<_, _>>()?;
        let query = m
            .query_params
            .iter()
            .map(|q| ValueMatcher::compile(q).map(|v| (q.name.clone(), v)))
            .collect::<Result<_, _>>()?;
        let method = m.method.as_deref().and_then(|s| Method::from_bytes(s.as_bytes()).ok());
        Ok(Match { path, method, headers, query })
    }

    fn score(&self, req: &RequestView<'_>) -> Option<Score> {
        let (path_kind, path_len) = match &self.path {
            PathMatcher::Exact(p) => (p == req.path).then_some((2, p.len()))?,
            PathMatcher::Regex(re) => re.is_match(req.path).then_some((1, 0))?,
            PathMatcher::Prefix(p) => {
                let rest = req.path.strip_prefix(p.as_str())?;
                (rest.is_empty() || rest.starts_with('/')).then_some((0, p.len().max(1)))?
            }
        };
        if self.method.as_ref().is_some_and(|m| m != req.method) {
            return None;
        }
        for (name, matcher) in &self.headers {
            let value = req.headers.get(name)?.to_str().ok()?;
            if !matcher.matches(value) {
                return None;
            }
        }
        for (name, matcher) in &self.query {
            if !matcher.matches(query_param(req.query, name)?) {
                return None;
            }
        }
        Some(Score {
            path_kind,
            path_len,
            method: self.method.is_some(),
            headers: self.headers.len(),
            query: self.query.len(),
        })
    }
}

/// The first value of `name` in a raw query string (no percent-decoding).
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// Applies `set`, `add` and `remove`; invalid names/values were rejected by validation.
pub fn apply_header_modifier(headers: &mut HeaderMap, m: &HeaderModifier) {
    for h in &m.set {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_str(&h.value)) {
            headers.insert(n, v);
        }
    }
    for h in &m.add {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_str(&h.value)) {
            headers.append(n, v);
        }
    }
    for name in &m.remove {
        if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(n);
        }
    }
}

/// The `Location` for a redirect, given the request's scheme, host header and path-and-query.
pub fn redirect_location(r: &config::RequestRedirect, scheme: &str, host: &str, path_and_query: &str) -> String {
    let (req_host, req_port) = split_host_port(host);
    let new_scheme = r.scheme.as_deref().unwrap_or(scheme);
    let port = match (r.port, &r.scheme) {
        (Some(p), _) => Some(p),
        (None, Some(_)) => None,
        (None, None) => req_port,
    };
    let port = port.filter(|p| !matches!((new_scheme, p), ("http", 80) | ("https", 443)));
    let host = r.hostname.as_deref().unwrap_or(req_host);
    let path = match &r.path {
        Some(p) => p.as_str(),
        None => path_and_query,
    };
    match port {
        Some(p) => format!("{new_scheme}://{host}:{p}{path}"),
        None => format!("{new_scheme}://{host}{path}"),
    }
}

fn split_host_port(host: &str) -> (&str, Option<u16>) {
    let colon = if host.starts_with('[') { host.find("]:").map(|i| i + 1) } else { host.rfind(':') };
    match colon.and_then(|i| Some((&host[..i], host[i + 1..].parse::<u16>().ok()?))) {
        Some((h, p)) => (h, Some(p)),
        None => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProxyConfig;

    fn table(routes_yaml: &str) -> RouteTable {
        let yaml = format!(
            "apiVersion: kapal.dev/v1alpha1\nkind: ProxyConfig\nservices:\n  - name: web\n    routes:\n{routes_yaml}\n  - name: v2\n"
        );
        let cfg = ProxyConfig::from_yaml(&yaml).unwrap();
        RouteTable::compile(&cfg.services[0]).unwrap()
    }

    fn find<'a>(t: &'a RouteTable, method: &str, uri: &str, headers: &[(&str, &str)]) -> Option<&'a str> {
        let uri: http::Uri = uri.parse().unwrap();
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let view = RequestView { method: &method, path: uri.path(), query: uri.query(), headers: &map };
        t.find(&view).map(|r| r.name.as_str())
    }

    #[test]
    fn prefix_is_segment_wise() {
        let t = table("      - {name: abc, matches: [{path: {value: /abc/}}]}");
        assert_eq!(find(&t, "GET", "/abc", &[]), Some("abc"));
        assert_eq!(find(&t, "GET", "/abc/", &[]), Some("abc"));
        assert_eq!(find(&t, "GET", "/abc/def", &[]), Some("abc"));
        assert_eq!(find(&t, "GET", "/abcd", &[]), None);
        assert_eq!(find(&t, "GET", "/Abc", &[]), None);
    }

    #[test]
    fn exact_and_regex_paths() {
        let t = table(
            "      - {name: exact, matches: [{path: {type: Exact, value: /abc}}]}
      - {name: re, matches: [{path: {type: RegularExpression, value: '/users/[0-9]+'}}]}",
        );
        assert_eq!(find(&t, "GET", "/abc", &[]), Some("exact"));
        assert_eq!(find(&t, "GET", "/abc/", &[]), None);
        assert_eq!(find(&t, "GET", "/users/42", &[]), Some("re"));
        // The expression must match the whole path.
        assert_eq!(find(&t, "GET", "/users/42/x", &[]), None);
    }

    #[test]
    fn precedence_follows_gateway_api() {
        let t = table(
            "      - {name: catchall}
      - {name: api, matches: [{path: {value: /api}}]}
      - {name: api-v1, matches: [{path: {value: /api/v1}}]}
      - {name: api-get, matches: [{path: {value: /api}, method: GET}]}
      - {name: api-hdr, matches: [{path: {value: /api}, headers: [{name: X-Canary, value: 'yes'}]}]}
      - {name: exact, matches: [{path: {type: Exact, value: /api/v1/x}}]}
      - {name: query, matches: [{path: {value: /api}, method: GET, queryParams: [{name: debug, value: '1'}]}]}",
        );
        assert_eq!(find(&t, "GET", "/other", &[]), Some("catchall"));
        assert_eq!(find(&t, "POST", "/api", &[]), Some("api"));
        assert_eq!(find(&t, "POST", "/api/v1/y", &[]), Some("api-v1"));
        assert_eq!(find(&t, "GET", "/api/v1/x", &[]), Some("exact"));
        // Method outranks headers; header names are case-insensitive.
        assert_eq!(find(&t, "GET", "/api", &[("x-canary", "yes")]), Some("api-get"));
        assert_eq!(find(&t, "PUT", "/api", &[("x-canary", "yes")]), Some("api-hdr"));
        assert_eq!(find(&t, "PUT", "/api", &[("x-canary", "no")]), Some("api"));
        assert_eq!(find(&t, "GET", "/api?a=b&debug=1", &[]), Some("query"));
        assert_eq!(find(&t, "GET", "/api?debug=2", &[]), Some("api-get"));
    }

    #[test]
    fn regex_header_matches_select_their_rule() {
        let t = table(
            r"      - {name: v2-api, matches: [{path: {value: /api}, headers: [{name: x-version, type: RegularExpression, value: 'v2\.[0-9]+'}]}]}
      - {name: beta, matches: [{headers: [{name: x-client, type: RegularExpression, value: '(ios|android)-beta'}]}]}",
        );
        assert_eq!(find(&t, "GET", "/api/users", &[("x-version", "v2.13")]), Some("v2-api"));
        assert_eq!(find(&t, "GET", "/other", &[("x-client", "android-beta")]), Some("beta"));
        // Both match: the longer path prefix decides.
        assert_eq!(find(&t, "GET", "/api", &[("x-version", "v2.0"), ("x-client", "ios-beta")]), Some("v2-api"));
        // The expression must match the whole value, and a missing header matches nothing.
        for value in ["v2.", "v3.1", "v2.1-rc", "xv2.1", "v2x1"] {
            assert_eq!(find(&t, "GET", "/api", &[("x-version", value)]), None, "x-version: {value}");
        }
        assert_eq!(find(&t, "GET", "/api", &[("x-client", "web-beta")]), None);
        assert_eq!(find(&t, "GET", "/api", &[]), None);
    }

    #[test]
    fn regex_query_matches_select_their_rule() {
        let t = table(
            "      - {name: any}
      - {name: traced, matches: [{queryParams: [{name: trace, type: RegularExpression, value: '[0-9a-f]{8}'}]}]}
      - {name: paged, matches: [{path: {value: /list}, queryParams: [{name: page, type: RegularExpression, value: '[1-9][0-9]*'}, {name: trace, value: 'off'}]}]}",
        );
        assert_eq!(find(&t, "GET", "/x?trace=deadbeef", &[]), Some("traced"));
        assert_eq!(find(&t, "GET", "/x?a=1&trace=0badf00d&b", &[]), Some("traced"));
        assert_eq!(find(&t, "GET", "/list?page=12&trace=off", &[]), Some("paged"));
        // Whole values only, and case-sensitive.
        for query in ["trace=DEADBEEF", "trace=deadbeef0", "trace=deadbee", "xtrace=deadbeef", "trace="] {
            assert_eq!(find(&t, "GET", &format!("/x?{query}"), &[]), Some("any"), "{query}");
        }
        assert_eq!(find(&t, "GET", "/list?page=0&trace=off", &[]), Some("any"));
        assert_eq!(find(&t, "GET", "/list?page=3", &[]), Some("any"));
    }

    #[test]
    fn ties_go_to_the_first_rule_and_matches_are_ored() {
        let t = table(
            "      - {name: first, matches: [{path: {value: /a}}, {path: {value: /b}}]}
      - {name: second, matches: [{path: {value: /b}}]}",
        );
        assert_eq!(find(&t, "GET", "/a", &[]), Some("first"));
        assert_eq!(find(&t, "GET", "/b", &[]), Some("first"));
        assert_eq!(find(&t, "GET", "/c", &[]), None);
    }

    #[test]
    fn weighted_backends_split_by_roll() {
        let t = table(
            "      - {name: split, backendRefs: [{name: web, weight: 90}, {name: v2, weight: 10}, {name: v2, weight: 0}]}",
        );
        let rule = &t.rules[0];
        let picks: Vec<&str> = (0..100).map(|i| rule.pick_backend(i as f64 / 100.0)).collect();
        assert_eq!(picks.iter().filter(|b| **b == "web").count(), 90);
        assert_eq!(picks.iter().filter(|b| **b == "v2").count(), 10);
        assert_eq!(rule.pick_backend(0.999_999_999_9), "v2");
    }

    #[test]
    fn header_modifier_sets_adds_and_removes() {
        let m = HeaderModifier {
            set: vec![config::HeaderValue { name: "x-set".into(), value: "new".into() }],
            add: vec![config::HeaderValue { name: "x-add".into(), value: "two".into() }],
            remove: vec!["x-gone".into()],
        };
        let mut h = HeaderMap::new();
        h.insert("x-set", "old".parse().unwrap());
        h.insert("x-add", "one".parse().unwrap());
        h.insert("x-gone", "1".parse().unwrap());
        apply_header_modifier(&mut h, &m);
        assert_eq!(h["x-set"], "new");
        assert_eq!(h.get_all("x-add").iter().collect::<Vec<_>>(), vec!["one", "two"]);
        assert!(!h.contains_key("x-gone"));
    }

    #[test]
    fn prefix_rewrites_follow_the_gateway_api_table() {
        // (request path, prefix match, replacePrefixMatch, result), from the HTTPPathModifier docs.
        let table = [
            ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz/"),
            ("/foo/bar", "/foo", "", "/bar"),
            ("/foo/", "/foo", "", "/"),
            ("/foo", "/foo", "", "/"),
            ("/foo/", "/foo", "/", "/"),
            ("/foo", "/foo", "/", "/"),
            ("/anything", "/", "/one", "/one/anything"),
            ("/", "/", "/one", "/one/"),
        ];
        for (path, prefix, replacement, want) in table {
            let t = table_with_rewrite(prefix, replacement);
            let rw = t.rules[0].rewrite.as_ref().unwrap().path.as_ref().unwrap();
            assert_eq!(rw.apply(path), want, "{path} with prefix {prefix:?} -> {replacement:?}");
        }
        // Element-wise: `/foobar` does not have the prefix `/foo` and is left alone.
        let rw = PathRewrite::Prefix { prefix: "/foo".into(), replacement: "/x".into() };
        assert_eq!(rw.apply("/foobar"), "/foobar");
    }

    fn table_with_rewrite(prefix: &str, replacement: &str) -> RouteTable {
        table(&format!(
            "      - matches: [{{path: {{value: '{prefix}'}}}}]
        filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: '{replacement}'}}}}}}]"
        ))
    }

    #[test]
    fn url_rewrite_keeps_the_query_and_replaces_host_and_authority() {
        let rw = Rewrite { hostname: Some("api.internal".into()), path: Some(PathRewrite::Full("/v2/all".into())) };
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "web:8080".parse().unwrap());
        let uri = rewrite_uri(&"/v1/x?y=1&z".parse().unwrap(), &mut headers, &rw).unwrap();
        assert_eq!(uri, "/v2/all?y=1&z");
        assert_eq!(headers[header::HOST], "api.internal");
        // HTTP/2 requests carry the authority in the URI.
        let uri = rewrite_uri(&"http://web:8080/v1".parse().unwrap(), &mut HeaderMap::new(), &rw).unwrap();
        assert_eq!(uri, "http://api.internal/v2/all");
        let host_only = Rewrite { hostname: Some("b".into()), path: None };
        assert_eq!(rewrite_uri(&"/keep?q".parse().unwrap(), &mut HeaderMap::new(), &host_only).unwrap(), "/keep?q");
    }

    #[test]
    fn redirect_locations() {
        let r = config::RequestRedirect { path: Some("/new".into()), ..Default::default() };
        assert_eq!(redirect_location(&r, "http", "example.com:8080", "/old?x=1"), "http://example.com:8080/new");
        let r = config::RequestRedirect { scheme: Some("https".into()), ..Default::default() };
        assert_eq!(redirect_location(&r, "http", "example.com:8080", "/p?x=1"), "https://example.com/p?x=1");
        let r = config::RequestRedirect { hostname: Some("other".into()), port: Some(80), ..Default::default() };
        assert_eq!(redirect_location(&r, "http", "example.com", "/p"), "http://other/p");
    }
}
