//! `metadata.managedFields`: decoding entries into field sets keyed by manager identity,
//! encoding them back in upstream's order, and capping the number of `Update` entries.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::fieldpath::FieldSet;

/// The most `Update` entries an object keeps; older ones are merged into `ancient-changes`.
pub(crate) const MAX_UPDATE_MANAGERS: usize = 10;
const ANCIENT_CHANGES: &str = "ancient-changes";

/// Whether a manager applied its fields or wrote them otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub subresource: String,
    pub time: Option<String>,
    pub set: FieldSet,
}

impl Entry {
    pub fn new(manager: &str, operation: Operation, api_version: &str, subresource: &str) -> Self {
        Entry {
            manager: manager.to_string(),
            operation,
            api_version: api_version.to_string(),
            subresource: subresource.to_string(),
            time: None,
            set: FieldSet::new(),
        }
    }

    /// The identity upstream keys entries by: the entry's JSON without fields and time, and
    /// without apiVersion for appliers.
    pub fn identity(&self) -> String {
        identity(&self.manager, self.operation, &self.api_version, &self.subresource)
    }

    /// How conflicts name this manager: `"kubectl"`, `"kube-controller-manager" using apps/v1`,
    /// `"x" with subresource "status" using v1`.
    pub fn display(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            out.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }

    fn seconds(&self) -> i64 {
        self.time.as_deref().map(unix_seconds).unwrap_or(0)
    }
}

/// An entry's identity string, as Go's JSON encoder writes it.
pub(crate) fn identity(manager: &str, operation: Operation, api_version: &str, subresource: &str) -> String {
    let mut map = Map::new();
    if !manager.is_empty() {
        map.insert("manager".into(), Value::String(manager.into()));
    }
    map.insert("operation".into(), Value::String(operation.as_str().into()));
    if operation == Operation::Update && !api_version.is_empty() {
        map.insert("apiVersion".into(), Value::String(api_version.into()));
    }
    if !subresource.is_empty() {
        map.insert("subresource".into(), Value::String(subresource.into()));
    }
    go_json(&Value::Object(map))
}

/// JSON as Go's encoder writes it: compact, with `<`, `>`, `&`, U+2028 and U+2029 escaped.
pub(crate) fn go_json(value: &Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

fn unix_seconds(time: &str) -> i64 {
    time.parse::<jiff::Timestamp>().map(|t| t.as_second()).unwrap_or(0)
}

/// Every manager's entry, by identity.
pub(crate) type Managers = BTreeMap<String, Entry>;

/// Decodes `metadata.managedFields` as upstream does (absent or `null` is empty).
pub(crate) fn decode(value: Option<&Value>) -> Result<Managers, String> {
    let mut managers = Managers::new();
    let entries = match value {
        None | Some(Value::Null) => return Ok(managers),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err("managedFields must be a list".into()),
    };
    for (index, entry) in entries.iter().enumerate() {
        let text = |key: &str| entry.get(key).and_then(Value::as_str).unwrap_or_default();
        let operation = match text("operation") {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return Err("operation must be `Apply` or `Update`".into()),
        };
        if text("apiVersion").is_empty() {
            return Err("apiVersion must not be empty".into());
        }
        match text("fieldsType") {
            "FieldsV1" => {}
            "" => return Err(format!("missing fieldsType in managed fields entry {index}")),
            other => return Err(format!("invalid fieldsType {other:?} in managed fields entry {index}")),
        }
        let set = match entry.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::new(),
            Some(fields) => FieldSet::from_fields_v1(fields)?,
        };
        let mut decoded = Entry::new(text("manager"), operation, text("apiVersion"), text("subresource"));
        decoded.time = entry.get("time").and_then(Value::as_str).map(String::from);
        decoded.set = set;
        managers.insert(decoded.identity(), decoded);
    }
    Ok(managers)
}

/// Whether a written `managedFields` asks to clear them: `[]`, or one entirely empty entry.
pub(crate) fn is_reset(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Array(entries)) => match entries.as_slice() {
            [] => true,
            [Value::Object(only)] => only.values().all(is_empty_value),
            _ => false,
        },
        _ => false,
    }
}

fn is_empty_value(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

/// Encodes the entries in upstream's order: operation, then time (missing first), manager,
/// apiVersion, subresource.
pub(crate) fn encode(managers: &Managers) -> Value {
    let mut entries: Vec<&Entry> = managers.values().filter(|e| !e.set.is_empty()).collect();
    entries.sort_by(|a, b| {
        a.operation
            .as_str()
            .cmp(b.operation.as_str())
            .then_with(|| a.seconds().cmp(&b.seconds()))
            .then_with(|| a.manager.cmp(&b.manager))
            .then_with(|| a.api_version.cmp(&b.api_version))
            .then_with(|| a.subresource.cmp(&b.subresource))
    });
    Value::Array(
        entries
            .into_iter()
            .map(|entry| {
                let mut map = Map::new();
                map.insert("manager".into(), Value::String(entry.manager.clone()));
                map.insert("operation".into(), Value::String(entry.operation.as_str().into()));
                map.insert("apiVersion".into(), Value::String(entry.api_version.clone()));
                if let Some(time) = &entry.time {
                    map.insert("time".into(), Value::String(time.clone()));
                }
                map.insert("fieldsType".into(), Value::String("FieldsV1".into()));
                map.insert("fieldsV1".into(), entry.set.to_fields_v1());
                if !entry.subresource.is_empty() {
                    map.insert("subresource".into(), Value::String(entry.subresource.clone()));
                }
                Value::Object(map)
            })
            .collect(),
    )
}

/// Keeps at most [`MAX_UPDATE_MANAGERS`] `Update` entries: the oldest are merged, per
/// apiVersion, into an `ancient-changes` entry.
pub(crate) fn cap_updates(managers: &mut Managers) {
    let mut updaters: Vec<(i64, String)> = managers
        .iter()
        .filter(|(_, e)| e.operation == Operation::Update)
        .map(|(id, e)| (e.seconds(), id.clone()))
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updaters.sort();
    let mut remaining = updaters.len();
    let mut first_by_version: BTreeMap<String, String> = BTreeMap::new();
    for (_, id) in updaters {
        if remaining <= MAX_UPDATE_MANAGERS {
            break;
        }
        let Some(entry) = managers.get(&id).cloned() else { continue };
        let bucket = identity(ANCIENT_CHANGES, Operation::Update, &entry.api_version, "");
        match first_by_version.get(&entry.api_version) {
            Some(first) => {
                if !managers.contains_key(&bucket)
                    && let Some(mut moved) = managers.remove(first)
                {
                    moved.manager = ANCIENT_CHANGES.into();
                    moved.subresource = String::new();
                    managers.insert(bucket.clone(), moved);
                }
                if let Some(target) = managers.get_mut(&bucket) {
                    target.set = entry.set.union(&target.set);
                    target.time = entry.time.clone();
                }
                managers.remove(&id);
                remaining -= 1;
            }
            None => {
                first_by_version.insert(entry.api_version.clone(), id);
            }
        }
    }
}
