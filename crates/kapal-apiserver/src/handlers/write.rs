//! CREATE, UPDATE and PATCH: one admission pipeline, then a guarded store write.

use std::sync::Arc;

use http::StatusCode;
use kapal_api::{ApiError, Cause};
use kapal_store::StoreError;
use serde_json::{Value, json};

use super::{Ctx, Reply};
use crate::ApiServer;
use crate::cache::{Cached, decode, set_resource_version};
use crate::http::{MAX_BODY, content_type, decode_body};
use crate::objects;
use crate::resources::Served;
use crate::strategy;

/// `fieldValidation`: what to do about unknown or duplicate fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    fn from_ctx(ctx: &Ctx) -> Result<FieldValidation, ApiError> {
        match ctx.query.get("fieldValidation") {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}. Supported values are \"Ignore\", \"Warn\" and \"Strict\""
            ))),
        }
    }
}

/// Which write an admission is for.
pub(crate) enum Op<'a> {
    Create,
    Update { old: &'a Value, subresource: Option<&'a str> },
}

/// Attempts at a write that races with other writers before giving up with 409.
const RETRIES: usize = 8;

impl ApiServer {
    pub(crate) async fn create(&self, ctx: &Ctx) -> Result<Reply, ApiError> {
        let validation = FieldValidation::from_ctx(ctx)?;
        let dry_run = ctx.dry_run()?;
        let mut obj = body_object(ctx)?;
        self.check_namespace_open(ctx).await?;
        let warnings = self.admit(ctx, &mut obj, Op::Create, validation)?;
        let manager = ctx.field_manager()?;
        strategy::track_fields(&ctx.served, None, &mut obj, &manager, None);
        let stored = self.store_create(ctx, obj, dry_run).await?;
        Ok(Reply {
            status: StatusCode::CREATED,
            body: crate::output::present(&ctx.served, &stored).into_owned(),
            warnings,
        })
    }

    pub(crate) async fn update(&self, ctx: &Ctx) -> Result<Reply, ApiError> {
        self.update_as(ctx, None).await
    }

    /// PUT on the object or on its `status` subresource.
    pub(crate) async fn update_as(&self, ctx: &Ctx, subresource: Option<&str>) -> Result<Reply, ApiError> {
        let validation = FieldValidation::from_ctx(ctx)?;
        let dry_run = ctx.dry_run()?;
        let body = body_object(ctx)?;
        let name = ctx.path.name.clone().unwrap_or_default();
        if let Some(body_name) = objects::name(&body)
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let precondition = objects::resource_version(&body).map(String::from);
        let manager = ctx.field_manager()?;
        let mut current = if self.cache.sync().await { self.lookup(ctx).await? } else { None };
        for _ in 0..RETRIES {
            let Some(old) = current.take() else {
                if strategy::allows_create_on_update(&ctx.served) && subresource.is_none() {
                    return self.create(ctx).await;
                }
                return Err(ApiError::not_found(&ctx.served.info.group, &ctx.served.info.plural, &name));
            };
            if let Some(rv) = &precondition
                && *rv != old.revision.to_string()
            {
                return Err(ApiError::stale(&ctx.served.info.group, &ctx.served.info.plural, &name));
            }
            let old_object = old.object();
            let mut obj = body.clone();
            let warnings = self.admit(ctx, &mut obj, Op::Update { old: &old_object, subresource }, validation)?;
            strategy::track_fields(&ctx.served, Some(&old_object), &mut obj, &manager, subresource);
            match self.store_update(ctx, &old, obj, dry_run).await {
                Ok(stored) => return Ok(Reply { status: StatusCode::OK, body: present(ctx, &stored), warnings }),
                Err(WriteError::Raced(now)) if precondition.is_none() => current = now,
                Err(WriteError::Raced(_)) => {
                    return Err(ApiError::stale(&ctx.served.info.group, &ctx.served.info.plural, &name));
                }
                Err(WriteError::Api(e)) => return Err(e),
            }
        }
        Err(ApiError::stale(&ctx.served.info.group, &ctx.served.info.plural, &name))
    }

    pub(crate) async fn patch(&self, ctx: &Ctx) -> Result<Reply, ApiError> {
        self.patch_as(ctx, None).await
    }

    /// PATCH on the object or on its `status` subresource, in any of the four patch types.
    pub(crate) async fn patch_as(&self, ctx: &Ctx, subresource: Option<&str>) -> Result<Reply, ApiError> {
        let validation = FieldValidation::from_ctx(ctx)?;
        let dry_run = ctx.dry_run()?;
        let kind = crate::patch::PatchKind::from_content_type(&content_type(&ctx.headers), ctx.served.is_custom())?;
        check_size(ctx)?;
        let patch = crate::patch::decode(kind, &ctx.body)?;
        let manager = match kind {
            crate::patch::PatchKind::Apply => ctx
                .query
                .get("fieldManager")
                .filter(|m| !m.is_empty())
                .map(String::from)
                .ok_or_else(|| ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"))?,
            _ => ctx.field_manager()?,
        };
        let force = ctx.query.flag("force");
        if force && kind != crate::patch::PatchKind::Apply {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "PatchOptions",
                "",
                vec![Cause::forbidden("force", "may not be specified for non-apply patch")],
            ));
        }
        let name = ctx.path.name.clone().unwrap_or_default();
        let precondition = crate::patch::resource_version_precondition(kind, &patch);
        let mut current = if self.cache.sync().await { self.lookup(ctx).await? } else { None };
        for _ in 0..RETRIES {
            let Some(old) = current.take() else {
                if kind == crate::patch::PatchKind::Apply && subresource.is_none() {
                    return self.apply_create(ctx, &patch, &manager, validation, dry_run).await;
                }
                return Err(ApiError::not_found(&ctx.served.info.group, &ctx.served.info.plural, &name));
            };
            if let Some(rv) = &precondition
                && *rv != old.revision.to_string()
            {
                return Err(ApiError::stale(&ctx.served.info.group, &ctx.served.info.plural, &name));
            }
            let old_object = old.object();
            let served_view = crate::convert::from_storage(&ctx.served, &old_object);
            let mut obj = crate::patch::apply_patch(&ctx.served, kind, &served_view, &patch, &manager, force)?;
            let warnings = self.admit(ctx, &mut obj, Op::Update { old: &old_object, subresource }, validation)?;
            if kind != crate::patch::PatchKind::Apply {
                strategy::track_fields(&ctx.served, Some(&old_object), &mut obj, &manager, subresource);
            }
            match self.store_update(ctx, &old, obj, dry_run).await {
                Ok(stored) => return Ok(Reply { status: StatusCode::OK, body: present(ctx, &stored), warnings }),
                Err(WriteError::Raced(now)) if precondition.is_none() => current = now,
                Err(WriteError::Raced(_)) => {
                    return Err(ApiError::stale(&ctx.served.info.group, &ctx.served.info.plural, &name));
                }
                Err(WriteError::Api(e)) => return Err(e),
            }
        }
        Err(ApiError::stale(&ctx.served.info.group, &ctx.served.info.plural, &name))
    }

    async fn apply_create(
        &self,
        ctx: &Ctx,
        applied: &Value,
        manager: &str,
        validation: FieldValidation,
        dry_run: bool,
    ) -> Result<Reply, ApiError> {
        let mut obj = crate::patch::apply_to_nothing(&ctx.served, applied, manager)?;
        if let Some(meta) = objects::meta_mut(&mut obj) {
            meta.insert("name".into(), json!(ctx.path.name.clone().unwrap_or_default()));
        }
        let warnings = self.admit(ctx, &mut obj, Op::Create, validation)?;
        self.check_namespace_open(ctx).await?;
        let stored = self.store_create(ctx, obj, dry_run).await?;
        Ok(Reply { status: StatusCode::CREATED, body: present(ctx, &stored), warnings })
    }

    /// Everything between decoding a body and storing it: type meta, field validation,
    /// normalization, metadata rules, per-kind preparation, defaults and validation.
    pub(crate) fn admit(
        &self,
        ctx: &Ctx,
        obj: &mut Value,
        op: Op<'_>,
        validation: FieldValidation,
    ) -> Result<Vec<String>, ApiError> {
        let served = &ctx.served;
        let info = &served.info;
        check_type_meta(ctx, obj)?;
        let mut warnings = Vec::new();
        if validation != FieldValidation::Ignore {
            let unknown = strategy::unknown_fields(served, obj);
            if !unknown.is_empty() {
                if validation == FieldValidation::Strict {
                    let list: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
                    return Err(ApiError::bad_request(format!(
                        "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                        info.kind,
                        info.version,
                        info.kind,
                        list.join(", ")
                    )));
                }
                warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
            }
        }
        strategy::normalize(served, obj)?;
        if crate::convert::converts(served) {
            let old = match op {
                Op::Update { old, .. } => Some(old),
                Op::Create => None,
            };
            *obj = crate::convert::to_storage(served, std::mem::take(obj), old);
        }
        // From here on the object is in its stored form, and the stored kind's rules apply.
        let storage = self.storage_served(served);
        let served = &storage;
        let namespace = ctx.namespace().map(String::from);
        set_namespace(ctx, obj, namespace.as_deref())?;
        match op {
            Op::Create => prepare_create_meta(ctx, obj)?,
            Op::Update { old, subresource } => {
                prepare_update_meta(obj, old);
                strategy::prepare_update(served, obj, old, subresource);
            }
        }
        if matches!(op, Op::Create) {
            strategy::prepare_create(served, obj);
        }
        strategy::defaults(served, obj);
        let causes = match op {
            Op::Create => strategy::validate(served, obj, None),
            Op::Update { old, .. } => strategy::validate(served, obj, Some(old)),
        };
        if !causes.is_empty() {
            let name = objects::name(obj).unwrap_or_default().to_string();
            return Err(ApiError::invalid(&info.group, &info.kind, &name, causes));
        }
        Ok(warnings)
    }

    /// The resource objects of `served` are stored as (itself unless it converts).
    pub(crate) fn storage_served(&self, served: &Arc<Served>) -> Arc<Served> {
        if served.is_custom() || !crate::convert::converts(served) {
            return served.clone();
        }
        let (group, version, kind) = crate::convert::storage_gvk(served);
        self.resources.snapshot().by_kind(&group, &version, &kind).cloned().unwrap_or_else(|| served.clone())
    }

    /// Namespaced objects may only be created in a namespace that exists and is not terminating.
    pub(crate) async fn check_namespace_open(&self, ctx: &Ctx) -> Result<(), ApiError> {
        let Some(ns) = ctx.namespace() else { return Ok(()) };
        let key = format!("/registry/core/namespaces/{ns}");
        let found = match self.cache.get(&key) {
            Some(c) => Some(c),
            None => {
                self.cache.sync().await;
                self.cache.get(&key)
            }
        };
        match found {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(c) if c.is_deleting() => {
                let mut e = ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    ctx.served.info.qualified_plural(),
                    ctx.path
                        .name
                        .clone()
                        .or_else(|| objects::name(&ctx_body_value(ctx)).map(String::from))
                        .unwrap_or_default()
                ));
                e.causes.push(Cause::new(
                    "NamespaceTerminating",
                    "metadata.namespace",
                    format!("namespace {ns} is being terminated"),
                ));
                Err(e)
            }
            Some(_) => Ok(()),
        }
    }

    /// Stores a new object. With `dry_run`, returns what would have been stored.
    pub(crate) async fn store_create(&self, ctx: &Ctx, mut obj: Value, dry_run: bool) -> Result<Arc<Value>, ApiError> {
        let info = &ctx.served.info;
        let name = objects::name(&obj).unwrap_or_default().to_string();
        let key = info.key(ctx.namespace(), &name);
        if self.cache.get(&key).is_some() {
            return Err(ApiError::already_exists(&info.group, &info.plural, &name));
        }
        self.admit_priority(ctx, &mut obj)?;
        if info.group.is_empty() && info.kind == "Pod" {
            let (not_ready, unreachable) = self.toleration_seconds;
            kapal_api::defaults::default_tolerations(&mut obj, not_ready, unreachable);
        }
        self.admit_quota(ctx, &obj, dry_run).await?;
        let allocated = self.allocate(&ctx.served, &mut obj, None, dry_run).await?;
        if dry_run {
            return Ok(Arc::new(obj));
        }
        let bytes = encode(&obj);
        match self.store.create(&key, bytes).await {
            Ok(kv) => Ok(self.after_write(kv, obj).await),
            Err(e) => {
                self.release(&allocated).await;
                Err(match e {
                    StoreError::AlreadyExists(_) => ApiError::already_exists(&info.group, &info.plural, &name),
                    other => crate::store_error(other),
                })
            }
        }
    }

    /// Stores a changed object over `old`, or deletes it when the change removed the last
    /// finalizer of an object being deleted. Unchanged objects are not written.
    pub(crate) async fn store_update(
        &self,
        ctx: &Ctx,
        old: &Cached,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Arc<Value>, WriteError> {
        let info = &ctx.served.info;
        set_resource_version(&mut obj, old.revision);
        let old_object = old.object();
        if unchanged(&obj, &old_object) {
            return Ok(old_object);
        }
        let allocated = self.allocate(&ctx.served, &mut obj, Some(&old_object), dry_run).await?;
        if dry_run {
            return Ok(Arc::new(obj));
        }
        let finished = objects::is_deleting(&obj) && strategy::finalizers_done(&ctx.served, &obj);
        let result = if finished {
            self.store.delete(&old.key, Some(old.revision)).await
        } else {
            self.store.update(&old.key, encode(&obj), old.revision).await
        };
        match result {
            Ok(kv) => {
                if finished {
                    self.release_object(&ctx.served, &obj).await;
                    let mut gone = obj;
                    set_resource_version(&mut gone, kv.mod_revision);
                    self.cache.wait_for(kv.mod_revision, std::time::Duration::from_secs(3)).await;
                    return Ok(Arc::new(gone));
                }
                Ok(self.after_write(kv, obj).await)
            }
            Err(StoreError::Conflict { current, .. }) => {
                self.release(&allocated).await;
                Err(WriteError::Raced(current.as_ref().and_then(decode)))
            }
            Err(StoreError::NotFound(_)) => {
                self.release(&allocated).await;
                Err(WriteError::Api(ApiError::not_found(
                    &info.group,
                    &info.plural,
                    objects::name(&obj).unwrap_or_default(),
                )))
            }
            Err(e) => {
                self.release(&allocated).await;
                Err(WriteError::Api(crate::store_error(e)))
            }
        }
    }

    /// Waits for the cache to see a write, so that the writer can read it back at once.
    pub(crate) async fn after_write(&self, kv: kapal_store::KeyValue, mut written: Value) -> Arc<Value> {
        self.cache.wait_for(kv.mod_revision, std::time::Duration::from_secs(3)).await;
        set_resource_version(&mut written, kv.mod_revision);
        Arc::new(written)
    }
}

/// Why a store write did not happen.
pub(crate) enum WriteError {
    /// Someone else wrote first; here is the object now (if it still exists).
    Raced(Option<Cached>),
    Api(ApiError),
}

impl From<ApiError> for WriteError {
    fn from(e: ApiError) -> Self {
        WriteError::Api(e)
    }
}

fn present(ctx: &Ctx, obj: &Value) -> Value {
    crate::output::present(&ctx.served, obj).into_owned()
}

fn ctx_body_value(ctx: &Ctx) -> Value {
    serde_json::from_slice(&ctx.body).unwrap_or(Value::Null)
}

fn check_size(ctx: &Ctx) -> Result<(), ApiError> {
    if ctx.body.len() > MAX_BODY {
        return Err(ApiError::too_large(format!(
            "the request body is too large: {} bytes, limit is {MAX_BODY}",
            ctx.body.len()
        )));
    }
    Ok(())
}

/// The request body as a JSON object.
pub(crate) fn body_object(ctx: &Ctx) -> Result<Value, ApiError> {
    check_size(ctx)?;
    let ct = content_type(&ctx.headers);
    if !matches!(ct.as_str(), "" | "application/json" | "application/yaml" | "*/*" | kapal_api::protobuf::CONTENT_TYPE)
    {
        return Err(ApiError::unsupported_media_type(
            &ct,
            &["application/json", "application/yaml", kapal_api::protobuf::CONTENT_TYPE],
        ));
    }
    let v = decode_body(&ct, &ctx.body)?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    Ok(v)
}

/// Fills in or checks `apiVersion` and `kind`.
fn check_type_meta(ctx: &Ctx, obj: &mut Value) -> Result<(), ApiError> {
    let info = &ctx.served.info;
    let want_version = info.api_version();
    let body_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string();
    let body_kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    if !body_version.is_empty() && body_version != want_version {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({body_version}) does not match the expected API version ({want_version})"
        )));
    }
    if !body_kind.is_empty() && body_kind != info.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({body_kind}) does not match the expected kind ({})",
            info.kind
        )));
    }
    obj["apiVersion"] = json!(want_version);
    obj["kind"] = json!(info.kind);
    Ok(())
}

fn set_namespace(ctx: &Ctx, obj: &mut Value, namespace: Option<&str>) -> Result<(), ApiError> {
    let body_ns = objects::namespace(obj).map(String::from);
    let Some(meta) = objects::meta_mut(obj) else { return Ok(()) };
    match namespace {
        Some(ns) => {
            if body_ns.as_deref().is_some_and(|b| b != ns) {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta.insert("namespace".into(), json!(ns));
        }
        None => {
            if ctx.served.info.namespaced() {
                return Err(ApiError::bad_request("the namespace of the object is required"));
            }
            meta.remove("namespace");
        }
    }
    Ok(())
}

fn prepare_create_meta(ctx: &Ctx, obj: &mut Value) -> Result<(), ApiError> {
    if objects::resource_version(obj).is_some() {
        return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created"));
    }
    let tracks_generation = strategy::tracks_generation(&ctx.served);
    let Some(meta) = objects::meta_mut(obj) else { return Ok(()) };
    let name = meta.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let generate = meta.get("generateName").and_then(Value::as_str).unwrap_or_default().to_string();
    if name.is_empty() && !generate.is_empty() {
        meta.insert("name".into(), json!(format!("{generate}{}", objects::random_suffix())));
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(objects::now_rfc3339()));
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("resourceVersion");
    meta.remove("selfLink");
    if tracks_generation {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    Ok(())
}

/// System-owned metadata is kept from the stored object whatever the client sent.
fn prepare_update_meta(obj: &mut Value, old: &Value) {
    let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
    let Some(meta) = objects::meta_mut(obj) else { return };
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "name",
        "generateName",
    ] {
        match old_meta.get(field) {
            Some(v) => {
                meta.insert(field.into(), v.clone());
            }
            None => {
                meta.remove(field);
            }
        }
    }
    meta.remove("selfLink");
}

/// Whether an update changes nothing but what the server itself maintains.
fn unchanged(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
            m.remove("resourceVersion");
        }
        v
    };
    strip(new) == strip(old) && managed_sets_equal(new, old)
}

fn managed_sets_equal(new: &Value, old: &Value) -> bool {
    let sets = |v: &Value| -> Vec<(Value, Value, Value)> {
        v.get("metadata")
            .and_then(|m| m.get("managedFields"))
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|e| (e["manager"].clone(), e["operation"].clone(), e["fieldsV1"].clone())).collect())
            .unwrap_or_default()
    };
    sets(new) == sets(old)
}

/// The stored form: JSON without `resourceVersion` (which is the store revision).
pub(crate) fn encode(obj: &Value) -> Vec<u8> {
    let mut obj = obj.clone();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&obj).unwrap_or_default()
}
