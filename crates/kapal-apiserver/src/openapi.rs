//! Serving `/openapi/v3` and `/openapi/v2`, built lazily once per registry generation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use kapal_api::ApiError;
use serde_json::Value;
use sha2::{Digest, Sha512};

use crate::discovery::hex_upper;
use crate::http::{Query, bytes_response, error_response};
use crate::resources::Snapshot;

struct Doc {
    hash: String,
    body: Vec<u8>,
}

#[derive(Default)]
struct Built {
    generation: u64,
    v3: HashMap<String, Arc<Doc>>,
    index: Option<Arc<Doc>>,
    v2_json: Option<Arc<Doc>>,
    v2_proto: Option<Arc<Doc>>,
}

/// The OpenAPI documents of the current registry generation.
#[derive(Default)]
pub struct OpenApi {
    built: Mutex<Built>,
}

fn doc_of(body: Vec<u8>) -> Arc<Doc> {
    Arc::new(Doc { hash: hex_upper(&Sha512::digest(&body)), body })
}

/// Custom schemas of one group-version, by kind.
fn custom_schemas(snapshot: &Snapshot, group: Option<(&str, &str)>) -> HashMap<String, Value> {
    snapshot
        .all
        .iter()
        .filter(|s| group.is_none_or(|(g, v)| s.info.group == g && s.info.version == v))
        .filter_map(|s| {
            let schema = s.custom.as_ref()?.schema.clone()?;
            Some((s.info.kind.clone(), schema))
        })
        .collect()
}

fn key_of(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

impl OpenApi {
    fn with_built<T>(&self, snapshot: &Snapshot, f: impl FnOnce(&mut Built) -> T) -> T {
        let mut built = match self.built.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        if built.generation != snapshot.generation {
            *built = Built { generation: snapshot.generation, ..Default::default() };
        }
        f(&mut built)
    }

    fn v3_doc(&self, snapshot: &Snapshot, key: &str) -> Option<Arc<Doc>> {
        self.with_built(snapshot, |built| {
            if let Some(d) = built.v3.get(key) {
                return Some(d.clone());
            }
            let (group, version) = snapshot
                .groups()
                .into_iter()
                .flat_map(|(g, vs)| vs.into_iter().map(move |v| (g.clone(), v)))
                .find(|(g, v)| key_of(g, v) == key)?;
            let infos: Vec<kapal_api::ResourceInfo> =
                snapshot.in_group_version(&group, &version).map(|s| s.info.clone()).collect();
            let doc = kapal_api::openapi::v3_document(
                &group,
                &version,
                &infos,
                &custom_schemas(snapshot, Some((&group, &version))),
            );
            let d = doc_of(serde_json::to_vec(&doc).unwrap_or_default());
            built.v3.insert(key.to_string(), d.clone());
            Some(d)
        })
    }

    fn index(&self, snapshot: &Snapshot) -> Arc<Doc> {
        if let Some(d) = self.with_built(snapshot, |b| b.index.clone()) {
            return d;
        }
        let mut entries = Vec::new();
        for (g, versions) in snapshot.groups() {
            for v in versions {
                let key = key_of(&g, &v);
                if let Some(d) = self.v3_doc(snapshot, &key) {
                    entries.push((key, d.hash.clone()));
                }
            }
        }
        let d = doc_of(serde_json::to_vec(&kapal_api::openapi::v3_index(&entries)).unwrap_or_default());
        self.with_built(snapshot, |b| b.index = Some(d.clone()));
        d
    }

    fn v2(&self, snapshot: &Snapshot, proto: bool) -> Arc<Doc> {
        if let Some(d) = self.with_built(snapshot, |b| if proto { b.v2_proto.clone() } else { b.v2_json.clone() }) {
            return d;
        }
        let infos: Vec<kapal_api::ResourceInfo> = snapshot.all.iter().map(|s| s.info.clone()).collect();
        let doc = kapal_api::openapi::v2_document(&infos, &custom_schemas(snapshot, None));
        let json = doc_of(serde_json::to_vec(&doc).unwrap_or_default());
        let pb = doc_of(kapal_api::openapi::v2_protobuf(&doc));
        self.with_built(snapshot, |b| {
            b.v2_json = Some(json.clone());
            b.v2_proto = Some(pb.clone());
        });
        if proto { pb } else { json }
    }

    /// Serves a request under `/openapi/`.
    pub fn serve(&self, snapshot: &Snapshot, path: &str, query: &Query, headers: &HeaderMap) -> Response<Body> {
        let path = path.trim_end_matches('/');
        if path == "/openapi/v3" {
            return cached(headers, "application/json", &self.index(snapshot), false);
        }
        if let Some(key) = path.strip_prefix("/openapi/v3/") {
            let Some(doc) = self.v3_doc(snapshot, key) else {
                return error_response(&ApiError::no_route());
            };
            return match query.get("hash") {
                Some(h) if h != doc.hash => {
                    let mut r = Response::new(Body::empty());
                    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
                    if let Ok(v) = HeaderValue::from_str(&format!("/openapi/v3/{key}?hash={}", doc.hash)) {
                        r.headers_mut().insert(header::LOCATION, v);
                    }
                    r
                }
                Some(_) => cached(headers, "application/json", &doc, true),
                None => cached(headers, "application/json", &doc, false),
            };
        }
        if path == "/openapi/v2" {
            let wants_proto = crate::http::accept(headers).iter().any(|a| a.essence.contains("protobuf"));
            let doc = self.v2(snapshot, wants_proto);
            let ct = if wants_proto {
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
            } else {
                "application/json"
            };
            return cached(headers, ct, &doc, false);
        }
        error_response(&ApiError::no_route())
    }
}

fn cached(headers: &HeaderMap, content_type: &str, doc: &Doc, immutable: bool) -> Response<Body> {
    let etag = format!("\"{}\"", doc.hash);
    let not_modified = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str());
    let mut resp = if not_modified {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        bytes_response(StatusCode::OK, content_type, doc.body.clone())
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    if immutable {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, immutable"));
        let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 365);
        if let Ok(v) = HeaderValue::from_str(&expires.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()) {
            h.insert(header::EXPIRES, v);
        }
    }
    resp
}
