//! Entry points of the fuzz targets (`fuzz/`, cargo-fuzz + libFuzzer), one per parser that sees
//! untrusted input. Each takes arbitrary bytes, must never panic, and asserts the invariants
//! that hold for every input. The same functions run in `cargo test` over the seed corpus in
//! `fuzz/corpus/` plus deterministic mutations of it, so that they are exercised on stable
//! toolchains and in CI without libFuzzer.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::config::{HttpRoute, ProxyConfig};
use crate::route::{self, RequestView, RouteTable};
use crate::server::{self, Detected};

/// Protocol detection: [`server::classify`] on every prefix of `data` (a decision, once made,
/// never changes with more bytes), and the mesh ALPN check of a TLS ClientHello.
pub fn protocol_detection(data: &[u8]) {
    let mut decided: Option<Detected> = None;
    for end in 0..=data.len().min(64) {
        let now = server::classify(&data[..end]);
        if let Some(before) = decided {
            assert_eq!(now, Some(before), "classification changed after more bytes: {:?}", &data[..end]);
        }
        decided = decided.or(now);
    }
    let _ = server::hello_asks_for_mesh(data);
}

/// Config parsing: YAML, JSON and control-plane documents. An accepted config survives a JSON
/// round trip unchanged (that is what `/config` serves), and its routes compile.
pub fn config_parsing(data: &[u8]) {
    let _ = crate::control::parse_document(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    for parsed in [ProxyConfig::from_yaml(text), ProxyConfig::from_json(text)] {
        let Ok(cfg) = parsed else { continue };
        let json = serde_json::to_string(&cfg).expect("a config serializes");
        let again = ProxyConfig::from_json(&json).expect("a serialized valid config parses and validates");
        assert_eq!(again, cfg, "JSON round trip changed the config");
        for svc in &cfg.services {
            RouteTable::compile(svc).expect("a validated config compiles");
        }
    }
}

/// `traceparent` parsing: never panics, always yields a usable context, and a context printed
/// and read back continues the same trace with the printed span as parent.
pub fn traceparent(data: &[u8]) {
    let header = String::from_utf8_lossy(data);
    let ctx = crate::trace::TraceContext::continue_from(Some(&header));
    assert_ne!(ctx.trace_id, 0);
    let next = crate::trace::TraceContext::continue_from(Some(&ctx.to_string()));
    assert_eq!((next.trace_id, next.parent_id), (ctx.trace_id, Some(ctx.span_id)));
}

/// Route matching: `data` is `<routes as JSON>\0<request>`, the request being a
/// `METHOD TARGET` line and then `name: value` header lines. Routes that do not parse or
/// validate are replaced by a fixed table using every match kind and filter. The matched rule's
/// filters are applied; a validated rewrite of a valid path always yields a valid URI.
pub fn route_matching(data: &[u8]) {
    let (routes, request) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    let table = table(routes).unwrap_or_else(|| table(FIXED_ROUTES.as_bytes()).expect("the fixed routes are valid"));
    let Some((method, uri, mut headers)) = parse_request(request) else { return };
    let view = RequestView { method: &method, path: uri.path(), query: uri.query(), headers: &headers };
    let Some(rule) = table.find(&view).cloned() else { return };
    for roll in [0.0, 0.25, 0.5, 0.999_999] {
        let backend = rule.pick_backend(roll);
        assert!(rule.backends.iter().any(|(name, _)| name == backend));
    }
    for m in &rule.request_headers {
        route::apply_header_modifier(&mut headers, m);
    }
    if let Some(redirect) = &rule.redirect {
        let host = headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let _ = route::redirect_location(redirect, "http", host, uri.path_and_query().map_or("/", |p| p.as_str()));
    }
    if let Some(rewrite) = &rule.rewrite {
        let rewritten = route::rewrite_uri(&uri, &mut headers, rewrite);
        if uri.path().starts_with('/') {
            assert!(rewritten.is_some(), "rewrite of {uri} failed");
        }
        if let Some(path) = &rewrite.path
            && uri.path().starts_with('/')
        {
            assert!(path.apply(uri.path()).starts_with('/'));
        }
    }
}

const FIXED_ROUTES: &str = r#"[
  {"name": "exact", "matches": [{"path": {"type": "Exact", "value": "/exact"}}]},
  {"name": "prefix", "matches": [{"path": {"value": "/api/"}, "method": "GET"}],
   "filters": [{"type": "URLRewrite", "urlRewrite": {"hostname": "api.internal",
     "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}}}],
   "backendRefs": [{"name": "web", "weight": 3}, {"name": "v2", "weight": 1}]},
  {"name": "regex", "matches": [{"path": {"type": "RegularExpression", "value": "/u/[0-9]+"},
     "headers": [{"name": "x-canary", "type": "RegularExpression", "value": "y.*"}],
     "queryParams": [{"name": "debug", "value": "1"}]}],
   "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-a", "value": "b"}], "remove": ["x-b"]}},
     {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/full"}}},
     {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "v2"}}}]},
  {"name": "redirect", "matches": [{"path": {"value": "/old"}}],
   "filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "port": 8443}}]},
  {"name": "root", "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": ""}}}]}
]"#;

fn table(routes: &[u8]) -> Option<RouteTable> {
    let routes: Vec<HttpRoute> = serde_json::from_slice(routes).ok()?;
    let cfg = serde_json::json!({
        "apiVersion": crate::config::API_VERSION,
        "kind": crate::config::KIND,
        "services": [{"name": "web", "routes": routes}, {"name": "v2"}],
    });
    let cfg: ProxyConfig = serde_json::from_value(cfg).ok()?;
    cfg.validate().ok()?;
    Some(RouteTable::compile(&cfg.services[0]).expect("a validated config compiles"))
}

fn parse_request(data: &[u8]) -> Option<(Method, Uri, HeaderMap)> {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let (method, target) = lines.next()?.split_once(' ')?;
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    let uri: Uri = target.parse().ok()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.trim().as_bytes()), HeaderValue::from_str(value.trim())) {
            headers.append(n, v);
        }
    }
    Some((method, uri, headers))
}

#[cfg(test)]
mod tests {
    //! The fuzz targets on stable: every seed of `fuzz/corpus/<target>/`, then mutations of the
    //! seeds from a fixed-seed generator, so that a failure reproduces.

    use std::path::Path;

    use super::*;

    /// xorshift64*: small, deterministic, good enough to pick mutations.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            if n == 0 { 0 } else { (self.next() % n as u64) as usize }
        }
    }

    const INTERESTING: &[u8] = b"\x00\x16\x03\x01\xff/:?#%{}[]\"',\n\r\t -.*0123456789aAzZ";

    fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..=rng.below(4) {
            let len = out.len();
            match rng.below(7) {
                0 if len > 0 => {
                    let i = rng.below(len);
                    out[i] ^= 1 << rng.below(8);
                }
                1 if len > 0 => {
                    let i = rng.below(len);
                    out[i] = INTERESTING[rng.below(INTERESTING.len())];
                }
                2 => {
                    let i = rng.below(len + 1);
                    out.insert(i, INTERESTING[rng.below(INTERESTING.len())]);
                }
                3 if len > 0 => {
                    let start = rng.below(len);
                    let end = (start + 1 + rng.below(16)).min(len);
                    out.drain(start..end);
                }
                4 if len > 0 => {
                    let start = rng.below(len);
                    let end = (start + 1 + rng.below(32)).min(len);
                    let chunk = out[start..end].to_vec();
                    let at = rng.below(len + 1);
                    out.splice(at..at, chunk);
                }
                5 if !seeds.is_empty() => {
                    let other = &seeds[rng.below(seeds.len())];
                    let at = rng.below(len + 1);
                    let from = rng.below(other.len() + 1);
                    out.truncate(at);
                    out.extend_from_slice(&other[from..]);
                }
                _ => out.truncate(rng.below(len + 1)),
            }
        }
        out
    }

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
        assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
        seeds
    }

    /// Runs `target` on every seed and `iterations` mutants; returns how many inputs ran.
    fn run(name: &str, target: fn(&[u8]), iterations: usize) -> usize {
        let seeds = corpus(name);
        for seed in &seeds {
            target(seed);
        }
        let mut rng = Rng(0x6b61_7061_6c21 ^ name.len() as u64);
        for _ in 0..iterations {
            let base = &seeds[rng.below(seeds.len())];
            target(&mutate(&mut rng, base, &seeds));
        }
        seeds.len() + iterations
    }

    #[test]
    fn protocol_detection_survives_its_corpus_and_mutations() {
        assert!(run("protocol_detection", protocol_detection, 5000) > 5000);
    }

    #[test]
    fn config_parsing_survives_its_corpus_and_mutations() {
        assert!(run("config_parsing", config_parsing, 3000) > 3000);
    }

    #[test]
    fn route_matching_survives_its_corpus_and_mutations() {
        assert!(run("route_matching", route_matching, 5000) > 5000);
    }

    #[test]
    fn traceparent_survives_its_corpus_and_mutations() {
        assert!(run("traceparent", traceparent, 3000) > 3000);
    }

    #[test]
    fn the_fixed_route_table_is_valid_and_used() {
        assert!(table(FIXED_ROUTES.as_bytes()).is_some());
        // A request that reaches the rewrite and mirror filters of the fixed table.
        route_matching(b"\0GET /u/42?debug=1\nx-canary: yes\nx-b: 1\n");
    }
}
