//! The shapes of the generated protobuf layout table (`schema_table.rs`) and lookups into it.

use super::schema_table::{KINDS, MESSAGES, META_KINDS};

/// How a field is encoded on the wire and rendered in JSON. Kubernetes uses no other protobuf
/// scalar types (`generate.py` refuses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `string`.
    Str,
    /// `bytes`: a base64 string in JSON.
    Bytes,
    /// `bool`.
    Bool,
    /// `int32`.
    I32,
    /// `int64` (a JSON number, as Go's encoding/json writes it).
    I64,
    /// `double`.
    F64,
    /// A message: an index into `MESSAGES`.
    Msg(u16),
    /// `map<string, string>`.
    MapStr,
    /// `map<string, bytes>`.
    MapBytes,
    /// `map<string, message>`: the value's index into `MESSAGES`.
    MapMsg(u16),
}

/// Field flag: `repeated`.
pub(super) const R: u8 = 1;
/// Field flag: a scalar omitted from JSON when it holds its zero value (`""`, `0`, `false`).
pub(super) const Z: u8 = 2;
/// Field flag: a message whose fields belong to the enclosing JSON object (Go's `json:",inline"`).
pub(super) const I: u8 = 4;

/// One field of a message: `F(tag, json name, kind, flags)`.
#[derive(Debug, Clone, Copy)]
pub(super) struct F(pub u16, pub &'static str, pub Kind, pub u8);

impl F {
    pub(super) fn tag(&self) -> u16 {
        self.0
    }

    pub(super) fn json(&self) -> &'static str {
        self.1
    }

    pub(super) fn kind(&self) -> Kind {
        self.2
    }

    pub(super) fn repeated(&self) -> bool {
        self.3 & R != 0
    }

    pub(super) fn omit_zero(&self) -> bool {
        self.3 & Z != 0
    }

    pub(super) fn inline(&self) -> bool {
        self.3 & I != 0
    }
}

/// Messages whose JSON form is not an object of their fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Special {
    /// An ordinary message: a JSON object.
    None,
    /// `metav1.Time` {1: seconds, 2: nanos}: RFC 3339 to the second, `null` when zero.
    Time,
    /// `metav1.MicroTime` {1: seconds, 2: nanos}: RFC 3339 with microseconds, `null` when zero.
    MicroTime,
    /// `metav1.Duration` {1: nanoseconds}: a Go duration string (`1h0m0s`).
    #[allow(dead_code, reason = "only metrics.k8s.io has a Duration field, and no table includes it yet")]
    Duration,
    /// `metav1.FieldsV1` {1: raw JSON}: the JSON value.
    FieldsV1,
    /// `resource.Quantity` {1: string}: the string.
    Quantity,
    /// `intstr.IntOrString` {1: type, 2: intVal, 3: strVal}: a number or a string.
    IntOrString,
    /// `runtime.RawExtension` {1: raw}: the embedded JSON (or protobuf object).
    RawExtension,
    /// apiextensions `JSON` {1: raw JSON}: the JSON value.
    Json,
    /// `[]string` types that protobuf wraps in a message {1: repeated string} (`Verbs`, `ExtraValue`).
    StringList,
    /// `JSONSchemaPropsOrArray` {1: schema, 2: repeated schemas}: the array if any, else the schema.
    SchemaOrArray,
    /// `JSONSchemaPropsOrBool` {1: allows, 2: schema}: the schema if any, else the bool.
    SchemaOrBool,
    /// `JSONSchemaPropsOrStringArray` {1: schema, 2: repeated property}: the array if any, else the schema.
    SchemaOrStringArray,
}

/// One protobuf message of the Kubernetes API.
#[derive(Debug)]
pub(super) struct Message {
    /// Full protobuf name, for errors and tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub name: &'static str,
    pub special: Special,
    /// In Go struct order, which is the order of the JSON keys.
    pub fields: &'static [F],
}

/// The message at `index`; `None` only if the generated table were inconsistent.
pub(super) fn message(index: u16) -> Option<&'static Message> {
    MESSAGES.get(usize::from(index))
}

/// The message that encodes `kind` of `api_version` (`apps/v1`, `Deployment`).
///
/// The meta kinds that Kubernetes registers in every group version (`DeleteOptions`, `Status`)
/// are found under any apiVersion.
pub(super) fn message_for_kind(api_version: &str, kind: &str) -> Option<u16> {
    KINDS
        .binary_search_by(|(v, k, _)| (*v, *k).cmp(&(api_version, kind)))
        .ok()
        .and_then(|i| KINDS.get(i))
        .map(|(_, _, m)| *m)
        .or_else(|| META_KINDS.iter().find(|(k, _)| *k == kind).map(|(_, m)| *m))
}

#[cfg(test)]
pub(super) fn all_messages() -> &'static [Message] {
    MESSAGES
}

#[cfg(test)]
pub(super) fn all_kinds() -> &'static [(&'static str, &'static str, u16)] {
    KINDS
}
