//! Validation of a parsed [`ProxyConfig`]; every error names the offending field path.

use std::collections::HashSet;
use std::fmt;

use super::*;
use crate::identity::SpiffeId;

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `services[0].routes[1].backendRefs[0].name`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not valid YAML/JSON for the model (syntax, unknown field, wrong type).
    #[error("parsing proxy config: {0}")]
    Parse(String),
    /// The text parsed but some fields are invalid.
    #[error("invalid proxy config: {}", join(.0))]
    Invalid(Vec<FieldError>),
}

fn join(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { path: path.into(), message: message.into() });
    }
}

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

impl ProxyConfig {
    /// Checks every field; returns all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut e = Errors::default();
        if self.api_version != API_VERSION {
            e.add("apiVersion", format!("unsupported {:?}, expected {API_VERSION:?}", self.api_version));
        }
        if self.kind != KIND {
            e.add("kind", format!("unsupported {:?}, expected {KIND:?}", self.kind));
        }
        let names: HashSet<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
        let mut seen = HashSet::new();
        let mut listens = HashSet::new();
        let mut addresses = HashSet::new();
        for (i, svc) in self.services.iter().enumerate() {
            let p = format!("services[{i}]");
            if !seen.insert(svc.name.as_str()) {
                e.add(format!("{p}.name"), format!("duplicate service name {:?}", svc.name));
            }
            // Port 0 (tests, "any free port") never collides.
            if let Some(listen) = svc.listen
                && listen.port() != 0
                && !listens.insert(listen)
            {
                e.add(format!("{p}.listen"), format!("address {listen} is already used by another listener"));
            }
            for (j, addr) in svc.addresses.iter().enumerate() {
                if !addresses.insert(*addr) {
                    e.add(format!("{p}.addresses[{j}]"), format!("{addr} already identifies another service"));
                }
            }
            validate_service(&mut e, &p, svc, &names);
        }
        let mut inbound_listens = HashSet::new();
        for (i, inbound) in self.inbound.iter().enumerate() {
            // Inbound listeners are keyed by their configured address, so even port 0 must be unique.
            let collides = inbound.listen.port() != 0 && !listens.insert(inbound.listen);
            if !inbound_listens.insert(inbound.listen) || collides {
                e.add(
                    format!("inbound[{i}].listen"),
                    format!("address {} is already used by another listener", inbound.listen),
                );
            }
            if inbound.forward_port == 0 {
                e.add(format!("inbound[{i}].forwardPort"), "must be 1-65535");
            }
        }
        for (i, rule) in self.authorization.rules.iter().enumerate() {
            let p = format!("authorization.rules[{i}]");
            for (j, m) in rule.methods.iter().enumerate() {
                check_method(&mut e, &format!("{p}.methods[{j}]"), m);
            }
            for (j, id) in rule.identities.iter().enumerate() {
                if id.is_empty() {
                    e.add(format!("{p}.identities[{j}]"), "must not be empty");
                }
            }
        }
        if e.0.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(e.0)) }
    }
}

fn validate_service(e: &mut Errors, p: &str, svc: &Service, names: &HashSet<&str>) {
    if svc.name.is_empty() || !svc.name.chars().all(|c| c.is_ascii_alphanumeric() || "-._/".contains(c)) {
        e.add(format!("{p}.name"), format!("{:?} must be non-empty [a-zA-Z0-9-._/]", svc.name));
    }
    for (j, ep) in svc.endpoints.iter().enumerate() {
        if let Some(id) = &ep.identity
            && let Err(err) = SpiffeId::parse(id)
        {
            e.add(format!("{p}.endpoints[{j}].identity"), err.to_string());
        }
    }
    if svc.connect_timeout.0.is_zero() {
        e.add(format!("{p}.connectTimeout"), "must be greater than 0s");
    }
    let budget = &svc.retry_budget;
    if !(0.0..=1.0).contains(&budget.ratio) {
        e.add(format!("{p}.retryBudget.ratio"), format!("{} is not within 0.0-1.0", budget.ratio));
    }
    if budget.ttl.0 < std::time::Duration::from_secs(1) {
        e.add(format!("{p}.retryBudget.ttl"), "must be at least 1s");
    }
    if svc.load_balancer.decay.0.is_zero() {
        e.add(format!("{p}.loadBalancer.decay"), "must be greater than 0s");
    }
    if let Some(od) = &svc.outlier_detection {
        if od.consecutive_failures == 0 {
            e.add(format!("{p}.outlierDetection.consecutiveFailures"), "must be at least 1");
        }
        if od.base_ejection_time > od.max_ejection_time {
            e.add(format!("{p}.outlierDetection.baseEjectionTime"), "must not exceed maxEjectionTime");
        }
    }
    if !svc.routes.is_empty() && svc.protocol == Protocol::Opaque {
        e.add(format!("{p}.routes"), "HTTP routes cannot apply to an opaque service");
    }
    for (j, route) in svc.routes.iter().enumerate() {
        validate_route(e, &format!("{p}.routes[{j}]"), route, names);
    }
}

fn validate_route(e: &mut Errors, p: &str, route: &HttpRoute, names: &HashSet<&str>) {
    for (k, m) in route.matches.iter().enumerate() {
        let mp = format!("{p}.matches[{k}]");
        if let Some(path) = &m.path {
            check_path(e, &format!("{mp}.path.value"), path);
        }
        if let Some(method) = &m.method {
            check_method(e, &format!("{mp}.method"), method);
        }
        for (h, hm) in m.headers.iter().enumerate() {
            if http::HeaderName::from_bytes(hm.name.as_bytes()).is_err() {
                e.add(format!("{mp}.headers[{h}].name"), format!("{:?} is not a valid header name", hm.name));
            }
            check_value(e, &format!("{mp}.headers[{h}].value"), hm);
        }
        for (q, qm) in m.query_params.iter().enumerate() {
            if qm.name.is_empty() {
                e.add(format!("{mp}.queryParams[{q}].name"), "must not be empty");
            }
            check_value(e, &format!("{mp}.queryParams[{q}].value"), qm);
        }
    }
    let mut redirect = false;
    let mut rewrites = 0;
    for (f, filter) in route.filters.iter().enumerate() {
        let fp = format!("{p}.filters[{f}]");
        match filter {
            HttpRouteFilter::RequestHeaderModifier { request_header_modifier: m } => {
                check_modifier(e, &format!("{fp}.requestHeaderModifier"), m)
            }
            HttpRouteFilter::ResponseHeaderModifier { response_header_modifier: m } => {
                check_modifier(e, &format!("{fp}.responseHeaderModifier"), m)
            }
            HttpRouteFilter::RequestRedirect { request_redirect: r } => {
                redirect = true;
                check_redirect(e, &format!("{fp}.requestRedirect"), r);
            }
            HttpRouteFilter::UrlRewrite { url_rewrite: r } => {
                rewrites += 1;
                if rewrites > 1 {
                    e.add(format!("{fp}.type"), "URLRewrite may be used at most once per rule");
                }
                check_rewrite(e, &format!("{fp}.urlRewrite"), r, &route.matches);
            }
            HttpRouteFilter::RequestMirror { request_mirror: m } => {
                let mp = format!("{fp}.requestMirror");
                if !names.contains(m.backend_ref.name.as_str()) {
                    e.add(format!("{mp}.backendRef.name"), format!("no service named {:?}", m.backend_ref.name));
                }
                if m.percent > 100 {
                    e.add(format!("{mp}.percent"), format!("{} is not within 0-100", m.percent));
                }
            }
        }
    }
    if redirect && rewrites > 0 {
        e.add(format!("{p}.filters"), "RequestRedirect and URLRewrite cannot be used in the same rule");
    }
    if redirect && !route.backend_refs.is_empty() {
        e.add(format!("{p}.backendRefs"), "must be empty when a RequestRedirect filter is used");
    }
    for (b, backend) in route.backend_refs.iter().enumerate() {
        if !names.contains(backend.name.as_str()) {
            e.add(format!("{p}.backendRefs[{b}].name"), format!("no service named {:?}", backend.name));
        }
        if backend.weight > 1_000_000 {
            e.add(format!("{p}.backendRefs[{b}].weight"), "must be 0-1000000");
        }
    }
    if !route.backend_refs.is_empty() && route.backend_refs.iter().all(|b| b.weight == 0) {
        e.add(format!("{p}.backendRefs"), "at least one backend needs a weight above 0");
    }
    if let (Some(req), Some(try_)) =
        (route.timeouts.request.and_then(Duration::enabled), route.timeouts.backend_request)
        && try_.0 > req
    {
        e.add(format!("{p}.timeouts.backendRequest"), "must not exceed timeouts.request");
    }
    if let Some(retry) = &route.retry {
        if retry.attempts == 0 || retry.attempts > 10 {
            e.add(format!("{p}.retry.attempts"), "must be 1-10");
        }
        for (c, code) in retry.grpc_codes.iter().enumerate() {
            if !(1..=16).contains(code) {
                e.add(format!("{p}.retry.grpcCodes[{c}]"), format!("{code} is not a gRPC error code (1-16)"));
            }
        }
        for (c, code) in retry.codes.iter().enumerate() {
            if !(400..=599).contains(code) {
                e.add(format!("{p}.retry.codes[{c}]"), format!("{code} is not within 400-599"));
            }
        }
    }
    if let Some(fault) = &route.fault {
        if let Some(d) = &fault.delay
            && !(0.0..=100.0).contains(&d.percentage)
        {
            e.add(format!("{p}.fault.delay.percentage"), "must be within 0-100");
        }
        if let Some(a) = &fault.abort {
            if !(0.0..=100.0).contains(&a.percentage) {
                e.add(format!("{p}.fault.abort.percentage"), "must be within 0-100");
            }
            if !(200..=599).contains(&a.http_status) {
                e.add(format!("{p}.fault.abort.httpStatus"), "must be within 200-599");
            }
        }
    }
}

fn check_path(e: &mut Errors, p: &str, path: &PathMatch) {
    let v = &path.value;
    match path.kind {
        PathMatchType::RegularExpression => {
            if let Err(err) = regex::Regex::new(v) {
                e.add(p, format!("invalid regular expression: {err}"));
            }
        }
        PathMatchType::Exact | PathMatchType::PathPrefix => {
            let lower = v.to_ascii_lowercase();
            if !v.starts_with('/') {
                e.add(p, format!("{v:?} must start with '/'"));
            } else if ["//", "/./", "/../", "%2f", "#"].iter().any(|bad| lower.contains(bad))
                || v.ends_with("/.")
                || v.ends_with("/..")
            {
                e.add(p, format!("{v:?} must not contain '//', '/./', '/../', '%2f' or '#', nor end in '/.' or '/..'"));
            } else if v.len() > 1024 {
                e.add(p, "must be at most 1024 characters");
            }
        }
    }
}

fn check_rewrite(e: &mut Errors, p: &str, r: &UrlRewrite, matches: &[HttpRouteMatch]) {
    if let Some(host) = &r.hostname
        && !is_precise_hostname(host)
    {
        e.add(format!("{p}.hostname"), format!("{host:?} must be a lowercase RFC 1123 host name without wildcards"));
    }
    match &r.path {
        None => {}
        Some(PathModifier::ReplaceFullPath { replace_full_path: v }) => {
            check_rewrite_path(e, &format!("{p}.path.replaceFullPath"), v, false)
        }
        Some(PathModifier::ReplacePrefixMatch { replace_prefix_match: v }) => {
            let fp = format!("{p}.path.replacePrefixMatch");
            check_rewrite_path(e, &fp, v, true);
            // As Gateway API requires: the rule has exactly one match and it is a PathPrefix (a
            // rule without matches is PathPrefix `/`, as the API server would default it).
            let prefix = |m: &HttpRouteMatch| m.path.as_ref().is_none_or(|p| p.kind == PathMatchType::PathPrefix);
            if matches.len() > 1 || matches.first().is_some_and(|m| !prefix(m)) {
                e.add(fp, "needs exactly one match, of type PathPrefix");
            }
        }
    }
}

fn check_rewrite_path(e: &mut Errors, p: &str, v: &str, may_be_empty: bool) {
    if v.is_empty() && may_be_empty {
        return;
    }
    if !v.starts_with('/') {
        e.add(p, format!("{v:?} must start with '/'"));
    } else if v.contains(['?', '#']) || v.parse::<http::uri::PathAndQuery>().is_err() {
        e.add(p, format!("{v:?} is not a valid path (no '?', '#', spaces or control characters)"));
    } else if v.len() > 1024 {
        e.add(p, "must be at most 1024 characters");
    }
}

/// Gateway API `PreciseHostname`: RFC 1123 labels, lowercase, no wildcard.
fn is_precise_hostname(h: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    h.len() <= 253 && h.split('.').all(label)
}

fn check_value(e: &mut Errors, p: &str, m: &ValueMatch) {
    if m.kind == ValueMatchType::RegularExpression
        && let Err(err) = regex::Regex::new(&m.value)
    {
        e.add(p, format!("invalid regular expression: {err}"));
    }
}

fn check_method(e: &mut Errors, p: &str, method: &str) {
    if !METHODS.contains(&method) {
        e.add(p, format!("{method:?} is not one of {}", METHODS.join(", ")));
    }
}

fn check_modifier(e: &mut Errors, p: &str, m: &HeaderModifier) {
    let all = m
        .set
        .iter()
        .map(|h| ("set", &h.name, Some(&h.value)))
        .chain(m.add.iter().map(|h| ("add", &h.name, Some(&h.value))));
    for (i, (field, name, value)) in all.chain(m.remove.iter().map(|n| ("remove", n, None))).enumerate() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            e.add(format!("{p}.{field}"), format!("entry {i}: {name:?} is not a valid header name"));
        }
        if let Some(v) = value
            && http::HeaderValue::from_str(v).is_err()
        {
            e.add(format!("{p}.{field}"), format!("entry {i}: value of {name:?} is not a valid header value"));
        }
    }
}

fn check_redirect(e: &mut Errors, p: &str, r: &RequestRedirect) {
    if let Some(s) = &r.scheme
        && s != "http"
        && s != "https"
    {
        e.add(format!("{p}.scheme"), format!("{s:?} must be http or https"));
    }
    if ![301, 302, 303, 307, 308].contains(&r.status_code) {
        e.add(format!("{p}.statusCode"), format!("{} must be one of 301, 302, 303, 307, 308", r.status_code));
    }
    if let Some(path) = &r.path
        && !path.starts_with('/')
    {
        e.add(format!("{p}.path"), "must start with '/'");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        match ProxyConfig::from_yaml(yaml) {
            Err(ConfigError::Invalid(errs)) => errs.into_iter().map(|e| e.path).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    const HEAD: &str = "apiVersion: kapal.dev/v1alpha1\nkind: ProxyConfig\n";

    #[test]
    fn full_example_parses_in_yaml_and_json() {
        let yaml = format!(
            "{HEAD}services:
  - name: web
    listen: 127.0.0.1:9000
    protocol: http1
    endpoints:
      - {{address: 127.0.0.1:8080, weight: 3, labels: {{version: v1}}}}
      - {{address: 127.0.0.1:8081, identity: spiffe://cluster.local/ns/default/sa/web}}
    routes:
      - name: api
        matches:
          - path: {{type: PathPrefix, value: /api}}
            method: GET
            headers: [{{name: x-user, value: alice}}]
            queryParams: [{{name: v, type: RegularExpression, value: '^[0-9]+$'}}]
        filters:
          - type: RequestHeaderModifier
            requestHeaderModifier: {{set: [{{name: x-a, value: b}}], remove: [x-secret]}}
        backendRefs: [{{name: web, weight: 90}}, {{name: web-v2, weight: 10}}]
        timeouts: {{request: 2s, backendRequest: 500ms}}
        retry: {{attempts: 2, codes: [503], backoff: 25ms}}
        fault: {{delay: {{fixedDelay: 100ms, percentage: 10}}, abort: {{httpStatus: 503, percentage: 5}}}}
      - matches: [{{path: {{type: Exact, value: /old}}}}]
        filters:
          - type: RequestRedirect
            requestRedirect: {{path: /new, statusCode: 301}}
    outlierDetection: {{consecutiveFailures: 3}}
  - name: web-v2
    endpoints: [{{address: 127.0.0.1:8082}}]
inbound:
  - {{listen: 0.0.0.0:4143, forwardPort: 8080, requireMtls: true}}
authorization:
  defaultAction: deny
  rules:
    - {{action: allow, identities: ['spiffe://cluster.local/ns/default/*'], methods: [GET]}}
"
        );
        let cfg = ProxyConfig::from_yaml(&yaml).unwrap();
        let web = cfg.service("web").unwrap();
        assert_eq!(web.endpoints[0].weight, 3);
        assert_eq!(web.endpoints[1].weight, 1);
        assert_eq!(web.routes[0].backend_refs[1].weight, 10);
        assert_eq!(web.routes[1].filters.len(), 1);
        assert_eq!(web.outlier_detection.unwrap().consecutive_failures, 3);
        assert_eq!(web.routes[0].retry.as_ref().unwrap().codes, vec![503]);
        assert_eq!(cfg.authorization.default_action, Action::Deny);
        // JSON round trip gives the same model (this is also what /config serves).
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(ProxyConfig::from_json(&json).unwrap(), cfg);
        assert_eq!(ProxyConfig::from_text(&json).unwrap(), cfg);
    }

    #[test]
    fn the_example_config_is_valid() {
        let cfg = ProxyConfig::from_yaml(include_str!("../../proxy.example.yaml")).unwrap();
        assert_eq!(cfg.services.len(), 3);
        assert_eq!(cfg.service("reviews").unwrap().routes.len(), 4);
    }

    #[test]
    fn wrong_version_and_kind_are_named() {
        let errs = errors("apiVersion: v9\nkind: Nope\n");
        assert_eq!(errs, vec!["apiVersion", "kind"]);
    }

    #[test]
    fn unknown_fields_and_bad_durations_are_parse_errors() {
        let err = ProxyConfig::from_yaml(&format!("{HEAD}servces: []\n")).unwrap_err();
        assert!(matches!(err, ConfigError::Parse(ref m) if m.contains("servces")), "{err}");
        let err =
            ProxyConfig::from_yaml(&format!("{HEAD}services: [{{name: a, endpoints: [], connectTimeout: 1.5s}}]\n"))
                .unwrap_err();
        assert!(err.to_string().contains("invalid duration"), "{err}");
    }

    #[test]
    fn field_paths_point_at_the_bad_field() {
        let errs = errors(&format!(
            "{HEAD}services:
  - name: a
    endpoints: [{{address: 127.0.0.1:1, identity: 'http://x'}}]
    routes:
      - matches: [{{path: {{value: nope}}, method: FETCH, headers: [{{name: 'bad name', value: x}}]}}]
        backendRefs: [{{name: ghost}}]
        timeouts: {{request: 1s, backendRequest: 2s}}
        retry: {{attempts: 0, codes: [200]}}
        fault: {{abort: {{httpStatus: 700, percentage: 120}}}}
      - matches: [{{path: {{type: RegularExpression, value: '('}}}}]
        filters: [{{type: RequestRedirect, requestRedirect: {{statusCode: 200}}}}]
        backendRefs: [{{name: a}}]
  - name: a
    listen: 127.0.0.1:5000
    retryBudget: {{ratio: 2.0, minRetriesPerSecond: 1, ttl: 10s}}
inbound: [{{listen: 127.0.0.1:5000, forwardPort: 0}}]
"
        ));
        let expected = [
            "services[0].endpoints[0].identity",
            "services[0].routes[0].matches[0].path.value",
            "services[0].routes[0].matches[0].method",
            "services[0].routes[0].matches[0].headers[0].name",
            "services[0].routes[0].backendRefs[0].name",
            "services[0].routes[0].timeouts.backendRequest",
            "services[0].routes[0].retry.attempts",
            "services[0].routes[0].retry.codes[0]",
            "services[0].routes[0].fault.abort.percentage",
            "services[0].routes[0].fault.abort.httpStatus",
            "services[0].routes[1].matches[0].path.value",
            "services[0].routes[1].filters[0].requestRedirect.statusCode",
            "services[0].routes[1].backendRefs",
            "services[1].name",
            "services[1].retryBudget.ratio",
            "inbound[0].listen",
            "inbound[0].forwardPort",
        ];
        assert_eq!(errs, expected);
    }

    #[test]
    fn rewrite_and_mirror_errors_name_the_field() {
        let errs = errors(&format!(
            "{HEAD}services:
  - name: a
    routes:
      - matches: [{{path: {{type: Exact, value: /x}}}}]
        filters:
          - {{type: URLRewrite, urlRewrite: {{hostname: 'Bad_Host', path: {{type: ReplacePrefixMatch, replacePrefixMatch: /y}}}}}}
          - {{type: RequestMirror, requestMirror: {{backendRef: {{name: ghost}}, percent: 101}}}}
      - filters:
          - {{type: URLRewrite, urlRewrite: {{path: {{type: ReplaceFullPath, replaceFullPath: 'no-slash'}}}}}}
          - {{type: URLRewrite, urlRewrite: {{path: {{type: ReplaceFullPath, replaceFullPath: '/a?b'}}}}}}
          - {{type: RequestRedirect, requestRedirect: {{path: /z}}}}
      - matches: [{{path: {{value: /a}}}}, {{path: {{value: /b}}}}]
        filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: ''}}}}}}]
"
        ));
        let expected = [
            "services[0].routes[0].filters[0].urlRewrite.hostname",
            "services[0].routes[0].filters[0].urlRewrite.path.replacePrefixMatch",
            "services[0].routes[0].filters[1].requestMirror.backendRef.name",
            "services[0].routes[0].filters[1].requestMirror.percent",
            "services[0].routes[1].filters[0].urlRewrite.path.replaceFullPath",
            "services[0].routes[1].filters[1].type",
            "services[0].routes[1].filters[1].urlRewrite.path.replaceFullPath",
            "services[0].routes[1].filters",
            "services[0].routes[2].filters[0].urlRewrite.path.replacePrefixMatch",
        ];
        assert_eq!(errs, expected);
        // The valid forms, incl. an empty prefix replacement on a rule without matches.
        let ok = format!(
            "{HEAD}services:
  - name: a
    routes:
      - filters:
          - {{type: URLRewrite, urlRewrite: {{hostname: api.internal, path: {{type: ReplacePrefixMatch, replacePrefixMatch: ''}}}}}}
          - {{type: RequestMirror, requestMirror: {{backendRef: {{name: a}}, percent: 50, maxBodyBytes: 1024}}}}
          - {{type: RequestMirror, requestMirror: {{backendRef: {{name: a}}}}}}
"
        );
        let cfg = ProxyConfig::from_yaml(&ok).unwrap();
        assert_eq!(ProxyConfig::from_json(&serde_json::to_string(&cfg).unwrap()).unwrap(), cfg);
    }

    #[test]
    fn path_rules_follow_gateway_api() {
        for bad in ["/a//b", "/a/./b", "/a/../b", "/a%2Fb", "/a#b", "/a/.", "/a/.."] {
            let errs = errors(&format!(
                "{HEAD}services: [{{name: a, routes: [{{matches: [{{path: {{value: '{bad}'}}}}]}}]}}]\n"
            ));
            assert_eq!(errs, vec!["services[0].routes[0].matches[0].path.value"], "{bad}");
        }
    }
}
