//! The schema-driven walk from protobuf bytes to the JSON that Kubernetes would write.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Number, Value};

use super::ProtobufError;
use super::format::{GO_ZERO_TIME_SECONDS, go_duration, rfc3339, rfc3339_micro};
use super::layout::{F, Kind, Message, Special, message};
use super::wire::{self, Reader};

/// How many messages deep a body may nest. CRD schemas are the deepest real objects (one or two
/// messages per schema level); the cap keeps hostile input from exhausting the stack.
pub(super) const MAX_DEPTH: usize = 100;

/// Decodes message `index` from `bytes` into its JSON form.
pub(super) fn decode_message(index: u16, bytes: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::malformed(format!("messages nested deeper than {MAX_DEPTH} levels")));
    }
    let msg = message(index).ok_or_else(|| ProtobufError::malformed(format!("no message {index} in the table")))?;
    match msg.special {
        Special::None => Ok(Value::Object(object(msg, decode_fields(msg, bytes, depth)?))),
        Special::Time => time(bytes, false),
        Special::MicroTime => time(bytes, true),
        Special::Duration => {
            let nanos = last_varint(bytes, 1)?.unwrap_or(0) as i64;
            Ok(Value::String(go_duration(nanos)))
        }
        Special::Quantity => {
            let text = last_string(bytes, 1)?.unwrap_or_default();
            Ok(Value::String(if text.is_empty() { "0".to_string() } else { text }))
        }
        Special::IntOrString => int_or_string(bytes),
        Special::RawExtension => match last_bytes(bytes, 1)? {
            Some(raw) if raw.starts_with(&super::MAGIC) => super::decode_envelope(raw, depth + 1),
            raw => embedded_json(raw),
        },
        Special::Json | Special::FieldsV1 => embedded_json(last_bytes(bytes, 1)?),
        Special::StringList => {
            let mut items = Vec::new();
            let mut reader = Reader::new(bytes);
            while let Some((tag, value)) = reader.next_field()? {
                if tag == 1 {
                    items.push(Value::String(string(value)?));
                }
            }
            Ok(Value::Array(items))
        }
        Special::SchemaOrArray | Special::SchemaOrBool | Special::SchemaOrStringArray => {
            let slots = decode_fields(msg, bytes, depth)?;
            Ok(schema_or(msg, slots))
        }
    }
}

/// Each field's decoded value, in the message's field order (`None` where absent).
type Slots = Vec<Option<Value>>;

fn decode_fields(msg: &Message, bytes: &[u8], depth: usize) -> Result<Slots, ProtobufError> {
    let mut slots: Slots = vec![None; msg.fields.len()];
    let mut reader = Reader::new(bytes);
    while let Some((tag, value)) = reader.next_field()? {
        let Some(i) = msg.fields.iter().position(|f| u32::from(f.tag()) == tag) else {
            continue; // unknown field: a newer client, skipped like protobuf does
        };
        let (Some(field), Some(slot)) = (msg.fields.get(i), slots.get_mut(i)) else { continue };
        store(field, value, slot, depth).map_err(|e| e.within(field.json(), repeated_index(field, slot)))?;
    }
    Ok(slots)
}

/// The index the next element of a repeated field gets, for error paths.
fn repeated_index(field: &F, slot: &Option<Value>) -> Option<usize> {
    match slot {
        Some(Value::Array(items)) if field.repeated() => Some(items.len()),
        _ if field.repeated() => Some(0),
        _ => None,
    }
}

/// Adds one occurrence of `field` to its slot: repeated fields append, maps insert, singular
/// scalars take the last value and singular messages merge, as protobuf parsers do.
fn store(field: &F, value: wire::Value<'_>, slot: &mut Option<Value>, depth: usize) -> Result<(), ProtobufError> {
    match field.kind() {
        Kind::MapStr | Kind::MapBytes | Kind::MapMsg(_) => {
            let (key, entry) = map_entry(field.kind(), value, depth)?;
            if let Value::Object(map) = slot.get_or_insert_with(|| Value::Object(Map::new())) {
                map.insert(key, entry);
            }
        }
        kind if field.repeated() => {
            let length_delimited = matches!(kind, Kind::Str | Kind::Bytes | Kind::Msg(_));
            // An empty packed run of numbers adds nothing, and Go leaves the slice nil.
            if !length_delimited && matches!(value, wire::Value::Len([])) {
                return Ok(());
            }
            let Value::Array(items) = slot.get_or_insert_with(|| Value::Array(Vec::new())) else {
                return Ok(());
            };
            match value {
                wire::Value::Len(packed) if !length_delimited => unpack(kind, packed, items)?,
                _ => items.push(single(kind, value, depth)?),
            }
        }
        kind @ Kind::Msg(_) => {
            let new = single(kind, value, depth)?;
            match slot {
                Some(old) => merge(old, new),
                None => *slot = Some(new),
            }
        }
        kind => *slot = Some(single(kind, value, depth)?),
    }
    Ok(())
}

/// One non-map value of `kind`.
fn single(kind: Kind, value: wire::Value<'_>, depth: usize) -> Result<Value, ProtobufError> {
    use wire::Value::{Fixed64, Len, Varint};
    Ok(match (kind, value) {
        (Kind::Str, _) => Value::String(string(value)?),
        (Kind::Bytes, Len(b)) => Value::String(BASE64.encode(b)),
        (Kind::Msg(index), Len(b)) => decode_message(index, b, depth + 1)?,
        (Kind::Bool, Varint(v)) => Value::Bool(v != 0),
        // Truncation to 32 bits is how protobuf reads int32 varints.
        (Kind::I32, Varint(v)) => Value::from(v as i32),
        (Kind::I64, Varint(v)) => Value::from(v as i64),
        (Kind::F64, Fixed64(v)) => float(f64::from_bits(v))?,
        _ => return Err(wrong_wire_type(kind, value)),
    })
}

/// A packed repeated scalar: the values back to back in one length-delimited field.
fn unpack(kind: Kind, packed: &[u8], items: &mut Vec<Value>) -> Result<(), ProtobufError> {
    let mut reader = Reader::new(packed);
    while !reader.is_empty() {
        let value = match kind {
            Kind::F64 => wire::Value::Fixed64(reader.fixed64()?),
            _ => wire::Value::Varint(reader.varint()?),
        };
        items.push(single(kind, value, 0)?);
    }
    Ok(())
}

/// A map entry message {1: key, 2: value}; absent parts take their zero values.
fn map_entry(kind: Kind, value: wire::Value<'_>, depth: usize) -> Result<(String, Value), ProtobufError> {
    let wire::Value::Len(entry) = value else {
        return Err(wrong_wire_type(kind, value));
    };
    let mut key = String::new();
    let mut raw: Option<wire::Value<'_>> = None;
    let mut reader = Reader::new(entry);
    while let Some((tag, v)) = reader.next_field()? {
        match tag {
            1 => key = string(v)?,
            2 => raw = Some(v),
            _ => {}
        }
    }
    let empty = wire::Value::Len(&[]);
    let value = match kind {
        Kind::MapStr => single(Kind::Str, raw.unwrap_or(empty), depth),
        Kind::MapBytes => single(Kind::Bytes, raw.unwrap_or(empty), depth),
        Kind::MapMsg(index) => single(Kind::Msg(index), raw.unwrap_or(empty), depth),
        _ => Err(ProtobufError::malformed("not a map")),
    }
    .map_err(|e| e.within(&key, None))?;
    Ok((key, value))
}

/// The JSON object of an ordinary message, keys in Go struct order.
fn object(msg: &Message, slots: Slots) -> Map<String, Value> {
    let mut out = Map::new();
    for (field, slot) in msg.fields.iter().zip(slots) {
        let Some(value) = slot else { continue };
        if field.inline() {
            if let Value::Object(inner) = value {
                out.extend(inner);
            }
        } else if !(field.omit_zero() && is_zero(&value)) {
            out.insert(field.json().to_string(), value);
        }
    }
    out
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// Protobuf's merge of a message seen twice: fields of the later one win, nested messages merge,
/// repeated fields concatenate.
fn merge(old: &mut Value, new: Value) {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, value) in new {
                match old.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        old.insert(key, value);
                    }
                }
            }
        }
        (Value::Array(old), Value::Array(new)) => old.extend(new),
        (old, new) => *old = new,
    }
}

fn time(bytes: &[u8], micro: bool) -> Result<Value, ProtobufError> {
    let (mut seconds, mut nanos) = (0i64, 0i64);
    let mut reader = Reader::new(bytes);
    while let Some((tag, value)) = reader.next_field()? {
        match (tag, value) {
            (1, wire::Value::Varint(v)) => seconds = v as i64,
            (2, wire::Value::Varint(v)) => nanos = i64::from(v as i32),
            (1 | 2, other) => return Err(wrong_wire_type(Kind::I64, other)),
            _ => {}
        }
    }
    // Go drops the nanoseconds of a `metav1.Time` when it reads one from protobuf.
    let nanos = if micro { nanos } else { 0 };
    if bytes.is_empty() || (seconds == GO_ZERO_TIME_SECONDS && nanos == 0) {
        return Ok(Value::Null);
    }
    let text = if micro { rfc3339_micro(seconds, nanos) } else { rfc3339(seconds) };
    text.map(Value::String).map_err(ProtobufError::malformed)
}

fn int_or_string(bytes: &[u8]) -> Result<Value, ProtobufError> {
    let (mut kind, mut int, mut text) = (0u64, 0i32, String::new());
    let mut reader = Reader::new(bytes);
    while let Some((tag, value)) = reader.next_field()? {
        match (tag, value) {
            (1, wire::Value::Varint(v)) => kind = v,
            (2, wire::Value::Varint(v)) => int = v as i32,
            (3, v) => text = string(v)?,
            (1 | 2, other) => return Err(wrong_wire_type(Kind::I64, other)),
            _ => {}
        }
    }
    match kind {
        0 => Ok(Value::from(int)),
        1 => Ok(Value::String(text)),
        other => Err(ProtobufError::malformed(format!("IntOrString of unknown type {other}"))),
    }
}

/// Raw JSON carried in a bytes field; absent or empty is `null`, as Go writes it.
fn embedded_json(raw: Option<&[u8]>) -> Result<Value, ProtobufError> {
    match raw {
        None | Some([]) => Ok(Value::Null),
        Some(raw) => serde_json::from_slice(raw)
            .map_err(|e| ProtobufError::malformed(format!("embedded JSON does not parse: {e}"))),
    }
}

/// `JSONSchemaPropsOr{Array,Bool,StringArray}`: field 1 and 2 hold the two alternatives.
fn schema_or(msg: &Message, slots: Slots) -> Value {
    let mut first = None;
    let mut second = None;
    for (field, slot) in msg.fields.iter().zip(slots) {
        match field.tag() {
            1 => first = slot,
            2 => second = slot,
            _ => {}
        }
    }
    let non_empty = |v: &Option<Value>| matches!(v, Some(Value::Array(a)) if !a.is_empty());
    match msg.special {
        // {1: schema, 2: jsonSchemas}
        Special::SchemaOrArray if non_empty(&second) => second.unwrap_or(Value::Null),
        Special::SchemaOrArray => first.unwrap_or(Value::Null),
        // {1: allows, 2: schema}
        Special::SchemaOrBool => second.or(first).unwrap_or(Value::Bool(false)),
        // {1: schema, 2: property}
        _ if non_empty(&second) => second.unwrap_or(Value::Null),
        _ => first.unwrap_or(Value::Null),
    }
}

/// The last occurrence of a varint field.
fn last_varint(bytes: &[u8], want: u32) -> Result<Option<u64>, ProtobufError> {
    let mut out = None;
    let mut reader = Reader::new(bytes);
    while let Some((tag, value)) = reader.next_field()? {
        if tag == want {
            let wire::Value::Varint(v) = value else { return Err(wrong_wire_type(Kind::I64, value)) };
            out = Some(v);
        }
    }
    Ok(out)
}

/// The last occurrence of a length-delimited field.
fn last_bytes(bytes: &[u8], want: u32) -> Result<Option<&[u8]>, ProtobufError> {
    let mut out = None;
    let mut reader = Reader::new(bytes);
    while let Some((tag, value)) = reader.next_field()? {
        if tag == want {
            let wire::Value::Len(b) = value else { return Err(wrong_wire_type(Kind::Bytes, value)) };
            out = Some(b);
        }
    }
    Ok(out)
}

fn last_string(bytes: &[u8], want: u32) -> Result<Option<String>, ProtobufError> {
    Ok(last_bytes(bytes, want)?.map(|b| String::from_utf8_lossy(b).into_owned()))
}

/// A string field. Invalid UTF-8 becomes U+FFFD, which is what the Kubernetes JSON encoder
/// makes of it too (Go strings hold any bytes; encoding/json replaces the invalid ones).
fn string(value: wire::Value<'_>) -> Result<String, ProtobufError> {
    match value {
        wire::Value::Len(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        other => Err(wrong_wire_type(Kind::Str, other)),
    }
}

fn float(v: f64) -> Result<Value, ProtobufError> {
    Number::from_f64(v).map(Value::Number).ok_or_else(|| ProtobufError::malformed(format!("{v} has no JSON form")))
}

fn wrong_wire_type(kind: Kind, value: wire::Value<'_>) -> ProtobufError {
    ProtobufError::malformed(format!("wire type {} for a field of type {kind:?}", value.wire_type()))
}
