//! Response forms: the object itself, a `Table`, or `PartialObjectMetadata`.

use std::sync::Arc;

use http::HeaderMap;
use kapal_api::ApiError;
use serde_json::{Map, Value, json};

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
pub fn negotiate(headers: &HeaderMap, query: &Query, _list: bool) -> Result<Output, ApiError> {
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
    let want = served.info.api_version();
    if obj.get("apiVersion").and_then(Value::as_str) == Some(want.as_str()) {
        std::borrow::Cow::Borrowed(obj)
    } else {
        let mut o = obj.clone();
        o["apiVersion"] = Value::String(want);
        std::borrow::Cow::Owned(o)
    }
}

/// `PartialObjectMetadata` of an object.
pub fn partial_metadata(version: &str, obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Appends one object, in the requested form, to a JSON buffer.
pub fn write_object_into(buf: &mut Vec<u8>, served: &Served, output: &Output, obj: &Value) {
    let _ = match output {
        Output::PartialMetadata { version } => serde_json::to_writer(&mut *buf, &partial_metadata(version, obj)),
        _ => serde_json::to_writer(&mut *buf, present(served, obj).as_ref()),
    };
}

/// One object (not a list) in the requested form.
pub fn single(served: &Served, output: &Output, obj: &Arc<Value>) -> Value {
    match output {
        Output::Object => present(served, obj).into_owned(),
        Output::PartialMetadata { version } => partial_metadata(version, obj),
        Output::Table { .. } => {
            let rv = obj.get("metadata").and_then(|m| m.get("resourceVersion")).cloned().unwrap_or(Value::Null);
            table(served, output, std::slice::from_ref(obj), json!({"resourceVersion": rv}))
        }
    }
}

/// The column definitions of a resource.
pub fn columns(served: &Served) -> Vec<Value> {
    match &served.custom {
        Some(custom) => kapal_api::table::crd_columns(&custom.printer_columns),
        None => kapal_api::table::columns(&served.info.group, &served.info.kind),
    }
}

/// One Table row.
pub fn row(served: &Served, include: IncludeObject, version: &str, obj: &Value, now: jiff::Timestamp) -> Value {
    let cells = match &served.custom {
        Some(custom) => kapal_api::table::crd_cells(&custom.printer_columns, obj, now),
        None => kapal_api::table::cells(&served.info.group, &served.info.kind, obj, now),
    };
    let mut row = Map::new();
    row.insert("cells".into(), Value::Array(cells));
    if served.custom.is_none() {
        if let Some(conditions) = kapal_api::table::row_conditions(&served.info.group, &served.info.kind, obj) {
            row.insert("conditions".into(), conditions);
        }
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
pub fn table(served: &Served, output: &Output, objs: &[Arc<Value>], metadata: Value) -> Value {
    let (version, include) = match output {
        Output::Table { version, include } => (version.as_str(), *include),
        _ => ("v1", IncludeObject::Metadata),
    };
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = objs.iter().map(|o| row(served, include, version, o, now)).collect();
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": metadata,
        "columnDefinitions": columns(served),
        "rows": rows,
    })
}
