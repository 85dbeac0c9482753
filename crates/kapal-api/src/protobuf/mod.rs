//! Decoding of Kubernetes protobuf request bodies into the JSON a JSON client would have sent.
//!
//! kubectl 1.32 and later send the objects built by `kubectl create <generator>`, `autoscale` and
//! `create token` as `application/vnd.kubernetes.protobuf` (while accepting JSON back). Kapal
//! speaks JSON, so [`decode_object`] turns such a body into the `serde_json::Value` that
//! Kubernetes' own JSON encoding of the object would be: camelCase field names, `metav1.Time` as
//! RFC 3339, quantities and int-or-strings as their JSON scalars, `bytes` as base64, embedded
//! `runtime.RawExtension`/`JSON`/`FieldsV1` as the JSON they carry, protobuf maps as objects.
//!
//! The body is the Kubernetes envelope: the magic prefix `k8s\0`, then a `runtime.Unknown`
//! {1: TypeMeta {1: apiVersion, 2: kind}, 2: raw object, 3: contentEncoding, 4: contentType}.
//!
//! # The layout table
//!
//! Field numbers, JSON names and types come from `schema_table.rs`, which `generate.py` writes
//! from the sources of two crates in the cargo registry: `k8s-pb` (prost bindings of the
//! upstream `.proto` files: tags and types) and `k8s-openapi` (JSON names and kinds). Neither
//! is a dependency. Regenerate with
//!
//! ```text
//! python3 crates/kapal-api/src/protobuf/generate.py
//! rustfmt --edition 2024 crates/kapal-api/src/protobuf/schema_table.rs
//! ```
//!
//! The table covers the GA group versions of Kubernetes 1.33 (`--all-versions` adds the alpha
//! and beta ones). Custom resources have no protobuf form, so clients always send them as JSON.
//!
//! # Zero values
//!
//! Kubernetes' protobuf encoder writes every non-pointer Go field, zero or not, and a pointer
//! field only when it is set; protobuf cannot tell the two apart. So a zero string is dropped
//! (for a Go string it is the unset value, and JSON omits it) except in the few pointer fields
//! where `""` means something (a claim's `storageClassName`), but a zero number or `false` is
//! kept — `replicas: 0` or `runAsUser: 0` must survive — except in the non-pointer fields the
//! generator lists (`stdin`, `hostNetwork`, status counters, ...). Either way the value means
//! what the Go apiserver would read from the same bytes.
//! A zero `metav1.Time` (`creationTimestamp` of a new object) is `null`, as in Kubernetes' JSON.
//! Quantities are passed through as the client wrote them, as a JSON client's would be.

mod decode;
mod format;
mod layout;
mod schema_table;
mod wire;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

use wire::Reader;

/// The four bytes that start every Kubernetes protobuf body.
pub const MAGIC: [u8; 4] = *b"k8s\0";

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Why a protobuf body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtobufError {
    /// The body does not start with [`MAGIC`].
    #[error("not a Kubernetes protobuf body: it does not start with the \"k8s\\x00\" prefix")]
    MissingMagic,
    /// The envelope names no apiVersion or no kind.
    #[error("the protobuf envelope names no apiVersion and kind")]
    MissingTypeMeta,
    /// No protobuf layout is known for the kind (alpha/beta versions, custom resources).
    #[error("no protobuf encoding is known for {kind} in {api_version}; send it as JSON")]
    UnknownKind {
        /// apiVersion from the envelope.
        api_version: String,
        /// kind from the envelope.
        kind: String,
    },
    /// The envelope says the object is compressed (`contentEncoding`), which no client does.
    #[error("unsupported protobuf content encoding {0:?}")]
    UnsupportedEncoding(String),
    /// The envelope wraps an object in a content type other than protobuf or JSON.
    #[error("unsupported content type {0:?} inside the protobuf envelope")]
    UnsupportedContentType(String),
    /// The bytes are not valid protobuf for the kind's layout.
    #[error("malformed protobuf body{}: {reason}", at(.path))]
    Malformed {
        /// JSON path of the offending field (`spec.template.spec.containers[0].ports`), or empty.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

fn at(path: &str) -> String {
    if path.is_empty() { String::new() } else { format!(" at {path}") }
}

impl ProtobufError {
    fn malformed(reason: impl Into<String>) -> Self {
        ProtobufError::Malformed { path: String::new(), reason: reason.into() }
    }

    /// Prefixes the path of a [`ProtobufError::Malformed`] with the enclosing field.
    fn within(self, field: &str, index: Option<usize>) -> Self {
        match self {
            ProtobufError::Malformed { path, reason } => {
                let outer = match index {
                    Some(i) => format!("{field}[{i}]"),
                    None => field.to_string(),
                };
                let path = match (outer.is_empty(), path.is_empty()) {
                    (true, _) => path,
                    (_, true) => outer,
                    _ => format!("{outer}.{path}"),
                };
                ProtobufError::Malformed { path, reason }
            }
            other => other,
        }
    }
}

/// Decodes a Kubernetes protobuf body (`k8s\0` + `runtime.Unknown`) into the JSON object that
/// Kubernetes' JSON encoding of the same object would be, with `apiVersion` and `kind` set.
///
/// Works for every GA built-in kind of Kubernetes 1.33, for subresource bodies (`Scale`,
/// `Eviction`, `Binding`, `TokenRequest`) and for `DeleteOptions` under any apiVersion. Never
/// panics; nesting is capped. Output size is linear in the input, so callers should bound the
/// body size as they do for JSON.
pub fn decode_object(body: &[u8]) -> Result<Value, ProtobufError> {
    decode_envelope(body, 0)
}

/// The envelope at nesting `depth` (a `RawExtension` may embed another protobuf object).
fn decode_envelope(body: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    let rest = body.strip_prefix(&MAGIC).ok_or(ProtobufError::MissingMagic)?;
    let unknown = Unknown::parse(rest)?;
    if !unknown.content_encoding.is_empty() {
        return Err(ProtobufError::UnsupportedEncoding(unknown.content_encoding));
    }
    if unknown.api_version.is_empty() || unknown.kind.is_empty() {
        return Err(ProtobufError::MissingTypeMeta);
    }
    let fields = match unknown.content_type.as_str() {
        "" | CONTENT_TYPE => {
            let index = layout::message_for_kind(&unknown.api_version, &unknown.kind).ok_or_else(|| {
                ProtobufError::UnknownKind { api_version: unknown.api_version.clone(), kind: unknown.kind.clone() }
            })?;
            decode::decode_message(index, unknown.raw, depth + 1)?
        }
        "application/json" => serde_json::from_slice(unknown.raw)
            .map_err(|e| ProtobufError::malformed(format!("embedded JSON object does not parse: {e}")))?,
        other => return Err(ProtobufError::UnsupportedContentType(other.to_string())),
    };
    let Value::Object(fields) = fields else {
        return Err(ProtobufError::malformed(format!("{} is not encoded as an object", unknown.kind)));
    };
    // Go's TypeMeta puts kind before apiVersion.
    let mut out = Map::new();
    out.insert("kind".into(), Value::String(unknown.kind));
    out.insert("apiVersion".into(), Value::String(unknown.api_version));
    out.extend(fields.into_iter().filter(|(k, _)| k != "apiVersion" && k != "kind"));
    Ok(Value::Object(out))
}

/// `runtime.Unknown`, the envelope.
struct Unknown<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
    content_type: String,
}

impl<'a> Unknown<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, ProtobufError> {
        let mut out = Unknown {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
            content_type: String::new(),
        };
        let mut reader = Reader::new(bytes);
        while let Some((tag, value)) = reader.next_field()? {
            let wire::Value::Len(b) = value else {
                return Err(ProtobufError::malformed(format!("envelope field {tag} is not length-delimited")));
            };
            match tag {
                1 => {
                    let mut meta = Reader::new(b);
                    while let Some((tag, value)) = meta.next_field()? {
                        match (tag, value) {
                            (1, wire::Value::Len(s)) => out.api_version = String::from_utf8_lossy(s).into_owned(),
                            (2, wire::Value::Len(s)) => out.kind = String::from_utf8_lossy(s).into_owned(),
                            _ => {}
                        }
                    }
                }
                2 => out.raw = b,
                3 => out.content_encoding = String::from_utf8_lossy(b).into_owned(),
                4 => out.content_type = String::from_utf8_lossy(b).into_owned(),
                _ => {}
            }
        }
        Ok(out)
    }
}
