//! Request parsing and response building shared by every handler.

use axum::body::Body;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use kapal_api::ApiError;
use serde_json::Value;

/// The largest request body accepted, as upstream (3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Query parameters in order; keys may repeat.
#[derive(Debug, Clone, Default)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let Some(raw) = raw else { return Query::default() };
        Query(
            raw.split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (form_decode(k), form_decode(v))
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A boolean parameter as upstream reads it: present and not `false`/`0` is true.
    pub fn flag(&self, key: &str) -> bool {
        match self.get(key) {
            None => false,
            Some(v) => !(v.eq_ignore_ascii_case("false") || v == "0"),
        }
    }

    /// A non-negative integer parameter; a malformed value is a 400 naming it.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid value {v:?} for query parameter {key}: not an integer"))
            }),
        }
    }
}

fn form_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

/// Decodes `%XX` escapes; malformed escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One alternative of an `Accept` header: a media type with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    pub essence: String,
    pub params: Vec<(String, String)>,
}

impl MediaType {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Parses an `Accept` header into its alternatives, in order.
pub fn accept(headers: &HeaderMap) -> Vec<MediaType> {
    let mut out = Vec::new();
    for value in headers.get_all(header::ACCEPT) {
        let Ok(s) = value.to_str() else { continue };
        for alt in s.split(',') {
            let mut parts = alt.split(';').map(str::trim);
            let essence = parts.next().unwrap_or_default().to_ascii_lowercase();
            if essence.is_empty() {
                continue;
            }
            let params = parts
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                .collect();
            out.push(MediaType { essence, params });
        }
    }
    out
}

/// The essence of the request's Content-Type (`application/json`), lowercased.
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Decodes a JSON or YAML request body into a JSON value.
pub fn decode_body(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    match content_type {
        "application/yaml" | "application/apply-patch+yaml" => decode_yaml(body),
        kapal_api::protobuf::CONTENT_TYPE => decode_protobuf(body),
        _ => serde_json::from_slice(body).or_else(|e| {
            if content_type.is_empty() { decode_yaml(body) } else { Err(ApiError::bad_request(json_error(&e))) }
        }),
    }
}

/// Kubernetes protobuf, which kubectl 1.32+ sends for its `create` generators.
fn decode_protobuf(body: &[u8]) -> Result<Value, ApiError> {
    use kapal_api::protobuf::ProtobufError;
    kapal_api::protobuf::decode_object(body).map_err(|e| match e {
        ProtobufError::UnknownKind { .. }
        | ProtobufError::UnsupportedEncoding(_)
        | ProtobufError::UnsupportedContentType(_) => {
            ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format: {e}"))
        }
        other => ApiError::bad_request(format!("the protobuf request body is malformed: {other}")),
    })
}

fn decode_yaml(body: &[u8]) -> Result<Value, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|e| ApiError::bad_request(format!("the request body is not UTF-8: {e}")))?;
    // JSON is YAML; try the fast path first so JSON bodies get JSON error messages.
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(v);
    }
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
}

fn json_error(e: &serde_json::Error) -> String {
    format!("couldn't get version/kind; json parse error: {e}")
}

/// A JSON response.
pub fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    bytes_response(status, "application/json", body)
}

pub fn bytes_response(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}

/// A `metav1.Status` error response.
pub fn error_response(err: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json_response(status, &err.to_status());
    if let Some(secs) = err.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Adds `Warning: 299 - "<text>"` headers.
pub fn add_warnings(resp: &mut Response<Body>, warnings: &[String]) {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_queries_like_upstream() {
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1&dryRun=All&x=false"));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert!(!q.flag("x"));
        assert!(!q.flag("missing"));
        assert!(Query::parse(Some("limit=abc")).int("limit").is_err());
    }

    #[test]
    fn parses_accept_alternatives() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"),
        );
        let alts = accept(&h);
        assert_eq!(alts.len(), 2);
        assert_eq!(alts[0].param("as"), Some("Table"));
        assert_eq!(alts[1].params.len(), 0);
    }

    #[test]
    fn decodes_yaml_and_rejects_garbage() {
        let v = decode_body("application/yaml", b"kind: ConfigMap\ndata:\n  a: \"1\"\n").unwrap();
        assert_eq!(v["data"]["a"], "1");
        let e = decode_body("application/json", b"{\"apiVersion\":\"v1\",").unwrap_err();
        assert_eq!(e.code, 400);
    }
}
