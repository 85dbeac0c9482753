//! Response forms: the object itself, a `Table`, or `PartialObjectMetadata`.

use http::HeaderMap;
use kapal_api::ApiError;
use serde_json::{Map, Value, json};

use crate::cache::Cached;
use crate::http::{Query, accept};
use crate::resources::Served;

/// What `includeObject` asks a Table row to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

/// The negotiated response form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Object,
    Table { version: String, include: IncludeObject },
    PartialMetadata { version: String },
}

/// Picks the first `Accept` alternative we can produce. Plain JSON is always possible, so
/// this never fails with 406 for ordinary resources.
pub fn negotiate(headers: &HeaderMap, query: &Query) -> Result<Output, ApiError> {
    for alt in accept(headers) {
        let json_like = alt.essence == "application/json" || alt.essence == "*/*" || alt.essence == "application/*";
        if !json_like && alt.essence != "application/yaml" {
            continue;
        }
        match (alt.param("as"), alt.param("g"), alt.param("v")) {
            (Some("Table"), Some("meta.k8s.io"), Some(v @ ("v1" | "v1beta1"))) => {
                let include = match query.get("includeObject") {
                    None | Some("") | Some("Metadata") => IncludeObject::Metadata,
                    Some("None") => IncludeObject::None,
                    Some("Object") => IncludeObject::Object,
                    Some(other) => {
                        return Err(ApiError::bad_request(format!(
                            "Unable to convert to Table as requested: includeObject must be one of None, Metadata, Object, not {other:?}"
                        )));
                    }
                };
                return Ok(Output::Table { version: v.to_string(), include });
            }
            (
                Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                Some("meta.k8s.io"),
                Some(v @ ("v1" | "v1beta1")),
            ) => {
                return Ok(Output::PartialMetadata { version: v.to_string() });
            }
            (Some(_), _, _) => continue,
            (None, _, _) => return Ok(Output::Object),
        }
    }
    Ok(Output::Object)
}

/// The object as served at this resource's version (CRDs may store another version).
pub fn present<'a>(served: &Served, obj: &'a Value) -> std::borrow::Cow<'a, Value> {
    crate::convert::from_storage(served, obj)
}

/// `PartialObjectMetadata` of an object.
pub fn partial_metadata(version: &str, obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Appends one cached object, in the requested form, to a JSON buffer. The common case (the
/// object at its stored version) copies its encoding as it is.
pub fn write_cached_into(buf: &mut Vec<u8>, served: &Served, output: &Output, c: &Cached) {
    let _ = match output {
        Output::Object if c.api_version() == served.info.api_version() => {
            buf.extend_from_slice(&c.bytes);
            Ok(())
        }
        Output::PartialMetadata { version } => {
            serde_json::to_writer(&mut *buf, &partial_metadata(version, &c.object()))
        }
        _ => serde_json::to_writer(&mut *buf, present(served, &c.object()).as_ref()),
    };
}

/// One object (not a list) in the requested form, encoded.
pub fn single(served: &Served, output: &Output, c: &Cached) -> Vec<u8> {
    match output {
        Output::Table { .. } => {
            let table =
                table(served, output, std::slice::from_ref(c), json!({"resourceVersion": c.revision.to_string()}));
            serde_json::to_vec(&table).unwrap_or_default()
        }
        _ => {
            let mut buf = Vec::with_capacity(c.bytes.len() + 16);
            write_cached_into(&mut buf, served, output, c);
            buf
        }
    }
}

/// The column definitions of a resource. Built-in kinds print like their stored kind, as
/// upstream's printers work on the internal type whatever version was asked for.
pub fn columns(served: &Served) -> Vec<Value> {
    match &served.custom {
        Some(custom) => kapal_api::table::crd_columns(&custom.printer_columns),
        None => {
            let (group, _, kind) = crate::convert::storage_gvk(served);
            kapal_api::table::columns(&group, &kind)
        }
    }
}

/// One Table row.
pub fn row(served: &Served, include: IncludeObject, version: &str, obj: &Value, now: jiff::Timestamp) -> Value {
    let cells = match &served.custom {
        Some(custom) => kapal_api::table::crd_cells(&custom.printer_columns, obj, now),
        None => {
            let (group, _, kind) = crate::convert::storage_gvk(served);
            kapal_api::table::cells(&group, &kind, obj, now)
        }
    };
    let mut row = Map::new();
    row.insert("cells".into(), Value::Array(cells));
    if served.custom.is_none()
        && let Some(conditions) = kapal_api::table::row_conditions(&served.info.group, &served.info.kind, obj)
    {
        row.insert("conditions".into(), conditions);
    }
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row.insert("object".into(), partial_metadata(version, obj));
        }
        IncludeObject::Object => {
            row.insert("object".into(), present(served, obj).into_owned());
        }
    }
    Value::Object(row)
}

/// A Table of objects.
pub fn table(served: &Served, output: &Output, objs: &[Cached], metadata: Value) -> Value {
    let (version, include) = match output {
        Output::Table { version, include } => (version.as_str(), *include),
        _ => ("v1", IncludeObject::Metadata),
    };
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = objs.iter().map(|c| row(served, include, version, &c.object(), now)).collect();
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": metadata,
        "columnDefinitions": columns(served),
        "rows": rows,
    })
}
