//! LIST: selectors, pagination with continue tokens, and the output forms (object list,
//! Table, PartialObjectMetadataList).

use std::sync::Arc;

use axum::body::Body;
use base64::Engine;
use http::{Response, StatusCode};
use kapal_api::ApiError;
use kapal_api::selector::{FieldSelector, LabelSelector};
use kapal_store::StoreError;
use serde_json::{Value, json};

use super::{Ctx, Dispatched};
use crate::ApiServer;
use crate::cache::{Cached, decode, is_cached};
use crate::http::bytes_response;
use crate::output::{Output, negotiate, write_cached_into};
use crate::resources::Served;

/// Parsed label and field selectors of a request.
pub struct Filter {
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
    group: String,
    kind: String,
}

impl Filter {
    pub fn from_ctx(ctx: &Ctx) -> Result<Filter, ApiError> {
        let info = &ctx.served.info;
        let labels = match ctx.query.get("labelSelector").filter(|s| !s.trim().is_empty()) {
            Some(s) => Some(
                LabelSelector::parse(s)
                    .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
            ),
            None => None,
        };
        let fields = match ctx.query.get("fieldSelector").filter(|s| !s.trim().is_empty()) {
            Some(s) => {
                let sel = FieldSelector::parse(s)
                    .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
                let custom = ctx.served.is_custom();
                let kind = if custom { "" } else { info.kind.as_str() };
                kapal_api::fields::check_supported(&info.group, kind, &sel).map_err(ApiError::bad_request)?;
                Some(sel)
            }
            None => None,
        };
        Ok(Filter { labels, fields, group: info.group.clone(), kind: info.kind.clone() })
    }

    pub fn is_everything(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    pub fn matches(&self, c: &Cached) -> bool {
        if let Some(sel) = &self.labels
            && !sel.matches(c.labels())
        {
            return false;
        }
        let Some(sel) = &self.fields else { return true };
        // Name and namespace selectors (kubectl wait, get -w of one object) need no decoding.
        let by_meta = sel.requirements().all(|(f, _, _)| f == "metadata.name" || f == "metadata.namespace");
        if by_meta {
            return sel.matches(|f| Some(if f == "metadata.name" { c.name() } else { c.namespace() }.to_string()));
        }
        let obj = c.object();
        sel.matches(|f| kapal_api::fields::field_value(&self.group, &self.kind, &obj, f))
    }

    /// The single object name a `metadata.name=x` field selector pins, if any.
    pub fn exact_name(&self) -> Option<&str> {
        self.fields.as_ref().and_then(|f| f.exact("metadata.name"))
    }
}

/// A decoded `continue` token.
struct Continue {
    rv: i64,
    start: String,
}

fn encode_continue(rv: i64, start: &str) -> String {
    let doc = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64::engine::general_purpose::URL_SAFE.encode(doc.to_string())
}

fn decode_continue(token: &str) -> Result<Continue, ApiError> {
    let invalid = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| invalid())?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    match (doc["rv"].as_i64(), doc["start"].as_str()) {
        (Some(rv), Some(start)) => Ok(Continue { rv, start: start.to_string() }),
        _ => Err(invalid()),
    }
}

/// A page of results ready to encode.
pub struct Page {
    pub items: Vec<Cached>,
    pub revision: i64,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

impl ApiServer {
    pub(crate) async fn list(&self, ctx: &Ctx) -> Result<Dispatched, ApiError> {
        let output = negotiate(&ctx.headers, &ctx.query)?;
        let filter = Filter::from_ctx(ctx)?;
        let page = self.list_page(ctx, &filter).await?;
        Ok(Dispatched::Response(encode_list(&ctx.served, &output, &page)))
    }

    pub(crate) async fn list_page(&self, ctx: &Ctx, filter: &Filter) -> Result<Page, ApiError> {
        validate_list_options(ctx)?;
        let limit = match ctx.query.int("limit")? {
            Some(l) if l > 0 => l as usize,
            _ => 0,
        };
        let prefix = ctx.served.info.namespace_prefix(ctx.namespace());
        if let Some(token) = ctx.query.get("continue").filter(|t| !t.is_empty()) {
            let cont = decode_continue(token)?;
            if !cont.start.starts_with(&prefix) {
                return Err(ApiError::bad_request("continue key is not valid: it belongs to another list"));
            }
            if cont.rv != self.cache.revision() || !is_cached(&prefix) {
                return self.list_from_store(&prefix, Some(&cont.start), limit, Some(cont.rv), filter).await;
            }
            return Ok(self.list_from_cache(&prefix, Some(&cont.start), limit, filter));
        }
        if !is_cached(&prefix) {
            // The store is always current, which satisfies any resourceVersion asked for.
            return self.list_from_store(&prefix, None, limit, None, filter).await;
        }
        self.catch_up(ctx).await?;
        Ok(self.list_from_cache(&prefix, None, limit, filter))
    }

    fn list_from_cache(&self, prefix: &str, start_after: Option<&str>, limit: usize, filter: &Filter) -> Page {
        // A `metadata.name=x` selector in a namespace is a point lookup.
        let mut items = Vec::new();
        let mut last_key: Option<Arc<str>> = None;
        let mut more = false;
        let revision = self.cache.scan(prefix, start_after, |c: &Cached| {
            if limit > 0 && items.len() == limit {
                more = true;
                return false;
            }
            if filter.matches(c) {
                items.push(c.clone());
            }
            last_key = Some(c.key.clone());
            true
        });
        let continue_token = match (more, &last_key) {
            (true, Some(k)) => Some(encode_continue(revision, k)),
            _ => None,
        };
        let remaining = if more && filter.is_everything() {
            let mut n = 0usize;
            self.cache.scan(prefix, last_key.as_deref(), |_| {
                n += 1;
                true
            });
            Some(n)
        } else {
            None
        };
        Page { items, revision, continue_token, remaining }
    }

    /// A page from the store: after `start_after`, at revision `at` (the latest when `None`).
    async fn list_from_store(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at: Option<i64>,
        filter: &Filter,
    ) -> Result<Page, ApiError> {
        let page = self.store.list(prefix, start_after, limit, at).await.map_err(|e| match e {
            StoreError::Compacted { .. } => ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            ),
            other => crate::store_error(other),
        })?;
        let mut items = Vec::new();
        for kv in &page.items {
            if let Some(c) = decode(kv)
                && filter.matches(&c)
            {
                items.push(c);
            }
        }
        let revision = at.unwrap_or(page.revision);
        let continue_token = match (page.remaining > 0, page.items.last()) {
            (true, Some(last)) => Some(encode_continue(revision, &last.key)),
            _ => None,
        };
        let remaining = (page.remaining > 0 && filter.is_everything()).then_some(page.remaining);
        Ok(Page { items, revision, continue_token, remaining })
    }
}

fn validate_list_options(ctx: &Ctx) -> Result<(), ApiError> {
    let q = &ctx.query;
    let mut causes = Vec::new();
    let rv = q.get("resourceVersion").unwrap_or_default();
    if let Some(m) = q.get("resourceVersionMatch").filter(|m| !m.is_empty()) {
        if rv.is_empty() {
            causes.push(kapal_api::Cause::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if q.get("continue").is_some_and(|c| !c.is_empty()) {
            causes.push(kapal_api::Cause::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
        if m != "Exact" && m != "NotOlderThan" {
            causes.push(kapal_api::Cause::not_supported("resourceVersionMatch", &json!(m), &["Exact", "NotOlderThan"]));
        }
        if m == "Exact" && rv == "0" {
            causes.push(kapal_api::Cause::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("meta.k8s.io", "ListOptions", "", causes));
    }
    Ok(())
}

pub(crate) fn too_large_rv(requested: i64, current: i64) -> ApiError {
    let mut e = ApiError::timeout(format!("Timeout: Too large resource version: {requested}, current: {current}"));
    e.causes.push(kapal_api::Cause::new(
        "ResourceVersionTooLarge",
        "",
        format!("Too large resource version: {requested}, current: {current}"),
    ));
    e
}

/// Encodes a page in the requested form without cloning the objects.
pub fn encode_list(served: &Served, output: &Output, page: &Page) -> Response<Body> {
    let info = &served.info;
    let mut meta = serde_json::Map::new();
    meta.insert("resourceVersion".into(), json!(page.revision.to_string()));
    if let Some(c) = &page.continue_token {
        meta.insert("continue".into(), json!(c));
    }
    if let Some(n) = page.remaining {
        meta.insert("remainingItemCount".into(), json!(n));
    }
    match output {
        Output::Table { .. } => {
            let table = crate::output::table(served, output, &page.items, Value::Object(meta));
            crate::http::json_response(StatusCode::OK, &table)
        }
        _ => {
            let (kind, api_version) = match output {
                Output::PartialMetadata { version } => {
                    ("PartialObjectMetadataList".to_string(), format!("meta.k8s.io/{version}"))
                }
                _ => (info.list_kind.clone(), info.api_version()),
            };
            let mut buf = Vec::with_capacity(256 + page.items.len() * 512);
            buf.extend_from_slice(b"{\"kind\":");
            let _ = serde_json::to_writer(&mut buf, &kind);
            buf.extend_from_slice(b",\"apiVersion\":");
            let _ = serde_json::to_writer(&mut buf, &api_version);
            buf.extend_from_slice(b",\"metadata\":");
            let _ = serde_json::to_writer(&mut buf, &meta);
            buf.extend_from_slice(b",\"items\":[");
            for (i, obj) in page.items.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_cached_into(&mut buf, served, output, obj);
            }
            buf.extend_from_slice(b"]}");
            bytes_response(StatusCode::OK, "application/json", buf)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "/registry/core/configmaps/ns/p7");
        let c = decode_continue(&t).unwrap();
        assert_eq!((c.rv, c.start.as_str()), (42, "/registry/core/configmaps/ns/p7"));
        assert_eq!(decode_continue("not-a-token!").err().map(|e| e.code), Some(400));
    }
}
