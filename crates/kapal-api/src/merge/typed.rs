//! Schema-aware operations on whole objects for server-side apply, after structured-merge-diff
//! (v4.6, Apache-2.0): the field set of a value, merging a configuration into a live object,
//! comparing two versions, and removing a set of fields.
//!
//! Live objects are handled leniently (an element without its keys is passed through as is);
//! applied configurations are validated first, so the walkers never need to fail.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::{Map, Value};

use super::fieldpath::{FieldSet, Path, PathElement, path_string, values_equal};
use crate::schema::{ANY_GRANULAR, ListNode, ListType, Lookup, Node, NodeId, TypeSchema};

const MAX_DEPTH: usize = 128;
static NULL: Value = Value::Null;

/// How a value at a node is walked.
#[derive(Clone, Copy)]
enum Shape<'s> {
    /// Owned and replaced as one value: scalars, atomic maps and lists, mismatched values.
    Leaf,
    /// A granular map or struct.
    Map,
    /// An associative list (set or keyed).
    List(&'s ListNode),
}

/// The three ways two versions of an object differ.
#[derive(Debug, Default)]
pub(crate) struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    /// Drops changes to ignored fields (and below them).
    pub fn filter(self, ignored: &FieldSet) -> Comparison {
        if ignored.is_empty() {
            return self;
        }
        Comparison {
            added: self.added.recursive_difference(ignored),
            modified: self.modified.recursive_difference(ignored),
            removed: self.removed.recursive_difference(ignored),
        }
    }
}

/// Walks values with a schema.
pub(crate) struct Typed<'s> {
    pub schema: &'s TypeSchema,
}

impl<'s> Typed<'s> {
    pub fn new(schema: &'s TypeSchema) -> Self {
        Typed { schema }
    }

    fn shape(&self, id: NodeId, value: Option<&Value>) -> Shape<'s> {
        match (self.schema.node(id), value) {
            (Node::Object(object), None | Some(Value::Null | Value::Object(_))) if !object.atomic => Shape::Map,
            (Node::List(list), None | Some(Value::Null | Value::Array(_))) if list.list_type != ListType::Atomic => {
                Shape::List(list)
            }
            (Node::Any { atomic: false }, Some(Value::Object(_))) => Shape::Map,
            _ => Shape::Leaf,
        }
    }

    /// The type of a map key, whether it is a declared struct field, and whether the schema
    /// allows it at all (unknown keys are walked as untyped JSON).
    fn child(&self, id: NodeId, key: &str) -> (NodeId, bool, bool) {
        match self.schema.lookup(id, key) {
            Lookup::Declared(field) => (field.node, true, true),
            Lookup::Additional(node) => (node, false, true),
            Lookup::Unknown => (ANY_GRANULAR, false, false),
        }
    }

    fn is_declared_field(&self, id: NodeId, name: &str) -> bool {
        matches!(self.schema.lookup(id, name), Lookup::Declared(_))
    }

    /// The path element of a list item: its keys, or its value in a set.
    pub fn item_element(&self, list: &ListNode, item: &Value) -> Result<PathElement, String> {
        match &list.list_type {
            ListType::Set => match item {
                Value::Object(_) => Err("associative list without keys has an element that's a map type".into()),
                Value::Array(_) => Err("not supported: associative list with lists as elements".into()),
                Value::Null => Err("associative list without keys has an element that's an explicit null".into()),
                scalar => Ok(PathElement::Value(scalar.clone())),
            },
            ListType::Map(keys) => {
                let map = match item {
                    Value::Null => return Err("associative list with keys may not have a null element".into()),
                    Value::Object(map) => map,
                    _ => return Err("associative list with keys may not have non-map elements".into()),
                };
                let mut fields = Vec::with_capacity(keys.len());
                for key in keys {
                    match map.get(&key.name).or(key.default.as_ref()) {
                        Some(value) => fields.push((key.name.clone(), value.clone())),
                        None => {
                            return Err(format!(
                                "associative list with keys has an element that omits key field {:?} (and doesn't have default value)",
                                key.name
                            ));
                        }
                    }
                }
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(PathElement::Key(fields))
            }
            ListType::Atomic => Err("invalid indexing of non-associative list".into()),
        }
    }

    /// Path elements of a live list's items; items without valid keys get a private index so
    /// they are carried along untouched.
    fn live_elements(&self, list: &ListNode, items: &[Value]) -> Vec<PathElement> {
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.item_element(list, item).unwrap_or(PathElement::Index(usize::MAX - i)))
            .collect()
    }

    /// Validates an applied configuration: unknown fields, list elements without keys and
    /// duplicate keys. Messages are structured-merge-diff's (`.spec.foo: field not declared in
    /// schema`).
    pub fn validate(&self, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.validate_at(self.schema.root(), value, &mut Vec::new(), &mut errors, 0);
        errors
    }

    fn validate_at(&self, id: NodeId, value: &Value, path: &mut Path, errors: &mut Vec<String>, depth: usize) {
        if depth > MAX_DEPTH {
            errors.push(format!("{}: object nests too deeply", path_string(path)));
            return;
        }
        match (self.shape(id, Some(value)), value) {
            (Shape::Map, Value::Object(map)) => {
                for (key, child) in map {
                    let (child_id, _, known) = self.child(id, key);
                    path.push(PathElement::Field(key.clone()));
                    if known {
                        self.validate_at(child_id, child, path, errors, depth + 1);
                    } else {
                        errors.push(format!("{}: field not declared in schema", path_string(path)));
                    }
                    path.pop();
                }
            }
            (Shape::List(list), Value::Array(items)) => {
                let mut seen = BTreeSet::new();
                for (index, item) in items.iter().enumerate() {
                    match self.item_element(list, item) {
                        Err(message) => errors.push(format!("{}: element {index}: {message}", path_string(path))),
                        Ok(element) => {
                            if !seen.insert(element.clone()) {
                                errors.push(format!("{}: duplicate entries for key {element}", path_string(path)));
                            }
                            path.push(element);
                            self.validate_at(list.items, item, path, errors, depth + 1);
                            path.pop();
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// The set of fields a value holds: scalars, atomic values, list items, map entries not
    /// declared as struct fields, and `null`s and empty objects as leaves. Struct fields with
    /// children are not members themselves.
    pub fn field_set(&self, value: &Value) -> FieldSet {
        let mut set = FieldSet::new();
        self.field_set_at(self.schema.root(), value, &mut Vec::new(), &mut set, 0);
        set
    }

    fn field_set_at(&self, id: NodeId, value: &Value, path: &mut Path, set: &mut FieldSet, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match (self.shape(id, Some(value)), value) {
            (Shape::Leaf, _) => set.insert(path),
            (Shape::Map, Value::Object(map)) => {
                for (key, child) in map {
                    let (child_id, declared, _) = self.child(id, key);
                    path.push(PathElement::Field(key.clone()));
                    self.field_set_at(child_id, child, path, set, depth + 1);
                    let empty_object = matches!(child, Value::Object(m) if m.is_empty());
                    if child.is_null() || empty_object || !declared {
                        set.insert(path);
                    }
                    path.pop();
                }
            }
            (Shape::List(list), Value::Array(items)) => {
                for item in items {
                    let Ok(element) = self.item_element(list, item) else { continue };
                    path.push(element);
                    self.field_set_at(list.items, item, path, set, depth + 1);
                    set.insert(path);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    /// Merges an applied configuration into a live object: the configuration's scalars and
    /// atomic values win, maps merge key by key, associative lists merge by key with the
    /// configuration's items in its order and live-only items kept in place.
    pub fn merge(&self, live: &Value, config: &Value) -> Value {
        self.merge_at(self.schema.root(), Some(live), Some(config), 0).unwrap_or(Value::Null)
    }

    fn merge_at(&self, id: NodeId, lhs: Option<&Value>, rhs: Option<&Value>, depth: usize) -> Option<Value> {
        let (l, r) = match (lhs, rhs) {
            (None, None) => return None,
            (Some(l), None) => return Some(l.clone()),
            (None, Some(r)) => return Some(r.clone()),
            (Some(l), Some(r)) => (l, r),
        };
        if depth > MAX_DEPTH {
            return Some(r.clone());
        }
        match (self.shape(id, Some(l)), self.shape(id, Some(r))) {
            (Shape::Map, Shape::Map) => {
                let (lm, rm) = (as_map(l), as_map(r));
                if lm.is_empty() && rm.is_empty() {
                    return Some(r.clone());
                }
                let mut out = Map::new();
                for (key, lv) in lm {
                    let (child, _, _) = self.child(id, key);
                    if let Some(v) = self.merge_at(child, Some(lv), rm.get(key), depth + 1) {
                        out.insert(key.clone(), v);
                    }
                }
                for (key, rv) in rm {
                    if !lm.contains_key(key) {
                        out.insert(key.clone(), rv.clone());
                    }
                }
                Some(Value::Object(out))
            }
            (Shape::List(list), Shape::List(_)) => {
                let (la, ra) = (as_list(l), as_list(r));
                if la.is_empty() && ra.is_empty() {
                    return Some(r.clone());
                }
                Some(Value::Array(self.merge_list(list, la, ra, depth)))
            }
            _ => Some(r.clone()),
        }
    }

    fn merge_list(&self, list: &ListNode, lhs: &[Value], rhs: &[Value], depth: usize) -> Vec<Value> {
        let lhs_pes = self.live_elements(list, lhs);
        let rhs_pes: Vec<PathElement> = rhs
            .iter()
            .enumerate()
            .map(|(i, item)| self.item_element(list, item).unwrap_or(PathElement::Index(usize::MAX / 2 - i)))
            .collect();
        let mut observed_lhs: BTreeMap<&PathElement, &Value> = BTreeMap::new();
        for (pe, item) in lhs_pes.iter().zip(lhs) {
            // Duplicated live items are not merged with the configuration's.
            observed_lhs.entry(pe).and_modify(|v| *v = &NULL).or_insert(item);
        }
        let mut observed_rhs: BTreeMap<&PathElement, &Value> = BTreeMap::new();
        for (pe, item) in rhs_pes.iter().zip(rhs) {
            observed_rhs.entry(pe).or_insert(item);
        }
        let mut shared: VecDeque<&PathElement> = rhs_pes.iter().filter(|pe| observed_lhs.contains_key(pe)).collect();
        let mut next_shared = shared.pop_front();
        let mut merged_rhs: BTreeSet<&PathElement> = BTreeSet::new();
        let mut out = Vec::with_capacity(lhs.len().max(rhs.len()));
        let (mut li, mut ri) = (0, 0);
        while li < lhs.len() || ri < rhs.len() {
            let before = (li, ri);
            if li < lhs.len() && ri < rhs.len() {
                let pe = &lhs_pes[li];
                if *pe == rhs_pes[ri] {
                    merged_rhs.insert(pe);
                    let merged = self.merge_at(
                        list.items,
                        observed_lhs.get(pe).copied(),
                        observed_rhs.get(pe).copied(),
                        depth + 1,
                    );
                    out.extend(merged);
                    li += 1;
                    ri += 1;
                    next_shared = shared.pop_front();
                    continue;
                }
                if observed_rhs.contains_key(pe) && next_shared.is_some_and(|next| next != pe) {
                    li += 1;
                    continue;
                }
            }
            if li < lhs.len() {
                let pe = &lhs_pes[li];
                if !observed_rhs.contains_key(pe) {
                    out.push(lhs[li].clone());
                    li += 1;
                    continue;
                } else if merged_rhs.contains(pe) {
                    li += 1;
                    continue;
                }
            }
            if ri < rhs.len() {
                let pe = &rhs_pes[ri];
                merged_rhs.insert(pe);
                let merged =
                    self.merge_at(list.items, observed_lhs.get(pe).copied(), observed_rhs.get(pe).copied(), depth + 1);
                out.extend(merged);
                ri += 1;
                if next_shared == Some(pe) {
                    next_shared = shared.pop_front();
                }
            }
            if (li, ri) == before {
                // Cannot happen with consistent keys; never loop forever on odd input.
                li += 1;
            }
        }
        out
    }

    /// Which fields were added, modified and removed from `old` to `new`. An object or list
    /// item that appears or disappears as a whole is itself added or removed.
    pub fn compare(&self, old: &Value, new: &Value) -> Comparison {
        let mut comparison = Comparison::default();
        self.compare_at(self.schema.root(), Some(old), Some(new), &mut Vec::new(), &mut comparison, 0);
        comparison
    }

    fn compare_at(
        &self,
        id: NodeId,
        lhs: Option<&Value>,
        rhs: Option<&Value>,
        path: &mut Path,
        out: &mut Comparison,
        depth: usize,
    ) {
        if lhs.is_none() && rhs.is_none() {
            return;
        }
        let shapes = (lhs.map(|l| self.shape(id, Some(l))), rhs.map(|r| self.shape(id, Some(r))));
        let shape = match shapes {
            (Some(Shape::Map), Some(Shape::Map) | None) | (None, Some(Shape::Map)) => Shape::Map,
            (Some(Shape::List(list)), Some(Shape::List(_)) | None) | (None, Some(Shape::List(list))) => {
                Shape::List(list)
            }
            _ => Shape::Leaf,
        };
        if depth > MAX_DEPTH {
            return compare_leaf(lhs, rhs, path, out);
        }
        match shape {
            Shape::Leaf => return compare_leaf(lhs, rhs, path, out),
            Shape::Map => {
                let (lm, rm) = (lhs.map(as_map).unwrap_or(&EMPTY_MAP), rhs.map(as_map).unwrap_or(&EMPTY_MAP));
                if lm.is_empty() && rm.is_empty() {
                    return compare_leaf(lhs, rhs, path, out);
                }
                for (key, lv) in lm {
                    let (child, _, _) = self.child(id, key);
                    path.push(PathElement::Field(key.clone()));
                    self.compare_at(child, Some(lv), rm.get(key), path, out, depth + 1);
                    path.pop();
                }
                for (key, rv) in rm {
                    if !lm.contains_key(key) {
                        let (child, _, _) = self.child(id, key);
                        path.push(PathElement::Field(key.clone()));
                        self.compare_at(child, None, Some(rv), path, out, depth + 1);
                        path.pop();
                    }
                }
            }
            Shape::List(list) => {
                let (la, ra) = (lhs.map(as_list).unwrap_or(&[]), rhs.map(as_list).unwrap_or(&[]));
                if la.is_empty() && ra.is_empty() {
                    return compare_leaf(lhs, rhs, path, out);
                }
                self.compare_items(list, la, ra, path, out, depth);
            }
        }
        if lhs.is_none() {
            out.added.insert(path);
        } else if rhs.is_none() {
            out.removed.insert(path);
        }
    }

    fn compare_items(
        &self,
        list: &ListNode,
        lhs: &[Value],
        rhs: &[Value],
        path: &mut Path,
        out: &mut Comparison,
        depth: usize,
    ) {
        let mut order: Vec<PathElement> = Vec::new();
        let mut seen: BTreeSet<PathElement> = BTreeSet::new();
        let mut left: BTreeMap<PathElement, Vec<&Value>> = BTreeMap::new();
        let mut right: BTreeMap<PathElement, Vec<&Value>> = BTreeMap::new();
        for (side, items) in [(&mut left, lhs), (&mut right, rhs)] {
            for item in items {
                let Ok(element) = self.item_element(list, item) else { continue };
                if seen.insert(element.clone()) {
                    order.push(element.clone());
                }
                side.entry(element).or_default().push(item);
            }
        }
        for element in order {
            let l = left.get(&element).map(Vec::as_slice).unwrap_or(&[]);
            let r = right.get(&element).map(Vec::as_slice).unwrap_or(&[]);
            path.push(element);
            match (l.len(), r.len()) {
                (a, b) if a >= 2 && b >= 2 => {
                    if a != b || l.iter().zip(r).any(|(x, y)| !values_equal(x, y)) {
                        out.modified.insert(path);
                    }
                }
                (a, b) if a >= 2 => {
                    if b > 0 {
                        out.modified.insert(path)
                    } else {
                        out.removed.insert(path)
                    }
                }
                (a, b) if b >= 2 => {
                    if a > 0 {
                        out.modified.insert(path)
                    } else {
                        out.added.insert(path)
                    }
                }
                _ => self.compare_at(list.items, l.first().copied(), r.first().copied(), path, out, depth + 1),
            }
            path.pop();
        }
    }

    /// The value without the fields of `set`. Maps and lists left empty become `null`, as in
    /// structured-merge-diff; callers drop those `null`s.
    pub fn remove(&self, value: &Value, set: &FieldSet) -> Value {
        self.remove_at(self.schema.root(), value, set, 0)
    }

    fn remove_at(&self, id: NodeId, value: &Value, set: &FieldSet, depth: usize) -> Value {
        if depth > MAX_DEPTH {
            return value.clone();
        }
        match (self.shape(id, Some(value)), value) {
            (Shape::Map, Value::Object(map)) => {
                let mut out = Map::new();
                for (key, child) in map {
                    let element = PathElement::Field(key.clone());
                    if set.has_member(&element) {
                        continue;
                    }
                    let kept = match set.child(&element) {
                        Some(sub) => self.remove_at(self.child(id, key).0, child, sub, depth + 1),
                        None => child.clone(),
                    };
                    out.insert(key.clone(), kept);
                }
                if out.is_empty() { Value::Null } else { Value::Object(out) }
            }
            (Shape::List(list), Value::Array(items)) => {
                let elements = self.live_elements(list, items);
                let mut out = Vec::new();
                for (element, item) in elements.iter().zip(items) {
                    if set.has_member(element) {
                        continue;
                    }
                    match set.child(element) {
                        Some(sub) => out.push(self.remove_at(list.items, item, sub, depth + 1)),
                        None => out.push(item.clone()),
                    }
                }
                if out.is_empty() { Value::Null } else { Value::Array(out) }
            }
            (Shape::Map | Shape::List(_), _) => Value::Null,
            (Shape::Leaf, _) => value.clone(),
        }
    }

    /// The set plus every declared struct field that has owned children, as a member (so
    /// removing the set removes the field once it is empty).
    pub fn with_named_fields(&self, set: &FieldSet) -> FieldSet {
        self.named_at(self.schema.root(), set, 0)
    }

    fn named_at(&self, id: NodeId, set: &FieldSet, depth: usize) -> FieldSet {
        let mut out = FieldSet::new();
        for member in set.members() {
            out.insert_member(member.clone());
        }
        for (element, child) in set.children() {
            let child_id = match element {
                PathElement::Field(name) => {
                    if self.is_declared_field(id, name) {
                        out.insert_member(element.clone());
                    }
                    self.child(id, name).0
                }
                _ => self.schema.items(id),
            };
            let child = if depth > MAX_DEPTH { child.clone() } else { self.named_at(child_id, child, depth + 1) };
            out.set_child(element.clone(), child);
        }
        out
    }

    /// Drops `null` values from typed maps (a typed object cannot hold them); untyped JSON
    /// keeps its `null`s.
    pub fn strip_nulls(&self, value: &mut Value) {
        self.strip_at(self.schema.root(), value, 0);
    }

    fn strip_at(&self, id: NodeId, value: &mut Value, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match (self.schema.node(id), value) {
            (Node::Object(_), Value::Object(map)) => {
                map.retain(|_, v| !v.is_null());
                for (key, child) in map.iter_mut() {
                    let child_id = self.child(id, key).0;
                    self.strip_at(child_id, child, depth + 1);
                }
            }
            (Node::List(list), Value::Array(items)) => {
                for item in items {
                    self.strip_at(list.items, item, depth + 1);
                }
            }
            _ => {}
        }
    }
}

static EMPTY_MAP: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

fn as_map(value: &Value) -> &Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => &EMPTY_MAP,
    }
}

fn as_list(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        _ => &[],
    }
}

fn compare_leaf(lhs: Option<&Value>, rhs: Option<&Value>, path: &Path, out: &mut Comparison) {
    match (lhs, rhs) {
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        (Some(l), Some(r)) if !values_equal(l, r) => out.modified.insert(path),
        _ => {}
    }
}
