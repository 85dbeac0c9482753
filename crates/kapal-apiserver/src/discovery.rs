//! Discovery: legacy (`/api`, `/apis`, `/apis/<g>/<v>`) and aggregated (apidiscovery v2 and
//! v2beta1, chosen by the `Accept` header; kubectl uses it since 1.27).

use axum::body::Body;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use kapal_api::ApiError;
use serde_json::{Value, json};
use sha2::{Digest, Sha512};

use crate::http::{accept, bytes_response, error_response};
use crate::resources::{Served, Snapshot};

/// Which aggregated version a client asked for, if any.
fn aggregated_version(headers: &HeaderMap) -> Option<&'static str> {
    for alt in accept(headers) {
        if alt.essence != "application/json" {
            continue;
        }
        match (alt.param("g"), alt.param("v"), alt.param("as")) {
            (Some("apidiscovery.k8s.io"), Some("v2"), Some("APIGroupDiscoveryList")) => return Some("v2"),
            (Some("apidiscovery.k8s.io"), Some("v2beta1"), Some("APIGroupDiscoveryList")) => return Some("v2beta1"),
            (None, None, None) => return None,
            _ => continue,
        }
    }
    None
}

/// `/api` (core) or `/apis` (groups).
pub fn root(snapshot: &Snapshot, core: bool, headers: &HeaderMap) -> Response<Body> {
    if let Some(version) = aggregated_version(headers) {
        let doc = aggregated(snapshot, core, version);
        let ct = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
        return with_etag(headers, &ct, &doc);
    }
    let doc = if core {
        json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})
    } else {
        let groups: Vec<Value> = snapshot
            .groups()
            .into_iter()
            .filter(|(g, _)| !g.is_empty())
            .map(|(g, versions)| group_doc(&g, &versions))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    };
    with_etag(headers, "application/json", &doc)
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

/// `/apis/<group>`.
pub fn group(snapshot: &Snapshot, name: &str) -> Response<Body> {
    match snapshot.groups().into_iter().find(|(g, _)| g == name && !g.is_empty()) {
        Some((g, versions)) => {
            let mut doc = group_doc(&g, &versions);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            crate::http::json_response(StatusCode::OK, &doc)
        }
        None => error_response(&ApiError::no_route()),
    }
}

/// `/api/v1` or `/apis/<g>/<v>`: an APIResourceList.
pub fn group_version(snapshot: &Snapshot, group: &str, version: &str) -> Response<Body> {
    let mut resources = Vec::new();
    for s in snapshot.in_group_version(group, version) {
        resources.push(api_resource(s));
        for sub in &s.info.subresources {
            let mut r = json!({
                "name": format!("{}/{}", s.info.plural, sub.name),
                "singularName": "",
                "namespaced": s.info.namespaced(),
                "kind": sub.kind.kind,
                "verbs": sub.verbs,
            });
            if sub.kind.group != s.info.group || sub.kind.version != s.info.version {
                r["group"] = json!(sub.kind.group);
                r["version"] = json!(sub.kind.version);
            }
            resources.push(r);
        }
    }
    if resources.is_empty() {
        return error_response(&ApiError::no_route());
    }
    let gv = kapal_api::registry::api_version(group, version);
    crate::http::json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn api_resource(s: &Served) -> Value {
    let info = &s.info;
    let mut r = json!({
        "name": info.plural,
        "singularName": info.singular,
        "namespaced": info.namespaced(),
        "kind": info.kind,
        "verbs": info.verbs,
        "storageVersionHash": storage_hash(s),
    });
    if !info.short_names.is_empty() {
        r["shortNames"] = json!(info.short_names);
    }
    if !info.categories.is_empty() {
        r["categories"] = json!(info.categories);
    }
    r
}

fn storage_hash(s: &Served) -> String {
    use base64::Engine;
    let digest = Sha512::digest(format!("{}/{}/{}", s.info.group, s.info.version, s.info.kind));
    base64::engine::general_purpose::STANDARD.encode(&digest[..8])
}

fn aggregated(snapshot: &Snapshot, core: bool, version: &str) -> Value {
    let mut items = Vec::new();
    for (group, versions) in snapshot.groups() {
        if group.is_empty() != core {
            continue;
        }
        let vs: Vec<Value> = versions
            .iter()
            .map(|v| {
                let resources: Vec<Value> =
                    snapshot.in_group_version(&group, v).map(|s| aggregated_resource(s)).collect();
                json!({"version": v, "resources": resources, "freshness": "Current"})
            })
            .collect();
        let mut item = json!({"metadata": {"creationTimestamp": null}, "versions": vs});
        if !group.is_empty() {
            item["metadata"]["name"] = json!(group);
        }
        items.push(item);
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{version}"), "metadata": {}, "items": items})
}

fn aggregated_resource(s: &Served) -> Value {
    let info = &s.info;
    let mut r = json!({
        "resource": info.plural,
        "responseKind": {"group": info.group, "version": info.version, "kind": info.kind},
        "scope": if info.namespaced() { "Namespaced" } else { "Cluster" },
        "singularResource": info.singular,
        "verbs": info.verbs,
    });
    if !info.short_names.is_empty() {
        r["shortNames"] = json!(info.short_names);
    }
    if !info.categories.is_empty() {
        r["categories"] = json!(info.categories);
    }
    let subs: Vec<Value> = info
        .subresources
        .iter()
        .map(|sub| {
            json!({
                "subresource": sub.name,
                "responseKind": {"group": sub.kind.group, "version": sub.kind.version, "kind": sub.kind.kind},
                "verbs": sub.verbs,
            })
        })
        .collect();
    if !subs.is_empty() {
        r["subresources"] = json!(subs);
    }
    r
}

/// A JSON response with `ETag`, honouring `If-None-Match`.
pub fn with_etag(headers: &HeaderMap, content_type: &str, doc: &Value) -> Response<Body> {
    let body = serde_json::to_vec(doc).unwrap_or_default();
    let etag = format!("\"{}\"", hex_upper(&Sha512::digest(&body)));
    let matches = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str());
    let mut resp = if matches {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        bytes_response(StatusCode::OK, content_type, body)
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public"));
    resp
}

/// Uppercase hex, as upstream's ETags are written.
pub fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
