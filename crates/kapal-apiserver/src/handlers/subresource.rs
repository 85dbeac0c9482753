//! Subresources: status, scale, pods/binding, pods/eviction, pods/log, namespaces/finalize.

use http::{Method, StatusCode};
use kapal_api::ApiError;
use kapal_api::selector::LabelSelector;
use serde_json::{Value, json};

use super::write::{FieldValidation, WriteError, body_object};
use super::{Ctx, Dispatched, Reply};
use crate::ApiServer;
use crate::cache::Cached;
use crate::objects::{self, get_path, set_path};
use crate::output::present;

impl ApiServer {
    pub(crate) async fn subresource(&self, ctx: &Ctx, sub: &str) -> Result<Dispatched, ApiError> {
        let info = &ctx.served.info;
        let reply = match (sub, ctx.method.clone()) {
            ("status", Method::GET) => {
                let c = self.read_object(ctx).await?;
                Reply::ok(present(&ctx.served, &c.object()).into_owned())
            }
            ("status", Method::PUT) => self.update_as(ctx, Some("status")).await?,
            ("status", Method::PATCH) => self.patch_as(ctx, Some("status")).await?,
            ("scale", Method::GET) => {
                let c = self.read_object(ctx).await?;
                Reply::ok(self.scale_of(ctx, &c.object())?)
            }
            ("scale", Method::PUT | Method::PATCH) => self.write_scale(ctx).await?,
            ("binding", Method::POST) => self.bind(ctx).await?,
            ("eviction", Method::POST) => self.evict(ctx).await?,
            ("log", Method::GET) => return Err(self.log_unavailable(ctx).await),
            ("finalize", Method::PUT) => self.finalize(ctx).await?,
            (_, method) => {
                return Err(ApiError::method_not_allowed(
                    &info.group,
                    &format!("{}/{sub}", info.plural),
                    method.as_str(),
                ));
            }
        };
        Ok(Dispatched::Reply(reply))
    }

    fn scale_paths(&self, ctx: &Ctx) -> (String, String, Option<String>) {
        match ctx.served.custom.as_ref().and_then(|c| c.scale.clone()) {
            Some(p) => (p.spec_replicas, p.status_replicas, p.label_selector),
            None => (".spec.replicas".into(), ".status.replicas".into(), None),
        }
    }

    /// The autoscaling/v1 Scale view of an object.
    fn scale_of(&self, ctx: &Ctx, obj: &Value) -> Result<Value, ApiError> {
        let (spec_path, status_path, selector_path) = self.scale_paths(ctx);
        let selector = match selector_path {
            Some(p) => get_path(obj, &p).and_then(Value::as_str).unwrap_or_default().to_string(),
            None => obj
                .pointer("/spec/selector")
                .and_then(|s| LabelSelector::from_json(s).ok())
                .map(|s| s.to_string())
                .unwrap_or_default(),
        };
        let meta = &obj["metadata"];
        let mut scale_meta = json!({
            "name": meta["name"], "uid": meta["uid"], "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        });
        if let Some(ns) = meta.get("namespace") {
            scale_meta["namespace"] = ns.clone();
        }
        let mut status = json!({"replicas": get_path(obj, &status_path).and_then(Value::as_i64).unwrap_or(0)});
        if !selector.is_empty() {
            status["selector"] = json!(selector);
        }
        Ok(json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": scale_meta,
            "spec": {"replicas": get_path(obj, &spec_path).and_then(Value::as_i64).unwrap_or(0)},
            "status": status,
        }))
    }

    async fn write_scale(&self, ctx: &Ctx) -> Result<Reply, ApiError> {
        let info = &ctx.served.info;
        let name = ctx.path.name.clone().unwrap_or_default();
        self.cache.sync().await;
        let mut current = Some(self.cached(ctx).await?);
        for _ in 0..8 {
            let Some(old) = current.take() else { break };
            let old_object = old.object();
            let scale = self.scale_of(ctx, &old_object)?;
            let desired = if ctx.method == Method::PUT {
                let body = body_object(ctx)?;
                if let Some(rv) = objects::resource_version(&body)
                    && rv != old.revision.to_string()
                {
                    return Err(ApiError::stale(&info.group, &info.plural, &name));
                }
                body
            } else {
                let kind = crate::patch::PatchKind::from_content_type(&crate::http::content_type(&ctx.headers), false)?;
                let patch = crate::patch::decode(kind, &ctx.body)?;
                let scale_served = crate::resources::Served { info: scale_info(), custom: None };
                crate::patch::apply_patch(&scale_served, kind, &scale, &patch, &ctx.field_manager()?, false)?
            };
            let replicas = desired.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
            if replicas < 0 {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    &name,
                    vec![kapal_api::Cause::invalid(
                        "spec.replicas",
                        &json!(replicas),
                        "must be greater than or equal to 0",
                    )],
                ));
            }
            let (spec_path, _, _) = self.scale_paths(ctx);
            let mut obj = (*old_object).clone();
            set_path(&mut obj, &spec_path, json!(replicas));
            self.admit(
                ctx,
                &mut obj,
                super::write::Op::Update { old: &old_object, subresource: Some("scale") },
                FieldValidation::Ignore,
            )?;
            crate::strategy::track_fields(
                &ctx.served,
                Some(&old_object),
                &mut obj,
                &ctx.field_manager()?,
                Some("scale"),
            );
            match self.store_update(ctx, &old, obj, ctx.dry_run()?).await {
                Ok(stored) => return Ok(Reply::ok(self.scale_of(ctx, &stored)?)),
                Err(WriteError::Raced(now)) => current = now,
                Err(WriteError::Api(e)) => return Err(e),
            }
        }
        Err(ApiError::stale(&info.group, &info.plural, &name))
    }

    async fn bind(&self, ctx: &Ctx) -> Result<Reply, ApiError> {
        let body = body_object(ctx)?;
        let target = body.pointer("/target/name").and_then(Value::as_str).unwrap_or_default().to_string();
        if target.is_empty() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                ctx.path.name.as_deref().unwrap_or_default(),
                vec![kapal_api::Cause::required("target.name")],
            ));
        }
        let name = ctx.path.name.clone().unwrap_or_default();
        self.cache.sync().await;
        let mut current = Some(self.cached(ctx).await?);
        for _ in 0..8 {
            let Some(old) = current.take() else { break };
            let old_object = old.object();
            if objects::is_deleting(&old_object) {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    &name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            if let Some(node) = old_object.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    &name,
                    &format!("pod {name} is already assigned to node \"{node}\""),
                ));
            }
            let mut obj = (*old_object).clone();
            obj["spec"]["nodeName"] = json!(target);
            set_condition(
                &mut obj,
                json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": objects::now_rfc3339()}),
            );
            match self.store_update(ctx, &old, obj, ctx.dry_run()?).await {
                Ok(_) => {
                    return Ok(Reply {
                        status: StatusCode::CREATED,
                        body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                        warnings: vec![],
                    });
                }
                Err(WriteError::Raced(now)) => current = now,
                Err(WriteError::Api(e)) => return Err(e),
            }
        }
        Err(ApiError::stale("", "pods", &name))
    }

    async fn log_unavailable(&self, ctx: &Ctx) -> ApiError {
        let pod = match self.read_object(ctx).await {
            Ok(p) => p,
            Err(e) => return e,
        };
        let name = ctx.path.name.clone().unwrap_or_default();
        let container = ctx
            .query
            .get("container")
            .map(String::from)
            .or_else(|| pod.object().pointer("/spec/containers/0/name").and_then(Value::as_str).map(String::from))
            .unwrap_or_default();
        ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        ))
    }

    async fn finalize(&self, ctx: &Ctx) -> Result<Reply, ApiError> {
        let body = body_object(ctx)?;
        let finalizers = body.pointer("/spec/finalizers").cloned().unwrap_or(json!([]));
        let name = ctx.path.name.clone().unwrap_or_default();
        self.cache.sync().await;
        let mut current: Option<Cached> = Some(self.cached(ctx).await?);
        for _ in 0..8 {
            let Some(old) = current.take() else { break };
            let mut obj = (*old.object()).clone();
            obj["spec"]["finalizers"] = finalizers.clone();
            match self.store_update(ctx, &old, obj, ctx.dry_run()?).await {
                Ok(stored) => return Ok(Reply::ok(present(&ctx.served, &stored).into_owned())),
                Err(WriteError::Raced(now)) => current = now,
                Err(WriteError::Api(e)) => return Err(e),
            }
        }
        Err(ApiError::stale("", "namespaces", &name))
    }
}

/// Sets (replaces by type) a condition in `status.conditions`.
pub(crate) fn set_condition(obj: &mut Value, condition: Value) {
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    if !obj["status"]["conditions"].is_array() {
        obj["status"]["conditions"] = json!([]);
    }
    if let Some(list) = obj["status"]["conditions"].as_array_mut() {
        list.retain(|c| c["type"] != condition["type"]);
        list.push(condition);
    }
}

fn scale_info() -> kapal_api::ResourceInfo {
    kapal_api::ResourceInfo {
        group: "autoscaling".into(),
        version: "v1".into(),
        kind: "Scale".into(),
        list_kind: "ScaleList".into(),
        plural: "scales".into(),
        singular: "scale".into(),
        scope: kapal_api::Scope::Namespaced,
        short_names: vec![],
        categories: vec![],
        verbs: vec![],
        subresources: vec![],
        schema_name: Some("io.k8s.api.autoscaling.v1.Scale".into()),
    }
}
