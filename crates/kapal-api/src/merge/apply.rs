//! Server-side apply and managed-fields tracking, as kube-apiserver's field manager does them
//! (apimachinery `managedfields` over structured-merge-diff).
//!
//! [`apply`] merges an applied configuration into the live object, prunes what the manager
//! applied before but no longer does, and fails with [`ApplyError::Conflicts`] when another
//! manager owns a field whose value would change (unless forced). [`track_update`] records
//! what a create, update or non-apply patch changed under an `Update` entry of its manager.
//! Both maintain `metadata.managedFields` like upstream: `before-first-apply`, at most ten
//! `Update` entries (older ones merged into `ancient-changes`), entry order and timestamps,
//! and kubectl's last-applied-configuration upgrade path.

use serde_json::{Map, Value};

use super::fieldpath::{FieldSet, Path, PathElement, path_string, values_equal};
use super::managed::{self, Entry, Managers, Operation, cap_updates, go_json};
use super::typed::{Comparison, Typed};
use crate::schema::TypeSchema;
use crate::status::{ApiError, Cause};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The manager whose applies upgrade from client-side apply.
const LAST_APPLIED_MANAGER: &str = "kubectl";
const BEFORE_FIRST_APPLY: &str = "before-first-apply";
const CURRENT_OPERATION: &str = "\u{0}current-operation";
const ANNOTATIONS_SIZE_LIMIT: usize = 256 * 1024;

/// One field another manager owns and an apply would change.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The owner as upstream prints it: `"kubectl"` for an applier,
    /// `"kube-controller-manager" using apps/v1` for an updater, with
    /// ` with subresource "status"` when it wrote through a subresource.
    pub manager: String,
    /// The field, readable: `.spec.template.spec.containers[name="web"].image`.
    pub field: String,
    identity: String,
    path: Path,
}

/// Why an apply failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    /// Other managers own fields the apply would change; answered with 409 and one
    /// `FieldManagerConflict` cause per field.
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The applied configuration sets `metadata.managedFields` (400).
    #[error("metadata.managedFields must be nil")]
    ManagedFieldsSet,
    /// The applied configuration does not fit the schema: unknown fields, list elements
    /// without their keys, duplicate keys (500, as upstream).
    #[error("{0}")]
    Invalid(String),
    /// The applied configuration is not an object (400).
    #[error("{0}")]
    BadRequest(String),
}

impl ApplyError {
    /// The `metav1.Status` upstream answers with.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            ApplyError::Conflicts(conflicts) => {
                let mut error = ApiError::new(409, "Conflict", self.to_string());
                error.causes = conflicts
                    .iter()
                    .map(|c| {
                        Cause::new("FieldManagerConflict", c.field.clone(), format!("conflict with {}", c.manager))
                    })
                    .collect();
                error
            }
            ApplyError::ManagedFieldsSet | ApplyError::BadRequest(_) => ApiError::bad_request(self.to_string()),
            ApplyError::Invalid(message) => ApiError::new(500, "", message.clone()),
        }
    }
}

/// `Apply failed with 1 conflict: conflict with "x": .a`, or one block per manager (sorted
/// by identity) for several.
fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!("Apply failed with 1 conflict: conflict with {}: {}", only.manager, only.field);
    }
    let mut identities: Vec<&str> = conflicts.iter().map(|c| c.identity.as_str()).collect();
    identities.sort();
    identities.dedup();
    let mut lines = Vec::new();
    for identity in identities {
        let mine: Vec<&Conflict> = conflicts.iter().filter(|c| c.identity == identity).collect();
        if let Some(first) = mine.first() {
            lines.push(format!("conflicts with {}:", first.manager));
        }
        lines.extend(mine.iter().map(|c| format!("- {}", c.field)));
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
}

/// Where a write happens, beyond the object itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteScope<'a> {
    /// The subresource written through (`status`, `scale`), recorded in the entry.
    pub subresource: Option<&'a str>,
    /// Fields this endpoint does not let the request change (`status` on the main resource
    /// of a kind with a status subresource, `spec` on `/status`, …), as dotted paths. Nobody
    /// gains or loses ownership of them through this write.
    pub reset_fields: &'a [&'a str],
}

/// Server-side apply of `applied` by `manager` to the main resource; see [`apply_with`].
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    schema: &TypeSchema,
    now: &str,
) -> Result<Value, ApplyError> {
    apply_with(live, applied, manager, force, schema, now, &WriteScope::default())
}

/// Server-side apply: returns the new object (with its `metadata.managedFields`), or the
/// reason it cannot be written. `live` is `None` when the apply creates the object; `now` is
/// the RFC 3339 time recorded for the manager when the object changes. Defaulting and
/// validation of the result are the caller's.
pub fn apply_with(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    schema: &TypeSchema,
    now: &str,
    scope: &WriteScope,
) -> Result<Value, ApplyError> {
    if !applied.is_object() {
        return Err(ApplyError::BadRequest("apply patch must be a JSON or YAML object".into()));
    }
    if applied.pointer("/metadata/managedFields").is_some_and(|v| !v.is_null()) {
        return Err(ApplyError::ManagedFieldsSet);
    }
    let tracker = Tracker::new(schema, applied.get("apiVersion").or_else(|| live?.get("apiVersion")), scope, now);
    let errors = tracker.typed.validate(applied);
    if !errors.is_empty() {
        return Err(ApplyError::Invalid(format!(
            "failed to create typed patch object ({}): {}",
            object_label(applied),
            join_errors(&errors)
        )));
    }
    let (live_object, managers) = match live {
        Some(live) => {
            (without_managed_fields(live), managed::decode(live.pointer("/metadata/managedFields")).unwrap_or_default())
        }
        None => (schema.zero_object(), Managers::new()),
    };
    // Compare and merge as upstream's typed objects, which always hold their empty structs.
    let mut live_object = live_object;
    schema.fill_zero(&mut live_object);
    let result = match tracker.apply_once(&live_object, managers.clone(), applied, manager, force) {
        Err(ApplyError::Conflicts(conflicts)) if manager == LAST_APPLIED_MANAGER => {
            match tracker.allowed_by_last_applied(&live_object) {
                None => Err(ApplyError::Conflicts(conflicts)),
                Some(allowed) => {
                    let remaining: Vec<Conflict> = conflicts.into_iter().filter(|c| !allowed.has(&c.path)).collect();
                    if remaining.is_empty() {
                        tracker.apply_once(&live_object, managers, applied, manager, true)
                    } else {
                        Err(ApplyError::Conflicts(remaining))
                    }
                }
            }
        }
        other => other,
    };
    let mut object = result?;
    if let Some(live) = live
        && values_equal(&without_managed_fields(&object), &live_object)
    {
        // A no-op keeps the stored object as it was (only managed fields may change).
        let managed_fields = object.pointer("/metadata/managedFields").cloned();
        object = without_managed_fields(live);
        if let (Some(fields), Some(Value::Object(meta))) = (managed_fields, object.get_mut("metadata")) {
            meta.insert("managedFields".into(), fields);
        }
    }
    if manager == LAST_APPLIED_MANAGER && has_last_applied(&object) {
        set_last_applied(&mut object, applied);
    }
    Ok(object)
}

/// Records the fields a create, update or non-apply patch changed from `old` to `new` under
/// `manager`'s `Update` entry in `new`'s `metadata.managedFields`, taking them from other
/// managers; fields it removed are removed from every manager. `old` is `None` for a create.
///
/// As upstream: managedFields written in `new` replace the stored ones (`[]` clears them,
/// and an object whose managedFields are empty is not tracked again until it is applied to);
/// on a subresource the stored ones are always used.
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    operation_subresource: Option<&str>,
    schema: &TypeSchema,
    now: &str,
) {
    track_update_with(
        old,
        new,
        manager,
        schema,
        now,
        &WriteScope { subresource: operation_subresource, reset_fields: &[] },
    );
}

/// [`track_update`] with the endpoint's reset fields.
pub fn track_update_with(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    schema: &TypeSchema,
    now: &str,
    scope: &WriteScope,
) {
    if !new.is_object() {
        return;
    }
    let stored = || managed::decode(old.and_then(|o| o.pointer("/metadata/managedFields"))).unwrap_or_default();
    let written = new.pointer("/metadata/managedFields");
    let mut managers = if scope.subresource.is_some() {
        stored()
    } else if managed::is_reset(written) {
        Managers::new()
    } else {
        match managed::decode(written) {
            Ok(managers) if !managers.is_empty() => managers,
            _ => stored(),
        }
    };
    remove_managed_fields(new);
    let is_create =
        old.is_none_or(|o| o.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().is_empty());
    if managers.is_empty() && !is_create {
        return;
    }
    let mut old_object = match old {
        Some(old) => without_managed_fields(old),
        None => schema.zero_object(),
    };
    // Compare as upstream's typed objects, which always hold their empty structs.
    schema.fill_zero(&mut old_object);
    let mut new_object = new.clone();
    schema.fill_zero(&mut new_object);
    let tracker = Tracker::new(schema, new.get("apiVersion"), scope, now);
    tracker.update(&old_object, &new_object, &mut managers, manager);
    cap_updates(&mut managers);
    set_managed_fields(new, &managers);
}

/// One request's view: schema, endpoint version, subresource, reset fields and time.
struct Tracker<'s> {
    typed: Typed<'s>,
    api_version: String,
    subresource: String,
    ignored: FieldSet,
    now: String,
}

impl<'s> Tracker<'s> {
    fn new(schema: &'s TypeSchema, api_version: Option<&Value>, scope: &WriteScope, now: &str) -> Self {
        let mut ignored = FieldSet::new();
        for field in scope.reset_fields {
            let path: Path = field.split('.').filter(|s| !s.is_empty()).map(|s| PathElement::Field(s.into())).collect();
            ignored.insert(&path);
        }
        Tracker {
            typed: Typed::new(schema),
            api_version: api_version.and_then(Value::as_str).unwrap_or_default().to_string(),
            subresource: scope.subresource.unwrap_or_default().to_string(),
            ignored,
            now: now.to_string(),
        }
    }

    /// One apply attempt (the last-applied upgrade may make a second, forced one).
    fn apply_once(
        &self,
        live: &Value,
        mut managers: Managers,
        config: &Value,
        manager: &str,
        force: bool,
    ) -> Result<Value, ApplyError> {
        if managers.is_empty() {
            // Fields that exist before anyone applied belong to someone: a synthetic updater.
            self.update(&self.typed.schema.zero_object(), live, &mut managers, BEFORE_FIRST_APPLY);
            cap_updates(&mut managers);
        }
        let id = managed::identity(manager, Operation::Apply, "", &self.subresource);
        let mut merged = self.typed.merge(live, config);
        let last_set = managers.get(&id).map(|e| e.set.clone()).unwrap_or_default();
        let entry = managers
            .entry(id.clone())
            .or_insert_with(|| Entry::new(manager, Operation::Apply, &self.api_version, &self.subresource));
        entry.set = self.typed.field_set(config).recursive_difference(&self.ignored);
        entry.api_version = self.api_version.clone();
        merged = self.prune(merged, &managers, &last_set);
        self.typed.strip_nulls(&mut merged);
        self.typed.schema.fill_zero(&mut merged);
        self.resolve(live, &merged, &mut managers, &id, force)?;
        let changed = !values_equal(live, &merged);
        if let Some(entry) = managers.get_mut(&id) {
            entry.set = entry.set.difference(&strip_set());
            if changed {
                entry.time = Some(self.now.clone());
            }
        }
        managers.retain(|_, e| !e.set.is_empty());
        cap_updates(&mut managers);
        let mut object = if changed { merged } else { live.clone() };
        set_managed_fields(&mut object, &managers);
        Ok(object)
    }

    /// Removes what the applier owned before and no longer applies, unless someone (the
    /// applier included) still owns it; fields nobody owned stay.
    fn prune(&self, merged: Value, managers: &Managers, last_set: &FieldSet) -> Value {
        if last_set.is_empty() {
            return merged;
        }
        let typed = &self.typed;
        let pruned = typed.remove(&merged, &typed.with_named_fields(last_set));
        let owned = managers.values().fold(FieldSet::new(), |all, e| all.union(&e.set));
        let merged_set = typed.with_named_fields(&typed.field_set(&merged));
        let pruned_set = typed.with_named_fields(&typed.field_set(&pruned));
        let keep = pruned_set.union(&typed.with_named_fields(&owned));
        let pruned = typed.remove(&merged, &merged_set.difference(&keep));
        let pruned_set = typed.with_named_fields(&typed.field_set(&pruned));
        let dangling = merged_set.difference(&pruned_set).intersection(&typed.with_named_fields(last_set));
        typed.remove(&merged, &dangling)
    }

    /// Moves changed fields away from other managers (failing on conflicts unless forced) and
    /// forgets removed fields; drops managers left with nothing.
    fn resolve(
        &self,
        old: &Value,
        new: &Value,
        managers: &mut Managers,
        workflow: &str,
        force: bool,
    ) -> Result<Comparison, ApplyError> {
        let comparison = self.typed.compare(old, new).filter(&self.ignored);
        let changed = comparison.modified.union(&comparison.added);
        let conflicts: Vec<(String, FieldSet)> = managers
            .iter()
            .filter(|(id, _)| id.as_str() != workflow)
            .map(|(id, e)| (id.clone(), e.set.intersection(&changed)))
            .filter(|(_, set)| !set.is_empty())
            .collect();
        if !force && !conflicts.is_empty() {
            let list = conflicts
                .iter()
                .flat_map(|(id, set)| {
                    let manager = managers.get(id).map(Entry::display).unwrap_or_default();
                    set.paths().into_iter().map(move |path| Conflict {
                        manager: manager.clone(),
                        field: path_string(&path),
                        identity: id.clone(),
                        path,
                    })
                })
                .collect();
            return Err(ApplyError::Conflicts(list));
        }
        for (id, set) in &conflicts {
            if let Some(entry) = managers.get_mut(id) {
                entry.set = entry.set.difference(set);
            }
        }
        if !comparison.removed.is_empty() {
            for (id, entry) in managers.iter_mut() {
                if id != workflow {
                    entry.set = entry.set.difference(&comparison.removed);
                }
            }
        }
        managers.retain(|_, e| !e.set.is_empty());
        Ok(comparison)
    }

    /// A non-apply write by `manager` from `old` to `new`.
    fn update(&self, old: &Value, new: &Value, managers: &mut Managers, manager: &str) {
        let Ok(comparison) = self.resolve(old, new, managers, CURRENT_OPERATION, true) else { return };
        let set =
            comparison.modified.union(&comparison.added).recursive_difference(&self.ignored).difference(&strip_set());
        if set.is_empty() {
            return;
        }
        let id = managed::identity(manager, Operation::Update, &self.api_version, &self.subresource);
        let entry = managers
            .entry(id)
            .or_insert_with(|| Entry::new(manager, Operation::Update, &self.api_version, &self.subresource));
        entry.set = set.union(&entry.set);
        entry.time = Some(self.now.clone());
    }

    /// The fields the last-applied annotation claims: those of the last applied
    /// configuration whose values the live object still has.
    fn allowed_by_last_applied(&self, live: &Value) -> Option<FieldSet> {
        let text = live.get("metadata")?.get("annotations")?.get(LAST_APPLIED)?.as_str()?;
        let last: Value = serde_json::from_str(text).ok()?;
        if last.get("apiVersion").and_then(Value::as_str) != Some(self.api_version.as_str())
            || last.get("kind") != live.get("kind")
        {
            return None;
        }
        if self.typed.validate(&last).iter().any(|e| !e.contains("duplicate entries")) {
            return None;
        }
        let claimed = self.typed.field_set(&last);
        let comparison = self.typed.compare(live, &last);
        Some(claimed.difference(&comparison.modified).difference(&comparison.added).difference(&comparison.removed))
    }
}

/// Fields never recorded in managed fields.
fn strip_set() -> FieldSet {
    let mut set = FieldSet::new();
    for top in ["apiVersion", "kind", "metadata"] {
        set.insert(&[PathElement::Field(top.into())]);
    }
    for field in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        set.insert(&[PathElement::Field("metadata".into()), PathElement::Field(field.into())]);
    }
    set
}

fn without_managed_fields(object: &Value) -> Value {
    let mut copy = object.clone();
    remove_managed_fields(&mut copy);
    copy
}

fn remove_managed_fields(object: &mut Value) {
    if let Some(Value::Object(meta)) = object.get_mut("metadata") {
        meta.shift_remove("managedFields");
    }
}

fn set_managed_fields(object: &mut Value, managers: &Managers) {
    let Value::Object(map) = object else { return };
    let encoded = managed::encode(managers);
    let empty = encoded.as_array().is_none_or(Vec::is_empty);
    match map.get_mut("metadata") {
        Some(Value::Object(meta)) => {
            if empty {
                meta.shift_remove("managedFields");
            } else {
                meta.insert("managedFields".into(), encoded);
            }
        }
        _ if !empty => {
            let mut meta = Map::new();
            meta.insert("managedFields".into(), encoded);
            map.insert("metadata".into(), Value::Object(meta));
        }
        _ => {}
    }
}

fn has_last_applied(object: &Value) -> bool {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
}

/// Rewrites the last-applied annotation to the applied configuration (without the
/// annotation), encoded as kubectl writes it; drops it when annotations would grow too large.
fn set_last_applied(object: &mut Value, applied: &Value) {
    let mut config = applied.clone();
    if let Some(Value::Object(annotations)) = config.pointer_mut("/metadata/annotations") {
        annotations.shift_remove(LAST_APPLIED);
    }
    let text = format!("{}\n", go_json(&sorted(&config)));
    let Some(Value::Object(annotations)) = object.pointer_mut("/metadata/annotations") else { return };
    annotations.insert(LAST_APPLIED.into(), Value::String(text));
    let size: usize = annotations.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum();
    if size > ANNOTATIONS_SIZE_LIMIT {
        annotations.shift_remove(LAST_APPLIED);
    }
}

/// A copy with object keys sorted, as Go encodes maps.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&map[k.as_str()]))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// `<namespace>/<name>; <group>/<version>, Kind=<kind>`, as upstream labels an object.
fn object_label(object: &Value) -> String {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or_default();
    let (group, version) = crate::registry::split_api_version(text("/apiVersion"));
    format!("{}/{}; {group}/{version}, Kind={}", text("/metadata/namespace"), text("/metadata/name"), text("/kind"))
}

fn join_errors(errors: &[String]) -> String {
    match errors {
        [only] => only.clone(),
        _ => {
            let mut lines = vec!["errors:".to_string()];
            lines.extend(errors.iter().map(|e| format!("  {e}")));
            lines.join("\n")
        }
    }
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
