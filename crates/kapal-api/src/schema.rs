//! Type graphs for walking objects by type.
//!
//! Strategic merge patch, server-side apply, strict field validation and CRD pruning all need
//! to know, at every point of an object, what type is expected there: a struct with declared
//! fields, a map with free keys, a list (and how it merges), a scalar, or untyped JSON. A
//! [`TypeSchema`] is that knowledge as a small graph of [`Node`]s, annotated with the merge
//! metadata of both worlds:
//!
//! * strategic merge patch reads a field's patch strategy and merge key ([`Field`]);
//! * server-side apply reads list types and keys ([`ListType`]) and atomic maps and structs.
//!
//! Built-in kinds get their graph from k8s-openapi's JSON schemas plus Kapal's tables of merge
//! metadata ([`builtin_schema`], [`extensions_for`]); custom resources get theirs from the CRD's
//! `openAPIV3Schema` and its `x-kubernetes-*` extensions ([`from_openapi_v3`]).

mod builtin;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

pub use builtin::{builtin_schema, extensions_for};

/// Index of a node in a [`TypeSchema`].
pub type NodeId = usize;

/// Untyped JSON whose objects are granular (SSA's "deduced" type): every arena has it at 0.
pub const ANY_GRANULAR: NodeId = 0;
/// Untyped JSON owned as one value: every arena has it at 1.
pub const ANY_ATOMIC: NodeId = 1;
/// A scalar (string, number, boolean, int-or-string): every arena has it at 2.
pub const SCALAR: NodeId = 2;

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// One type in the graph.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A string, number, boolean or int-or-string value.
    Scalar,
    /// Untyped JSON (RawExtension, `x-kubernetes-preserve-unknown-fields`). Unknown fields are
    /// allowed anywhere inside. When `atomic`, server-side apply owns it as one value; otherwise
    /// its objects are granular and its lists atomic, decided by the value found.
    Any {
        /// Owned as a whole by server-side apply.
        atomic: bool,
    },
    /// A struct (declared fields), a map (free keys), or both.
    Object(ObjectNode),
    /// A list.
    List(ListNode),
}

/// A JSON object type: a struct's declared fields and/or the type of free map keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectNode {
    /// Declared fields.
    pub fields: BTreeMap<String, Field>,
    /// The type of keys that are not declared: `Some` for maps (`additionalProperties`) and
    /// objects that preserve unknown fields; `None` for structs, where other keys are unknown.
    pub additional: Option<NodeId>,
    /// Server-side apply owns this object as one value (`x-kubernetes-map-type: atomic`).
    pub atomic: bool,
}

/// A declared field of a struct, with its strategic-merge-patch metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The field's type.
    pub node: NodeId,
    /// `x-kubernetes-patch-strategy`.
    pub patch: PatchStrategy,
    /// `x-kubernetes-patch-merge-key`.
    pub merge_key: Option<String>,
    /// Go encodes this field even in an empty object (a non-pointer struct), so an empty object
    /// of the enclosing kind already has it; see [`TypeSchema::zero_object`].
    pub zero_present: bool,
    /// Listed in the schema's `required`.
    pub required: bool,
}

/// A strategic-merge-patch strategy: a combination of `merge`, `replace` and `retainKeys`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PatchStrategy {
    /// Lists merge element by element (by merge key, or as a set of scalars).
    pub merge: bool,
    /// The patch value replaces the original as a whole.
    pub replace: bool,
    /// Clients may send `$retainKeys` for this field.
    pub retain_keys: bool,
}

impl PatchStrategy {
    /// Parses an `x-kubernetes-patch-strategy` value such as `merge,retainKeys`.
    pub fn parse(text: &str) -> PatchStrategy {
        let mut strategy = PatchStrategy::default();
        for part in text.split(',').map(str::trim) {
            match part {
                "merge" => strategy.merge = true,
                "replace" => strategy.replace = true,
                "retainKeys" => strategy.retain_keys = true,
                _ => {}
            }
        }
        strategy
    }

    /// The `x-kubernetes-patch-strategy` text, or `None` for no strategy.
    pub fn text(&self) -> Option<String> {
        let parts: Vec<&str> = [(self.merge, "merge"), (self.replace, "replace"), (self.retain_keys, "retainKeys")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect();
        if parts.is_empty() { None } else { Some(parts.join(",")) }
    }
}

/// A list type with its element type.
#[derive(Debug, Clone, PartialEq)]
pub struct ListNode {
    /// The element type.
    pub items: NodeId,
    /// How server-side apply merges and owns the list.
    pub list_type: ListType,
}

/// `x-kubernetes-list-type`.
#[derive(Debug, Clone, PartialEq)]
pub enum ListType {
    /// Owned and replaced as a whole.
    Atomic,
    /// A set of scalars; each value is owned separately (`v:` in FieldsV1).
    Set,
    /// A map keyed by the listed fields (`k:` in FieldsV1).
    Map(Vec<ListKey>),
}

/// One key field of a `map` list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListKey {
    /// The field name.
    pub name: String,
    /// The value assumed when an element omits the field; without one, such an element is
    /// invalid.
    pub default: Option<Value>,
}

/// A compact type graph for one kind, shared through `Arc`.
#[derive(Debug, Clone)]
pub struct TypeSchema {
    nodes: Arc<Vec<Node>>,
    root: NodeId,
}

/// What a key of an object maps to, per the schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lookup<'a> {
    /// A declared struct field.
    Declared(&'a Field),
    /// A free map key (or a preserved unknown field) of this type.
    Additional(NodeId),
    /// A key the schema does not allow.
    Unknown,
}

static FALLBACK: Node = Node::Any { atomic: true };

impl TypeSchema {
    /// The type of the whole object.
    pub fn root(&self) -> NodeId {
        self.root
    }

    /// A node by id. Ids come from this schema; an out-of-range id reads as atomic untyped JSON.
    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes.get(id).unwrap_or(&FALLBACK)
    }

    /// What `key` of an object of type `id` is.
    pub fn lookup(&self, id: NodeId, key: &str) -> Lookup<'_> {
        match self.node(id) {
            Node::Object(object) => match object.fields.get(key) {
                Some(field) => Lookup::Declared(field),
                None => object.additional.map_or(Lookup::Unknown, Lookup::Additional),
            },
            Node::Any { .. } => Lookup::Additional(ANY_GRANULAR),
            Node::Scalar | Node::List(_) => Lookup::Unknown,
        }
    }

    /// The type of `key` in an object of type `id`, if the key is allowed there.
    pub fn child(&self, id: NodeId, key: &str) -> Option<NodeId> {
        match self.lookup(id, key) {
            Lookup::Declared(field) => Some(field.node),
            Lookup::Additional(node) => Some(node),
            Lookup::Unknown => None,
        }
    }

    /// The element type of a list of type `id`, or untyped JSON if `id` is not a list.
    pub fn items(&self, id: NodeId) -> NodeId {
        match self.node(id) {
            Node::List(list) => list.items,
            _ => ANY_GRANULAR,
        }
    }

    /// The object a freshly created Go value of this kind converts to: the non-pointer struct
    /// fields Go always encodes (`metadata`, `spec`, `status`, a pod template's `metadata` and
    /// `spec`, …) as empty objects, and required lists and maps (which Go encodes without
    /// `omitempty`) as `null`. Managed-fields tracking of a create compares the new object with
    /// this, as upstream compares it with `scheme.New(kind)`.
    pub fn zero_object(&self) -> Value {
        let mut value = Value::Object(Map::new());
        self.fill_zero_at(self.root, &mut value, true, 0);
        value
    }

    /// Adds the empty non-pointer structs Go would encode but `value` lacks (`status: {}`,
    /// `resources: {}` in every container, …), so that objects stored without them compare
    /// like upstream's typed objects.
    pub fn fill_zero(&self, value: &mut Value) {
        self.fill_zero_at(self.root, value, false, 0);
    }

    fn fill_zero_at(&self, id: NodeId, value: &mut Value, nulls: bool, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match (self.node(id), value) {
            (Node::Object(object), Value::Object(map)) => {
                for (name, field) in &object.fields {
                    if map.contains_key(name) {
                        continue;
                    }
                    match self.node(field.node) {
                        Node::Object(_) if field.zero_present => {
                            map.insert(name.clone(), Value::Object(Map::new()));
                        }
                        Node::Object(_) | Node::List(_) if nulls && field.required => {
                            map.insert(name.clone(), Value::Null);
                        }
                        _ => {}
                    }
                }
                for (key, child) in map.iter_mut() {
                    if let Some(child_id) = self.child(id, key) {
                        self.fill_zero_at(child_id, child, nulls, depth + 1);
                    }
                }
            }
            (Node::List(list), Value::Array(items)) => {
                for item in items {
                    self.fill_zero_at(list.items, item, nulls, depth + 1);
                }
            }
            _ => {}
        }
    }
}

/// Builds a graph from OpenAPI v3 schemas, one node per type.
pub(crate) struct GraphBuilder<'d> {
    nodes: Vec<Node>,
    named: std::collections::HashMap<String, NodeId>,
    /// Named definitions `$ref`s resolve against (the built-in definitions).
    defs: &'d Map<String, Value>,
    /// Built-in mode: definitions get Kapal's merge metadata and key defaults.
    builtin: bool,
    /// The built-in definition and field being converted, for key defaults.
    current: Option<(String, String)>,
}

impl<'d> GraphBuilder<'d> {
    pub(crate) fn new(defs: &'d Map<String, Value>, builtin: bool) -> Self {
        GraphBuilder {
            nodes: vec![Node::Any { atomic: false }, Node::Any { atomic: true }, Node::Scalar],
            named: std::collections::HashMap::new(),
            defs,
            builtin,
            current: None,
        }
    }

    pub(crate) fn finish(self) -> Arc<Vec<Node>> {
        Arc::new(self.nodes)
    }

    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The node of a named definition, built on first use (recursion-safe).
    pub(crate) fn named(&mut self, name: &str) -> NodeId {
        if let Some(&id) = self.named.get(name) {
            return id;
        }
        let id = self.push(Node::Any { atomic: true });
        self.named.insert(name.to_string(), id);
        let Some(schema) = self.defs.get(name) else { return id };
        let mut node = self.convert_node(schema, Some(name));
        if let Node::Object(object) = &mut node
            && self.builtin
        {
            for (key, value) in extensions_for(name, "") {
                if key == "x-kubernetes-map-type" {
                    object.atomic = value == "atomic";
                }
            }
        }
        self.nodes[id] = node;
        id
    }

    /// The node of an inline schema.
    pub(crate) fn convert(&mut self, schema: &Value) -> NodeId {
        if let Some(name) = ref_name(schema) {
            let id = self.named(&name);
            return self.override_map_type(id, schema);
        }
        match self.convert_node(schema, None) {
            Node::Scalar => SCALAR,
            Node::Any { atomic: false } => ANY_GRANULAR,
            Node::Any { atomic: true } => ANY_ATOMIC,
            node => self.push(node),
        }
    }

    /// A field-level `x-kubernetes-map-type` on a `$ref` (e.g. `PersistentVolumeSpec.claimRef`
    /// is granular although `ObjectReference` is atomic) gets its own copy of the node.
    fn override_map_type(&mut self, id: NodeId, schema: &Value) -> NodeId {
        let Some(map_type) = schema.get("x-kubernetes-map-type").and_then(Value::as_str) else { return id };
        let atomic = map_type == "atomic";
        match self.nodes.get(id) {
            Some(Node::Object(object)) if object.atomic != atomic => {
                let mut copy = object.clone();
                copy.atomic = atomic;
                self.push(Node::Object(copy))
            }
            _ => id,
        }
    }

    fn convert_node(&mut self, schema: &Value, definition: Option<&str>) -> Node {
        let Some(map) = schema.as_object() else { return Node::Any { atomic: true } };
        if let Some(name) = ref_name(schema) {
            let id = self.named(&name);
            return self.nodes.get(id).cloned().unwrap_or(Node::Any { atomic: true });
        }
        let preserve = flag(map, "x-kubernetes-preserve-unknown-fields");
        let embedded = flag(map, "x-kubernetes-embedded-resource");
        if flag(map, "x-kubernetes-int-or-string") {
            return Node::Scalar;
        }
        let ty = map.get("type").and_then(Value::as_str);
        let node = match ty {
            Some("string" | "integer" | "number" | "boolean") => Node::Scalar,
            Some("array") => self.convert_list(map),
            Some("object") | None if map.contains_key("properties") || has_schema(map, "additionalProperties") => {
                self.convert_object(map, definition, preserve)
            }
            // A CRD's own `type: object` without properties is an empty struct; a built-in
            // definition reached from it (FieldsV1 inside ObjectMeta) stays free-form.
            Some("object") if !preserve && !self.builtin && definition.is_none() => Node::Object(ObjectNode {
                atomic: map.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic"),
                ..ObjectNode::default()
            }),
            Some("object") => Node::Any { atomic: false },
            None if preserve => Node::Any { atomic: false },
            _ => Node::Any { atomic: true },
        };
        if embedded { self.embed(node) } else { node }
    }

    fn convert_object(&mut self, map: &Map<String, Value>, definition: Option<&str>, preserve: bool) -> Node {
        let mut object = ObjectNode {
            atomic: map.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic"),
            ..ObjectNode::default()
        };
        if let Some(Value::Object(properties)) = map.get("properties") {
            for (name, property) in properties {
                let decorated;
                let property = match (self.builtin, definition) {
                    (true, Some(def)) => {
                        decorated = decorate(property, def, name);
                        &decorated
                    }
                    _ => property,
                };
                let mut field = self.convert_field(property, definition, name);
                field.required = map
                    .get("required")
                    .and_then(Value::as_array)
                    .is_some_and(|required| required.iter().any(|r| r.as_str() == Some(name)));
                object.fields.insert(name.clone(), field);
            }
        }
        match map.get("additionalProperties") {
            Some(additional @ Value::Object(_)) => object.additional = Some(self.convert(additional)),
            Some(Value::Bool(true)) => object.additional = Some(ANY_GRANULAR),
            _ => {}
        }
        if preserve && object.additional.is_none() {
            object.additional = Some(ANY_GRANULAR);
        }
        Node::Object(object)
    }

    fn convert_field(&mut self, property: &Value, definition: Option<&str>, name: &str) -> Field {
        let outer = self.current.take();
        self.current = definition.map(|def| (def.to_string(), name.to_string()));
        let node = self.convert(property);
        self.current = outer;
        let patch = property
            .get("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
            .map(PatchStrategy::parse)
            .unwrap_or_default();
        let merge_key = property.get("x-kubernetes-patch-merge-key").and_then(Value::as_str).map(String::from);
        let zero_present = self.builtin && definition.is_some_and(|def| builtin::zero_present(def, name));
        Field { node, patch, merge_key, zero_present, required: false }
    }

    fn convert_list(&mut self, map: &Map<String, Value>) -> Node {
        let items_schema = map.get("items").cloned().unwrap_or(Value::Null);
        let items = if items_schema.is_object() { self.convert(&items_schema) } else { ANY_GRANULAR };
        let list_type = match map.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => ListType::Map(self.list_keys(map, &items_schema)),
            Some(_) => ListType::Atomic,
            None => fallback_list_type(map),
        };
        Node::List(ListNode { items, list_type })
    }

    /// Keys of a `map` list, with defaults from the element schema's properties. A built-in key
    /// field without a schema default takes the zero value of its type, except where Kapal's
    /// tables say otherwise (`protocol` defaults to `TCP`; `ServiceAccount.secrets[].name` has
    /// no default).
    fn list_keys(&self, map: &Map<String, Value>, items: &Value) -> Vec<ListKey> {
        let names: Vec<String> = map
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|keys| keys.iter().filter_map(Value::as_str).map(String::from).collect())
            .unwrap_or_default();
        let element = match ref_name(items) {
            Some(name) => self.defs.get(&name).unwrap_or(items),
            None => items,
        };
        names
            .into_iter()
            .map(|name| {
                let property = element.get("properties").and_then(|p| p.get(&name));
                let mut default = property.and_then(|p| p.get("default")).cloned();
                if default.is_none()
                    && self.builtin
                    && let Some((def, field)) = &self.current
                {
                    default = match builtin::key_default(def, field, &name) {
                        Some(explicit) => explicit,
                        None => match property.and_then(|p| p.get("type")).and_then(Value::as_str) {
                            Some("string") => Some(Value::String(String::new())),
                            Some("integer" | "number") => Some(Value::from(0)),
                            _ => None,
                        },
                    };
                }
                ListKey { name, default }
            })
            .collect()
    }

    /// An embedded resource (or a custom resource's root) always has `apiVersion`, `kind` and
    /// an ObjectMeta `metadata`.
    pub(crate) fn embed(&mut self, node: Node) -> Node {
        let mut object = match node {
            Node::Object(object) => object,
            Node::Any { .. } => ObjectNode { additional: Some(ANY_GRANULAR), ..ObjectNode::default() },
            other => return other,
        };
        let meta = self.named(OBJECT_META);
        for name in ["apiVersion", "kind"] {
            object.fields.entry(name.to_string()).or_insert(Field {
                node: SCALAR,
                patch: PatchStrategy::default(),
                merge_key: None,
                zero_present: false,
                required: false,
            });
        }
        object.fields.insert(
            "metadata".into(),
            Field {
                node: meta,
                patch: PatchStrategy::default(),
                merge_key: None,
                zero_present: false,
                required: false,
            },
        );
        Node::Object(object)
    }
}

/// A property schema with Kapal's merge metadata for `definition.field` added.
fn decorate(property: &Value, definition: &str, field: &str) -> Value {
    let extensions = extensions_for(definition, field);
    if extensions.is_empty() {
        return property.clone();
    }
    let mut property = property.clone();
    if let Value::Object(map) = &mut property {
        for (key, value) in extensions {
            map.insert(key.to_string(), value);
        }
    }
    property
}

fn flag(map: &Map<String, Value>, key: &str) -> bool {
    map.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn has_schema(map: &Map<String, Value>, key: &str) -> bool {
    matches!(map.get(key), Some(Value::Object(_)) | Some(Value::Bool(true)))
}

/// The definition name of a `$ref` (possibly wrapped in a one-element `allOf`).
fn ref_name(schema: &Value) -> Option<String> {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return Some(name.replace("~1", "/").replace("~0", "~"));
    }
    match schema.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
        Some([only]) => ref_name(only),
        _ => None,
    }
}

/// kube-openapi's rule for lists without `x-kubernetes-list-type`: the patch strategy decides.
fn fallback_list_type(map: &Map<String, Value>) -> ListType {
    let Some(strategy) = map.get("x-kubernetes-patch-strategy").and_then(Value::as_str) else {
        return ListType::Atomic;
    };
    let strategy = PatchStrategy::parse(strategy);
    if !strategy.merge {
        return ListType::Atomic;
    }
    match map.get("x-kubernetes-patch-merge-key").and_then(Value::as_str) {
        Some(key) => ListType::Map(vec![ListKey { name: key.to_string(), default: None }]),
        None => ListType::Set,
    }
}

/// The type graph of a custom resource from its CRD version's `openAPIV3Schema`. The root
/// always accepts `apiVersion`, `kind` and an ObjectMeta `metadata`; so does every
/// `x-kubernetes-embedded-resource`.
pub fn from_openapi_v3(schema: &Value) -> Arc<TypeSchema> {
    let defs = builtin::definitions();
    let mut builder = GraphBuilder::new(defs, false);
    let node = builder.convert_node(schema, None);
    let node = builder.embed(node);
    let root = builder.push(node);
    Arc::new(TypeSchema { nodes: builder.finish(), root })
}

/// A schema that accepts anything: objects merge key by key and lists are replaced.
pub fn untyped() -> Arc<TypeSchema> {
    let builder = GraphBuilder::new(builtin::definitions(), false);
    Arc::new(TypeSchema { nodes: builder.finish(), root: ANY_GRANULAR })
}

impl TypeSchema {
    pub(crate) fn from_parts(nodes: Arc<Vec<Node>>, root: NodeId) -> Self {
        TypeSchema { nodes, root }
    }
}

/// The fields of `obj` its schema does not know, as kube-apiserver's strict decoding names
/// them in `unknown field "…"`: dotted, list indexes in brackets, no leading dot
/// (`spec.template.spec.containers[0].imagee`). Untyped subtrees (preserve-unknown-fields,
/// RawExtension) and map keys are never unknown. The order is the object's.
pub fn unknown_fields(schema: &TypeSchema, obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut path = String::new();
    walk_unknown(schema, schema.root(), obj, &mut path, &mut out, 0);
    out
}

const MAX_DEPTH: usize = 128;

fn walk_unknown(
    schema: &TypeSchema,
    id: NodeId,
    value: &Value,
    path: &mut String,
    out: &mut Vec<String>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    match (schema.node(id), value) {
        (Node::Object(_), Value::Object(map)) => {
            for (key, child) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                match schema.child(id, key) {
                    Some(child_id) => walk_unknown(schema, child_id, child, path, out, depth + 1),
                    None => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        (Node::List(list), Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{index}]"));
                walk_unknown(schema, list.items, item, path, out, depth + 1);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Removes every field the schema does not know (CRD pruning). Untyped subtrees are kept as
/// they are.
pub fn prune(schema: &TypeSchema, obj: &mut Value) {
    prune_at(schema, schema.root(), obj, 0);
}

fn prune_at(schema: &TypeSchema, id: NodeId, value: &mut Value, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match (schema.node(id), value) {
        (Node::Object(_), Value::Object(map)) => {
            map.retain(|key, _| schema.child(id, key).is_some());
            for (key, child) in map.iter_mut() {
                if let Some(child_id) = schema.child(id, key) {
                    prune_at(schema, child_id, child, depth + 1);
                }
            }
        }
        (Node::List(list), Value::Array(items)) => {
            for item in items {
                prune_at(schema, list.items, item, depth + 1);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
