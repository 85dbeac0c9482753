//! The REST operations of a resource, independent of the OpenAPI version they are written in.

use crate::registry::{ResourceInfo, Subresource};

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum In {
    Path,
    Query,
}

/// One parameter of an operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Param {
    pub name: &'static str,
    pub location: In,
    /// JSON type: `string`, `integer` or `boolean`.
    pub ty: &'static str,
    pub description: &'static str,
}

const fn query(name: &'static str, ty: &'static str, description: &'static str) -> Param {
    Param { name, location: In::Query, ty, description }
}

const NAMESPACE: Param = Param {
    name: "namespace",
    location: In::Path,
    ty: "string",
    description: "object name and auth scope, such as for teams and projects",
};
const NAME: Param = Param { name: "name", location: In::Path, ty: "string", description: "name of the object" };
const PRETTY: Param = query("pretty", "string", "If 'true', the output is indented for reading.");

const LIST: &[Param] = &[
    query("allowWatchBookmarks", "boolean", "Ask for BOOKMARK events in a watch. Servers may ignore the request."),
    query("continue", "string", "The continue token returned by the previous page of a paginated list."),
    query("fieldSelector", "string", "Only return objects whose fields match this selector. Defaults to everything."),
    query("labelSelector", "string", "Only return objects whose labels match this selector. Defaults to everything."),
    query("limit", "integer", "The most objects to return in one response; the rest are reached with `continue`."),
    query(
        "resourceVersion",
        "string",
        "Which version of the collection to serve; see the API concepts for its semantics.",
    ),
    query("resourceVersionMatch", "string", "How `resourceVersion` is applied: `Exact` or `NotOlderThan`."),
    query(
        "sendInitialEvents",
        "boolean",
        "Start a watch with synthetic ADDED events for the current state, ended by a bookmark.",
    ),
    query("timeoutSeconds", "integer", "Limit the duration of the call, whatever its activity."),
    query("watch", "boolean", "Watch for changes and stream them as add, update and remove events."),
];

const DRY_RUN: Param = query("dryRun", "string", "When present (`All`), the change is checked but not persisted.");
const FIELD_MANAGER: Param =
    query("fieldManager", "string", "The name of the actor making the change, recorded in managedFields.");
const FIELD_VALIDATION: Param = query(
    "fieldValidation",
    "string",
    "What to do with unknown or duplicate fields in the request body: `Ignore`, `Warn` or `Strict`.",
);
const FORCE: Param =
    query("force", "boolean", "Take over fields owned by other managers in an apply request; only valid for apply.");

const WRITE: &[Param] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];

const DELETE: &[Param] = &[
    DRY_RUN,
    query("gracePeriodSeconds", "integer", "Seconds the object has to terminate; zero deletes at once."),
    query("orphanDependents", "boolean", "Deprecated: use propagationPolicy. Whether dependents are orphaned."),
    query("propagationPolicy", "string", "How dependents are collected: `Orphan`, `Background` or `Foreground`."),
];

/// An HTTP method of a path item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Put,
    Post,
    Delete,
    Patch,
}

impl Method {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Put => "put",
            Method::Post => "post",
            Method::Delete => "delete",
            Method::Patch => "patch",
        }
    }
}

/// What an operation accepts as its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// A whole object of this definition.
    Object(String),
    /// A patch; `strategic` when the schema carries the merge metadata that
    /// strategic merge patch needs.
    Patch { strategic: bool },
    /// Optional `DeleteOptions`.
    Delete,
}

/// One response of an operation.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub code: &'static str,
    pub description: &'static str,
    /// The definition returned, if any.
    pub schema: Option<String>,
}

/// One operation on one path.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    pub method: Method,
    /// `x-kubernetes-action`.
    pub action: &'static str,
    pub id: String,
    pub tag: String,
    pub description: String,
    /// `x-kubernetes-group-version-kind`: group, version, kind.
    pub gvk: (String, String, String),
    pub params: Vec<Param>,
    pub body: Option<Body>,
    pub responses: Vec<Response>,
}

impl Operation {
    /// Whether responses may be a watch stream.
    pub(crate) fn watches(&self) -> bool {
        self.action == "list" || self.action == "watch"
    }
}

/// Definition names a resource's operations refer to.
pub(crate) struct Schemas<'a> {
    pub kind: &'a str,
    pub list: &'a str,
    /// Whether the kind's schema carries merge metadata.
    pub strategic: bool,
}

/// A subresource that gets operations, with the definition name of its kind.
pub(crate) struct Sub<'a> {
    pub info: &'a Subresource,
    pub schema: String,
    pub strategic: bool,
}

/// Everything the operations of one resource need to know about it.
struct Ctx<'a> {
    r: &'a ResourceInfo,
    /// `CoreV1`, `AppsV1`: the group-version part of operation ids.
    gv_id: String,
    tag: String,
}

impl Ctx<'_> {
    fn has(&self, verb: &str) -> bool {
        self.r.verbs.iter().any(|v| v == verb)
    }

    fn namespaced_word(&self) -> &'static str {
        if self.r.namespaced() { "Namespaced" } else { "" }
    }

    fn scope(&self, item: bool) -> Vec<Param> {
        let mut params = Vec::new();
        if item {
            params.push(NAME);
        }
        if self.r.namespaced() {
            params.push(NAMESPACE);
        }
        params.push(PRETTY);
        params
    }

    fn gvk(&self) -> (String, String, String) {
        (self.r.group.clone(), self.r.version.clone(), self.r.kind.clone())
    }

    fn op(&self, method: Method, action: &'static str, id: String, description: String) -> Operation {
        Operation {
            method,
            action,
            id,
            tag: self.tag.clone(),
            description,
            gvk: self.gvk(),
            params: Vec::new(),
            body: None,
            responses: Vec::new(),
        }
    }
}

fn ok(schema: &str) -> Response {
    Response { code: "200", description: "OK", schema: Some(schema.to_string()) }
}

fn created(schema: &str) -> Response {
    Response { code: "201", description: "Created", schema: Some(schema.to_string()) }
}

fn accepted(schema: &str) -> Response {
    Response { code: "202", description: "Accepted", schema: Some(schema.to_string()) }
}

fn unauthorized() -> Response {
    Response { code: "401", description: "Unauthorized", schema: None }
}

/// `networking.k8s.io` → `Networking`, `rbac.authorization.k8s.io` → `RbacAuthorization`,
/// core → `Core`: how upstream names groups in operation ids.
fn group_id(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    let group = group.strip_suffix(".k8s.io").unwrap_or(group);
    group.split(['.', '-']).map(capitalize).collect()
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `core_v1`, `apps_v1`, `networking_v1`: the tag grouping a group-version's operations.
fn tag(group: &str, version: &str) -> String {
    let id = group_id(group);
    let mut chars = id.chars();
    let lowered: String = match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    };
    format!("{lowered}_{version}")
}

/// The URL prefix of a group-version: `/api/v1` or `/apis/<group>/<version>`.
pub(crate) fn prefix(group: &str, version: &str) -> String {
    if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") }
}

/// The paths of one resource and their operations, for the verbs the resource supports.
pub(crate) fn resource_paths(r: &ResourceInfo, schemas: &Schemas, subs: &[Sub]) -> Vec<(String, Vec<Operation>)> {
    let ctx =
        Ctx { r, gv_id: format!("{}{}", group_id(&r.group), capitalize(&r.version)), tag: tag(&r.group, &r.version) };
    let prefix = prefix(&r.group, &r.version);
    let collection = if r.namespaced() {
        format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{prefix}/{}", r.plural)
    };
    let item = format!("{collection}/{{name}}");

    let mut paths = vec![(collection, collection_ops(&ctx, schemas)), (item.clone(), item_ops(&ctx, schemas))];
    if r.namespaced() && ctx.has("list") {
        paths.push((format!("{prefix}/{}", r.plural), vec![all_namespaces_list(&ctx, schemas)]));
    }
    for sub in subs {
        paths.push((format!("{item}/{}", sub.info.name), subresource_ops(&ctx, sub)));
    }
    paths.retain(|(_, ops)| !ops.is_empty());
    paths
}

fn collection_ops(ctx: &Ctx, schemas: &Schemas) -> Vec<Operation> {
    let (gv, ns, kind) = (&ctx.gv_id, ctx.namespaced_word(), &ctx.r.kind);
    let mut ops = Vec::new();
    if ctx.has("list") {
        let mut op =
            ctx.op(Method::Get, "list", format!("list{gv}{ns}{kind}"), format!("list or watch objects of kind {kind}"));
        op.params = [ctx.scope(false), LIST.to_vec()].concat();
        op.responses = vec![ok(schemas.list), unauthorized()];
        ops.push(op);
    }
    if ctx.has("create") {
        let mut op = ctx.op(Method::Post, "post", format!("create{gv}{ns}{kind}"), format!("create a {kind}"));
        op.params = [ctx.scope(false), WRITE.to_vec()].concat();
        op.body = Some(Body::Object(schemas.kind.to_string()));
        op.responses = vec![ok(schemas.kind), created(schemas.kind), accepted(schemas.kind), unauthorized()];
        ops.push(op);
    }
    if ctx.has("deletecollection") {
        let id = format!("delete{gv}Collection{ns}{kind}");
        let mut op = ctx.op(Method::Delete, "deletecollection", id, format!("delete a collection of {kind}"));
        op.params = [ctx.scope(false), DELETE.to_vec(), LIST.to_vec()].concat();
        op.body = Some(Body::Delete);
        op.responses = vec![ok(super::catalog::STATUS), unauthorized()];
        ops.push(op);
    }
    ops
}

fn item_ops(ctx: &Ctx, schemas: &Schemas) -> Vec<Operation> {
    let (gv, ns, kind) = (&ctx.gv_id, ctx.namespaced_word(), &ctx.r.kind);
    let mut ops = Vec::new();
    if ctx.has("get") {
        let mut op = ctx.op(Method::Get, "get", format!("read{gv}{ns}{kind}"), format!("read the specified {kind}"));
        op.params = ctx.scope(true);
        op.responses = vec![ok(schemas.kind), unauthorized()];
        ops.push(op);
    }
    if ctx.has("update") {
        let mut op =
            ctx.op(Method::Put, "put", format!("replace{gv}{ns}{kind}"), format!("replace the specified {kind}"));
        op.params = [ctx.scope(true), WRITE.to_vec()].concat();
        op.body = Some(Body::Object(schemas.kind.to_string()));
        op.responses = vec![ok(schemas.kind), created(schemas.kind), unauthorized()];
        ops.push(op);
    }
    if ctx.has("delete") {
        let mut op = ctx.op(Method::Delete, "delete", format!("delete{gv}{ns}{kind}"), format!("delete a {kind}"));
        op.params = [ctx.scope(true), DELETE.to_vec()].concat();
        op.body = Some(Body::Delete);
        op.responses = vec![ok(schemas.kind), accepted(schemas.kind), unauthorized()];
        ops.push(op);
    }
    if ctx.has("patch") {
        let mut op = ctx.op(
            Method::Patch,
            "patch",
            format!("patch{gv}{ns}{kind}"),
            format!("partially update the specified {kind}"),
        );
        op.params = [ctx.scope(true), WRITE.to_vec(), vec![FORCE]].concat();
        op.body = Some(Body::Patch { strategic: schemas.strategic });
        op.responses = vec![ok(schemas.kind), created(schemas.kind), unauthorized()];
        ops.push(op);
    }
    ops
}

fn all_namespaces_list(ctx: &Ctx, schemas: &Schemas) -> Operation {
    let (gv, kind) = (&ctx.gv_id, &ctx.r.kind);
    let id = format!("list{gv}{kind}ForAllNamespaces");
    let mut op = ctx.op(Method::Get, "list", id, format!("list or watch objects of kind {kind} in all namespaces"));
    op.params = [vec![PRETTY], LIST.to_vec()].concat();
    op.responses = vec![ok(schemas.list), unauthorized()];
    op
}

/// Operations of a subresource whose body and result are an object (`status`, `scale`,
/// `ephemeralcontainers`, `binding`, `eviction`, …), one per verb it supports.
fn subresource_ops(ctx: &Ctx, sub: &Sub) -> Vec<Operation> {
    let (gv, ns, kind) = (&ctx.gv_id, ctx.namespaced_word(), &ctx.r.kind);
    let name = &sub.info.name;
    let suffix = capitalize(name);
    let schema = sub.schema.as_str();
    let gvk = (sub.info.kind.group.clone(), sub.info.kind.version.clone(), sub.info.kind.kind.clone());
    let mut ops = Vec::new();
    for verb in ["get", "update", "create", "patch"] {
        if !sub.info.verbs.iter().any(|v| v == verb) {
            continue;
        }
        let mut op = match verb {
            "get" => {
                let mut op = ctx.op(
                    Method::Get,
                    "get",
                    format!("read{gv}{ns}{kind}{suffix}"),
                    format!("read {name} of the specified {kind}"),
                );
                op.params = ctx.scope(true);
                op.responses = vec![ok(schema), unauthorized()];
                op
            }
            "update" => {
                let id = format!("replace{gv}{ns}{kind}{suffix}");
                let mut op = ctx.op(Method::Put, "put", id, format!("replace {name} of the specified {kind}"));
                op.params = [ctx.scope(true), WRITE.to_vec()].concat();
                op.body = Some(Body::Object(schema.to_string()));
                op.responses = vec![ok(schema), created(schema), unauthorized()];
                op
            }
            "create" => {
                let id = format!("create{gv}{ns}{kind}{suffix}");
                let mut op = ctx.op(Method::Post, "post", id, format!("create {name} of a {kind}"));
                op.params = [ctx.scope(true), WRITE.to_vec()].concat();
                op.body = Some(Body::Object(schema.to_string()));
                op.responses = vec![ok(schema), created(schema), accepted(schema), unauthorized()];
                op
            }
            _ => {
                let id = format!("patch{gv}{ns}{kind}{suffix}");
                let mut op =
                    ctx.op(Method::Patch, "patch", id, format!("partially update {name} of the specified {kind}"));
                op.params = [ctx.scope(true), WRITE.to_vec(), vec![FORCE]].concat();
                op.body = Some(Body::Patch { strategic: sub.strategic });
                op.responses = vec![ok(schema), created(schema), unauthorized()];
                op
            }
        };
        op.gvk = gvk.clone();
        ops.push(op);
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_name_groups_like_upstream() {
        assert_eq!(group_id(""), "Core");
        assert_eq!(group_id("apps"), "Apps");
        assert_eq!(group_id("rbac.authorization.k8s.io"), "RbacAuthorization");
        assert_eq!(group_id("stable.example.com"), "StableExampleCom");
        assert_eq!(tag("networking.k8s.io", "v1"), "networking_v1");
        assert_eq!(tag("", "v1"), "core_v1");
    }
}
