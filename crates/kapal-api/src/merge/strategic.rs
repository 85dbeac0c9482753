//! Strategic merge patch, as kube-apiserver applies one to a stored object
//! (apimachinery `strategicpatch`, with the options the server uses: directives are merged and
//! `null`s that match nothing are dropped).
//!
//! Maps and structs merge key by key; `null` deletes. Lists follow the field's patch strategy:
//! `merge` lists of objects merge by the merge key, `merge` lists of scalars are sets, every
//! other list is replaced. The directives `$patch`, `$retainKeys`,
//! `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>` are honoured wherever they
//! appear. Where the schema knows nothing (unknown fields, untyped JSON) maps merge and lists
//! are replaced, as in a JSON merge patch.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::schema::{Lookup, NodeId, PatchStrategy, TypeSchema};
use crate::status::ApiError;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_PREFIX: &str = "$deleteFromPrimitiveList";
const ORDER_PREFIX: &str = "$setElementOrder";
const MAX_DEPTH: usize = 128;

/// Why a strategic merge patch could not be applied. The messages are upstream's; see
/// [`PatchError::code`] for the HTTP status each one maps to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch is not a JSON object.
    #[error("invalid JSON document")]
    BadJsonDoc,
    /// A malformed `$deleteFromPrimitiveList` key.
    #[error("invalid patch format of primitive list")]
    BadPrimitiveList,
    /// A malformed `$retainKeys`, or a patch key missing from it.
    #[error("invalid patch format of retainKeys")]
    BadRetainKeys,
    /// A malformed `$setElementOrder` key.
    #[error("invalid patch format of setElementOrder list")]
    BadSetElementOrder,
    /// A list whose elements are lists.
    #[error("lists of lists are not supported")]
    ListOfLists,
    /// An element of a merge list without the merge key.
    #[error("map: {map} does not contain declared merge key: {key}")]
    MissingMergeKey {
        /// The element, printed as Go prints a map.
        map: String,
        /// The merge key.
        key: String,
    },
    /// A `$patch` value other than `replace`/`delete` (or `merge` in a map).
    #[error("unknown patch type: {patch_type} in map: {map}")]
    UnknownPatchType {
        /// The directive's value.
        patch_type: String,
        /// The object holding it, printed as Go prints a map.
        map: String,
    },
    /// `{"$patch": "merge"}` inside a list.
    #[error("merging lists cannot yet be specified in the patch")]
    MergeListDirective,
    /// The non-deleted elements of a patch list are not in `$setElementOrder` order.
    #[error("the order in patch list:\n{patch}\n doesn't match $setElementOrder list:\n{order}")]
    OrderMismatch {
        /// The patch list, printed as Go prints it.
        patch: String,
        /// The order list, printed as Go prints it.
        order: String,
    },
    /// Any other failure (mismatched types and the like).
    #[error("{0}")]
    Other(String),
}

impl PatchError {
    /// The HTTP status kube-apiserver answers with: 400 for malformed patches and directives,
    /// 422 for lists of lists, 500 (with an empty reason) for everything upstream leaves
    /// unmapped.
    pub fn code(&self) -> u16 {
        match self {
            PatchError::BadJsonDoc
            | PatchError::BadPrimitiveList
            | PatchError::BadRetainKeys
            | PatchError::BadSetElementOrder => 400,
            PatchError::ListOfLists => 422,
            _ => 500,
        }
    }

    /// The `metav1.Status` upstream answers with. A 422 here is a generic server response,
    /// whose message does not carry the cause (as upstream's does not).
    pub fn to_api_error(&self) -> ApiError {
        match self.code() {
            400 => ApiError::bad_request(self.to_string()),
            422 => ApiError::new(422, "Invalid", "the server rejected our request due to an error in our request"),
            _ => ApiError::new(500, "", self.to_string()),
        }
    }
}

type Result<T> = std::result::Result<T, PatchError>;

/// Applies a strategic merge patch to `original` and returns the result. The patch must be a
/// JSON object; `original` is treated as `{}` when it is not one.
pub fn strategic_merge(original: &Value, patch: &Value, schema: &TypeSchema) -> Result<Value> {
    let Value::Object(patch) = patch else { return Err(PatchError::BadJsonDoc) };
    let original = match original {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let merger = Merger { schema };
    merger.merge_map(original, patch.clone(), Some(schema.root()), 0).map(Value::Object)
}

struct Merger<'s> {
    schema: &'s TypeSchema,
}

/// What the schema says about one field.
struct Meta {
    strategy: PatchStrategy,
    merge_key: Option<String>,
    node: Option<NodeId>,
}

impl Merger<'_> {
    fn meta(&self, node: Option<NodeId>, key: &str) -> Meta {
        let Some(node) = node else { return Meta { strategy: PatchStrategy::default(), merge_key: None, node: None } };
        match self.schema.lookup(node, key) {
            Lookup::Declared(field) => {
                Meta { strategy: field.patch, merge_key: field.merge_key.clone(), node: Some(field.node) }
            }
            Lookup::Additional(id) => Meta { strategy: PatchStrategy::default(), merge_key: None, node: Some(id) },
            Lookup::Unknown => Meta { strategy: PatchStrategy::default(), merge_key: None, node: None },
        }
    }

    fn items(&self, list: Option<NodeId>) -> Option<NodeId> {
        list.map(|id| self.schema.items(id))
    }

    fn merge_map(
        &self,
        mut original: Map<String, Value>,
        mut patch: Map<String, Value>,
        node: Option<NodeId>,
        depth: usize,
    ) -> Result<Map<String, Value>> {
        if depth > MAX_DEPTH {
            return Err(PatchError::Other("patch nests too deeply".into()));
        }
        if let Some(directive) = patch.get(DIRECTIVE) {
            return handle_directive(directive.clone(), patch);
        }
        apply_retain_keys(&mut original, &mut patch)?;
        self.merge_element_orders(&mut original, &mut patch, node, depth)?;

        // Deletions from primitive lists go last, so a list both merged and trimmed in one
        // patch gives the same result whatever the key order.
        let (deletions, entries): (Vec<_>, Vec<_>) =
            patch.into_iter().partition(|(key, _)| key.starts_with(DELETE_PREFIX));
        for (key, patch_value) in entries.into_iter().chain(deletions) {
            let (key, delete_list) =
                if key.starts_with(DELETE_PREFIX) { (extract_key(&key, DELETE_PREFIX)?, true) } else { (key, false) };
            if patch_value.is_null() {
                original.shift_remove(&key);
                continue;
            }
            let same_type = original.get(&key).is_some_and(|value| json_type(value) == json_type(&patch_value));
            if !same_type {
                // Absent from the original, or of another type: the patch value is taken.
                if !delete_list {
                    insert_without_directives(&mut original, key, patch_value);
                }
                continue;
            }
            match patch_value {
                Value::Object(patch_map) => {
                    let meta = self.meta(node, &key);
                    let merged = if meta.strategy.replace {
                        patch_map
                    } else {
                        let original_map = take_object(&mut original, &key);
                        self.merge_map(original_map, patch_map, meta.node, depth + 1)?
                    };
                    original.insert(key, Value::Object(merged));
                }
                Value::Array(patch_list) => {
                    let meta = self.meta(node, &key);
                    let original_list = take_array(&mut original, &key);
                    let merged = self.merge_slice_handler(original_list, patch_list, &meta, delete_list, depth + 1)?;
                    original.insert(key, Value::Array(merged));
                }
                scalar => insert_without_directives(&mut original, key, scalar),
            }
        }
        Ok(original)
    }

    fn merge_slice_handler(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        meta: &Meta,
        delete_list: bool,
        depth: usize,
    ) -> Result<Vec<Value>> {
        if meta.strategy.merge || delete_list {
            self.merge_slice(original, patch, self.items(meta.node), meta.merge_key.as_deref(), delete_list, depth)
        } else {
            Ok(patch)
        }
    }

    fn merge_slice(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        items: Option<NodeId>,
        merge_key: Option<&str>,
        delete_list: bool,
        depth: usize,
    ) -> Result<Vec<Value>> {
        if original.is_empty() && patch.is_empty() {
            return Ok(original);
        }
        let kind = element_type(&original, &patch)?;
        let merge_key = merge_key.filter(|key| !key.is_empty());
        let (original, patch, merged) = if kind != JsonType::Object {
            if delete_list {
                return Ok(delete_from_slice(original, &patch));
            }
            let mut merged = original.clone();
            merged.extend(patch.iter().cloned());
            (original, patch, deduplicate(merged))
        } else {
            let Some(key) = merge_key else {
                return Err(PatchError::Other("cannot merge lists without merge key".into()));
            };
            let (original, patch) = merge_special_elements(original, patch, key)?;
            let merged = self.merge_plain_elements(original.clone(), &patch, key, items, depth)?;
            (original, patch, merged)
        };
        let (patch_items, server_only) = partition(merged, &patch, merge_key)?;
        normalize_element_order(patch_items, server_only, &patch, &original, merge_key, kind)
    }

    /// Merges patch elements into the original element with the same merge key, or appends
    /// them (without their `null`s, which a typed object could not hold).
    fn merge_plain_elements(
        &self,
        mut original: Vec<Value>,
        patch: &[Value],
        key: &str,
        items: Option<NodeId>,
        depth: usize,
    ) -> Result<Vec<Value>> {
        for element in patch {
            let Value::Object(patch_map) = element else {
                return Err(bad_arg_type("map[string]interface {}", element));
            };
            let Some(key_value) = patch_map.get(key) else { return Err(missing_key(patch_map, key)) };
            match find_by_key(&original, key, key_value)? {
                Some(index) => {
                    let original_map = match original.get_mut(index) {
                        Some(Value::Object(map)) => std::mem::take(map),
                        _ => Map::new(),
                    };
                    let merged = self.merge_map(original_map, patch_map.clone(), items, depth + 1)?;
                    if let Some(slot) = original.get_mut(index) {
                        *slot = Value::Object(merged);
                    }
                }
                None => {
                    let mut element = element.clone();
                    discard_nulls(&mut element);
                    original.push(element);
                }
            }
        }
        Ok(original)
    }

    /// `$setElementOrder/<field>`: merges the field's patch list (if any) and orders the result.
    fn merge_element_orders(
        &self,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
        node: Option<NodeId>,
        depth: usize,
    ) -> Result<()> {
        let keys: Vec<String> = patch.keys().filter(|key| key.starts_with(ORDER_PREFIX)).cloned().collect();
        for directive_key in keys {
            let Some(order_value) = patch.shift_remove(&directive_key) else { continue };
            let Value::Array(order) = order_value else { return Err(bad_arg_type("[]interface {}", &order_value)) };
            let field = extract_key(&directive_key, ORDER_PREFIX)?;
            let original_list = match original.get(&field) {
                None => None,
                Some(Value::Array(list)) => Some(list.clone()),
                Some(other) => return Err(bad_arg_type("[]interface {}", other)),
            };
            let patch_list = match patch.get(&field) {
                None => None,
                Some(Value::Array(list)) => Some(list.clone()),
                Some(other) => return Err(bad_arg_type("[]interface {}", other)),
            };
            let meta = self.meta(node, &field);
            let merge_key = meta.merge_key.as_deref().filter(|key| !key.is_empty());
            validate_order(patch_list.as_deref().unwrap_or(&[]), &order, merge_key)?;
            let merged = match (&original_list, &patch_list) {
                (Some(original_list), None) => original_list.clone(),
                (None, Some(patch_list)) => patch_list.iter().cloned().filter_map(remove_directives).collect(),
                (Some(original_list), Some(patch_list)) => {
                    self.merge_slice_handler(original_list.clone(), patch_list.clone(), &meta, false, depth + 1)?
                }
                (None, None) => continue,
            };
            let (patch_items, server_only) = partition(merged, &order, merge_key)?;
            let original_list = original_list.unwrap_or_default();
            let kind = element_type(&original_list, patch_list.as_deref().unwrap_or(&[]))?;
            let ordered = normalize_element_order(patch_items, server_only, &order, &original_list, merge_key, kind)?;
            original.insert(field.clone(), Value::Array(ordered));
            patch.shift_remove(&field);
        }
        Ok(())
    }
}

fn take_object(map: &mut Map<String, Value>, key: &str) -> Map<String, Value> {
    match map.get_mut(key) {
        Some(Value::Object(inner)) => std::mem::take(inner),
        _ => Map::new(),
    }
}

fn take_array(map: &mut Map<String, Value>, key: &str) -> Vec<Value> {
    match map.get_mut(key) {
        Some(Value::Array(inner)) => std::mem::take(inner),
        _ => Vec::new(),
    }
}

fn handle_directive(directive: Value, mut patch: Map<String, Value>) -> Result<Map<String, Value>> {
    match directive.as_str() {
        Some("replace") => {
            patch.shift_remove(DIRECTIVE);
            Ok(patch)
        }
        Some("delete") => Ok(Map::new()),
        _ => Err(PatchError::UnknownPatchType { patch_type: go_format(&directive), map: go_format_map(&patch) }),
    }
}

/// `$retainKeys`: every non-null patch key must be listed; original keys not listed go away.
fn apply_retain_keys(original: &mut Map<String, Value>, patch: &mut Map<String, Value>) -> Result<()> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS) else { return Ok(()) };
    let Value::Array(retain) = retain else { return Err(PatchError::BadRetainKeys) };
    let listed = |key: &str| retain.iter().any(|v| v.as_str() == Some(key));
    for (key, value) in patch.iter() {
        if value.is_null() || key.starts_with(DELETE_PREFIX) || key.starts_with(ORDER_PREFIX) {
            continue;
        }
        if !listed(key) {
            return Err(PatchError::BadRetainKeys);
        }
    }
    original.retain(|key, _| listed(key));
    Ok(())
}

/// `$prefix/field` → `field`.
fn extract_key(key: &str, prefix: &str) -> Result<String> {
    match key.split_once('/') {
        Some((head, field)) if head == prefix => Ok(field.to_string()),
        _ if prefix == DELETE_PREFIX => Err(PatchError::BadPrimitiveList),
        _ => Err(PatchError::BadSetElementOrder),
    }
}

/// Stores a patch value taken as is: without `null`s, and without any object carrying
/// `$patch` (at any depth). A value that is itself such an object removes the key.
fn insert_without_directives(map: &mut Map<String, Value>, key: String, mut value: Value) {
    discard_nulls(&mut value);
    match remove_directives(value) {
        Some(value) => {
            map.insert(key, value);
        }
        None => {
            map.shift_remove(&key);
        }
    }
}

fn discard_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(discard_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(discard_nulls),
        _ => {}
    }
}

fn remove_directives(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) => {
            if map.contains_key(DIRECTIVE) {
                return None;
            }
            Some(Value::Object(map.into_iter().filter_map(|(k, v)| remove_directives(v).map(|v| (k, v))).collect()))
        }
        Value::Array(items) => Some(Value::Array(items.into_iter().filter_map(remove_directives).collect())),
        other => Some(other),
    }
}

/// Go's dynamic type of a decoded JSON value (integers and floats differ, as they do with
/// the apiserver's int-preserving decoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonType {
    Null,
    Bool,
    Int,
    Float,
    String,
    Array,
    Object,
}

fn json_type(value: &Value) -> JsonType {
    match value {
        Value::Null => JsonType::Null,
        Value::Bool(_) => JsonType::Bool,
        Value::Number(n) if n.is_f64() => JsonType::Float,
        Value::Number(_) => JsonType::Int,
        Value::String(_) => JsonType::String,
        Value::Array(_) => JsonType::Array,
        Value::Object(_) => JsonType::Object,
    }
}

fn go_type_name(value: &Value) -> &'static str {
    match json_type(value) {
        JsonType::Null => "<nil>",
        JsonType::Bool => "bool",
        JsonType::Int => "int64",
        JsonType::Float => "float64",
        JsonType::String => "string",
        JsonType::Array => "[]interface {}",
        JsonType::Object => "map[string]interface {}",
    }
}

fn bad_arg_type(expected: &str, actual: &Value) -> PatchError {
    PatchError::Other(format!("expected a {expected}, but received a {}", go_type_name(actual)))
}

fn missing_key(map: &Map<String, Value>, key: &str) -> PatchError {
    PatchError::MissingMergeKey { map: go_format_map(map), key: key.to_string() }
}

/// The one element type of two lists; lists of lists, `null` elements and mixed types fail.
fn element_type(original: &[Value], patch: &[Value]) -> Result<JsonType> {
    let mut found: Option<JsonType> = None;
    for value in original.iter().chain(patch) {
        let current = json_type(value);
        match found {
            None => {
                if current == JsonType::Array {
                    return Err(PatchError::ListOfLists);
                }
                if current == JsonType::Null {
                    return Err(PatchError::Other("list elements may not be null".into()));
                }
                found = Some(current);
            }
            Some(previous) if previous != current => {
                return Err(PatchError::Other(format!(
                    "list element types are not identical: [{} {}]",
                    go_format_list(original),
                    go_format_list(patch)
                )));
            }
            Some(_) => {}
        }
    }
    found.ok_or_else(|| PatchError::Other("no elements in any of the given slices".into()))
}

fn delete_from_slice(current: Vec<Value>, to_delete: &[Value]) -> Vec<Value> {
    current.into_iter().filter(|v| !to_delete.contains(v)).collect()
}

fn deduplicate(values: Vec<Value>) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    values.into_iter().filter(|v| seen.insert(v.to_string())).collect()
}

/// Applies `{"$patch": …}` elements of a merge list: deletions remove every original element
/// with the key; `replace` makes the rest of the patch the whole list.
fn merge_special_elements(mut original: Vec<Value>, patch: Vec<Value>, key: &str) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut plain = Vec::new();
    let mut replace = false;
    for element in patch {
        let Value::Object(map) = &element else { return Err(bad_arg_type("map[string]interface {}", &element)) };
        match map.get(DIRECTIVE) {
            None => plain.push(element),
            Some(directive) => match directive.as_str() {
                Some("delete") => {
                    let Some(key_value) = map.get(key) else { return Err(missing_key(map, key)) };
                    while let Some(index) = find_by_key(&original, key, key_value)? {
                        original.remove(index);
                    }
                }
                Some("replace") => replace = true,
                Some("merge") => return Err(PatchError::MergeListDirective),
                _ => {
                    return Err(PatchError::UnknownPatchType {
                        patch_type: go_format(directive),
                        map: go_format_map(map),
                    });
                }
            },
        }
    }
    if replace { Ok((plain, Vec::new())) } else { Ok((original, plain)) }
}

/// The index of the first element whose `key` equals `value`.
fn find_by_key(list: &[Value], key: &str, value: &Value) -> Result<Option<usize>> {
    for (index, element) in list.iter().enumerate() {
        let Value::Object(map) = element else {
            return Err(PatchError::Other(format!("value for key {index} is not a map")));
        };
        if map.get(key) == Some(value) {
            return Ok(Some(index));
        }
    }
    Ok(None)
}

/// Splits `merged` into the items present in `by` (by merge key, or by value for scalars)
/// and the rest.
fn partition(merged: Vec<Value>, by: &[Value], merge_key: Option<&str>) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut in_by = Vec::new();
    let mut rest = Vec::new();
    match merge_key {
        None => {
            for value in merged {
                if by.contains(&value) { in_by.push(value) } else { rest.push(value) }
            }
        }
        Some(key) => {
            for value in merged {
                let Value::Object(map) = &value else { return Err(bad_arg_type("map[string]interface {}", &value)) };
                let Some(key_value) = map.get(key) else { return Err(missing_key(map, key)) };
                if find_by_key(by, key, key_value)?.is_some() { in_by.push(value) } else { rest.push(value) }
            }
        }
    }
    Ok((in_by, rest))
}

fn validate_order(patch: &[Value], order: &[Value], merge_key: Option<&str>) -> Result<()> {
    if order.is_empty() || patch.is_empty() {
        return Ok(());
    }
    let non_delete = match merge_key {
        Some(_) => split_deletions(patch.to_vec())?.0,
        None => patch.to_vec(),
    };
    let (mut p, mut o) = (0, 0);
    while p < non_delete.len() && o < order.len() {
        if non_delete[p].get(DIRECTIVE).is_some() {
            p += 1;
            continue;
        }
        if key_values_equal(&non_delete[p], &order[o], merge_key)? {
            p += 1;
        }
        o += 1;
    }
    if p < non_delete.len() && o >= order.len() {
        return Err(PatchError::OrderMismatch { patch: go_format_list(patch), order: go_format_list(order) });
    }
    Ok(())
}

fn key_values_equal(left: &Value, right: &Value, merge_key: Option<&str>) -> Result<bool> {
    let Some(key) = merge_key else { return Ok(left == right) };
    let Value::Object(left) = left else { return Err(bad_arg_type("map[string]interface {}", left)) };
    let Value::Object(right) = right else { return Err(bad_arg_type("map[string]interface {}", right)) };
    let Some(l) = left.get(key) else { return Err(missing_key(left, key)) };
    let Some(r) = right.get(key) else { return Err(missing_key(right, key)) };
    Ok(l == r)
}

/// Splits a list of objects into the elements kept and the `$patch: delete` ones.
fn split_deletions(list: Vec<Value>) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut keep = Vec::new();
    let mut delete = Vec::new();
    for value in list {
        let Value::Object(map) = &value else { return Err(bad_arg_type("map[string]interface {}", &value)) };
        if map.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") { delete.push(value) } else { keep.push(value) }
    }
    Ok((keep, delete))
}

/// The value an element is ordered by: its merge key, or itself for scalars.
fn order_value<'a>(value: &'a Value, merge_key: Option<&str>, kind: JsonType) -> Option<&'a Value> {
    match (kind, merge_key) {
        (JsonType::Object, Some(key)) => value.get(key),
        (JsonType::Object, None) => None,
        _ => Some(value),
    }
}

/// Positions of elements in a reference list, by ordering value (first occurrence wins).
struct Positions {
    index: HashMap<String, usize>,
}

impl Positions {
    fn new(list: &[Value], merge_key: Option<&str>, kind: JsonType) -> Self {
        let mut index = HashMap::new();
        for (i, value) in list.iter().enumerate() {
            if let Some(v) = order_value(value, merge_key, kind) {
                index.entry(v.to_string()).or_insert(i);
            }
        }
        Positions { index }
    }

    fn of(&self, value: &Value, merge_key: Option<&str>, kind: JsonType) -> Option<usize> {
        order_value(value, merge_key, kind).and_then(|v| self.index.get(&v.to_string()).copied())
    }
}

/// Orders patch items by the patch (or `$setElementOrder`) list and server-only items by the
/// original list, then interleaves them: a server-only item goes first only when both are in
/// the original list and it comes first there.
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
    kind: JsonType,
) -> Result<Vec<Value>> {
    let patch_items = normalize_slice_order(patch_items, patch_order, merge_key, kind)?;
    let server_only = normalize_slice_order(server_only, server_order, merge_key, kind)?;
    let positions = Positions::new(server_order, merge_key, kind);
    let mut out = Vec::with_capacity(patch_items.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => {
                let before = match (positions.of(l, merge_key, kind), positions.of(r, merge_key, kind)) {
                    (Some(li), Some(ri)) => li < ri,
                    _ => false,
                };
                let next = if before { left.next() } else { right.next() };
                out.extend(next);
            }
            (Some(_), None) => out.extend(left.next()),
            (None, Some(_)) => out.extend(right.next()),
            (None, None) => break,
        }
    }
    Ok(out)
}

fn normalize_slice_order(
    to_sort: Vec<Value>,
    order: &[Value],
    merge_key: Option<&str>,
    kind: JsonType,
) -> Result<Vec<Value>> {
    let (mut to_sort, deletions) = if kind == JsonType::Object {
        let key = merge_key.unwrap_or_default();
        for value in to_sort.iter().chain(order) {
            let Value::Object(map) = value else { return Err(bad_arg_type("map[string]interface {}", value)) };
            if !map.contains_key(key) {
                return Err(missing_key(map, key));
            }
        }
        split_deletions(to_sort)?
    } else {
        (to_sort, Vec::new())
    };
    let positions = Positions::new(order, merge_key, kind);
    let keyed: Vec<Option<usize>> = to_sort.iter().map(|v| positions.of(v, merge_key, kind)).collect();
    if keyed.iter().all(Option::is_some) {
        let mut pairs: Vec<(Option<usize>, Value)> = keyed.into_iter().zip(to_sort).collect();
        pairs.sort_by_key(|(position, _)| *position);
        to_sort = pairs.into_iter().map(|(_, v)| v).collect();
    } else {
        to_sort = go_insertion_sort(to_sort, keyed);
    }
    to_sort.extend(deletions);
    Ok(to_sort)
}

/// Go's stable sort with upstream's comparator (an element missing from the order list
/// counts as smaller than anything), which is not a strict order; reproduced for the rare
/// lists that hit it.
fn go_insertion_sort(values: Vec<Value>, keys: Vec<Option<usize>>) -> Vec<Value> {
    let mut pairs: Vec<(Option<usize>, Value)> = keys.into_iter().zip(values).collect();
    let less = |a: Option<usize>, b: Option<usize>| match (a, b) {
        (Some(a), Some(b)) => a < b,
        _ => true,
    };
    for i in 1..pairs.len() {
        let mut j = i;
        while j > 0 && less(pairs[j].0, pairs[j - 1].0) {
            pairs.swap(j, j - 1);
            j -= 1;
        }
    }
    pairs.into_iter().map(|(_, v)| v).collect()
}

/// A value as Go's `%v` prints a decoded JSON value: `map[a:1 b:[x y]]`.
fn go_format(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", go_format_list_inner(items)),
        Value::Object(map) => go_format_map(map),
    }
}

fn go_format_map(map: &Map<String, Value>) -> String {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    let parts: Vec<String> = keys.iter().map(|k| format!("{k}:{}", go_format(&map[k.as_str()]))).collect();
    format!("map[{}]", parts.join(" "))
}

fn go_format_list(items: &[Value]) -> String {
    format!("[{}]", go_format_list_inner(items))
}

fn go_format_list_inner(items: &[Value]) -> String {
    items.iter().map(go_format).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
#[path = "strategic_tests.rs"]
mod tests;
