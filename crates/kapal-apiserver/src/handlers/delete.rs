//! DELETE and DELETECOLLECTION: preconditions, finalizers, graceful deletion, propagation.

use http::StatusCode;
use kapal_api::ApiError;
use kapal_store::StoreError;
use serde_json::{Value, json};

use super::list::Filter;
use super::{Ctx, Reply};
use crate::ApiServer;
use crate::cache::{Cached, decode, set_resource_version};
use crate::objects;
use crate::strategy;

/// `DeleteOptions` from the body and the query.
#[derive(Debug, Default, Clone)]
pub(crate) struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    fn from_ctx(ctx: &Ctx) -> Result<DeleteOptions, ApiError> {
        let body: Value = if ctx.body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            crate::http::decode_body(&crate::http::content_type(&ctx.headers), &ctx.body)?
        };
        let mut opts = DeleteOptions {
            grace_period: body.get("gracePeriodSeconds").and_then(Value::as_i64),
            propagation: body.get("propagationPolicy").and_then(Value::as_str).map(String::from),
            precondition_uid: body.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from),
            precondition_rv: body.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(String::from),
            dry_run: body.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == "All")),
        };
        if body.get("orphanDependents").and_then(Value::as_bool) == Some(true) && opts.propagation.is_none() {
            opts.propagation = Some("Orphan".into());
        }
        if let Some(g) = ctx.query.int("gracePeriodSeconds")? {
            opts.grace_period = Some(g);
        }
        if let Some(p) = ctx.query.get("propagationPolicy").filter(|p| !p.is_empty()) {
            opts.propagation = Some(p.to_string());
        }
        opts.dry_run |= ctx.dry_run()?;
        if let Some(p) = &opts.propagation
            && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
        {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                vec![kapal_api::Cause::not_supported(
                    "propagationPolicy",
                    &json!(p),
                    &["Foreground", "Background", "Orphan", "nil"],
                )],
            ));
        }
        Ok(opts)
    }
}

impl ApiServer {
    pub(crate) async fn delete(&self, ctx: &Ctx) -> Result<Reply, ApiError> {
        let opts = DeleteOptions::from_ctx(ctx)?;
        self.cache.sync().await;
        let mut current = Some(self.cached(ctx).await?);
        for _ in 0..8 {
            let Some(old) = current.take() else { break };
            match self.delete_one(ctx, &old, &opts).await {
                Ok(reply) => return Ok(reply),
                Err(DeleteError::Raced(now)) => {
                    current = now;
                    if current.is_none() {
                        break;
                    }
                }
                Err(DeleteError::Api(e)) => return Err(e),
            }
        }
        let info = &ctx.served.info;
        Err(ApiError::not_found(&info.group, &info.plural, ctx.path.name.as_deref().unwrap_or_default()))
    }

    async fn delete_one(&self, ctx: &Ctx, old: &Cached, opts: &DeleteOptions) -> Result<Reply, DeleteError> {
        let info = &ctx.served.info;
        let old_object = old.object();
        let name = objects::name(&old_object).unwrap_or_default().to_string();
        if let Some(uid) = &opts.precondition_uid {
            let actual = objects::uid(&old_object).unwrap_or_default();
            if uid != actual {
                return Err(DeleteError::Api(ApiError::conflict(
                    &info.group,
                    &info.plural,
                    &name,
                    &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
                )));
            }
        }
        if let Some(rv) = &opts.precondition_rv
            && *rv != old.revision.to_string()
        {
            return Err(DeleteError::Api(ApiError::conflict(
                &info.group,
                &info.plural,
                &name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    old.revision
                ),
            )));
        }
        let mut marked = (*old_object).clone();
        let plan = strategy::plan_delete(&ctx.served, &mut marked, opts);
        if plan == strategy::DeletePlan::Immediate {
            if opts.dry_run {
                return Ok(Reply::ok(crate::output::present(&ctx.served, &old_object).into_owned()));
            }
            if !ctx.served.is_custom()
                && (info.group.as_str(), info.kind.as_str()) == ("apiextensions.k8s.io", "CustomResourceDefinition")
            {
                self.delete_custom_objects(&old_object).await.map_err(DeleteError::Api)?;
            }
            return match self.store.delete(&old.key, Some(old.revision)).await {
                Ok(kv) => {
                    self.release_object(&ctx.served, &old_object).await;
                    self.cache.wait_for(kv.mod_revision, std::time::Duration::from_secs(3)).await;
                    let mut gone = (*old_object).clone();
                    set_resource_version(&mut gone, kv.mod_revision);
                    Ok(Reply::ok(crate::output::present(&ctx.served, &gone).into_owned()))
                }
                Err(StoreError::Conflict { current, .. }) => Err(DeleteError::Raced(current.as_ref().and_then(decode))),
                Err(StoreError::NotFound(_)) => Err(DeleteError::Raced(None)),
                Err(e) => Err(DeleteError::Api(crate::store_error(e))),
            };
        }
        if plan == strategy::DeletePlan::Unchanged || opts.dry_run {
            let status = if plan == strategy::DeletePlan::Unchanged { StatusCode::OK } else { StatusCode::ACCEPTED };
            return Ok(Reply {
                status,
                body: crate::output::present(&ctx.served, &marked).into_owned(),
                warnings: vec![],
            });
        }
        match self.store.update(&old.key, super::write::encode(&marked), old.revision).await {
            Ok(kv) => {
                let stored = self.after_write(kv, marked).await;
                Ok(Reply {
                    status: StatusCode::ACCEPTED,
                    body: crate::output::present(&ctx.served, &stored).into_owned(),
                    warnings: vec![],
                })
            }
            Err(StoreError::Conflict { current, .. }) => Err(DeleteError::Raced(current.as_ref().and_then(decode))),
            Err(StoreError::NotFound(_)) => Err(DeleteError::Raced(None)),
            Err(e) => Err(DeleteError::Api(crate::store_error(e))),
        }
    }

    /// Deletes every object of a CRD's resource, as upstream's CRD finalizer does before the
    /// CRD itself goes.
    async fn delete_custom_objects(&self, crd: &Value) -> Result<(), ApiError> {
        let (Some(group), Some(plural)) = (
            crd.pointer("/spec/group").and_then(Value::as_str),
            crd.pointer("/spec/names/plural").and_then(Value::as_str),
        ) else {
            return Ok(());
        };
        let prefix = format!("/registry/{group}/{plural}/");
        for c in self.cache.list(&prefix) {
            match self.store.delete(&c.key, None).await {
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(crate::store_error(e)),
            }
        }
        Ok(())
    }

    pub(crate) async fn delete_collection(&self, ctx: &Ctx) -> Result<Reply, ApiError> {
        let opts = DeleteOptions::from_ctx(ctx)?;
        let filter = Filter::from_ctx(ctx)?;
        self.cache.sync().await;
        let prefix = ctx.served.info.namespace_prefix(ctx.namespace());
        let (all, _) = self.cache.list_current(&prefix).await.map_err(crate::store_error)?;
        let targets: Vec<Cached> = all.into_iter().filter(|c| filter.matches(c)).collect();
        let mut deleted = Vec::new();
        for old in targets {
            let mut current = Some(old);
            for _ in 0..8 {
                let Some(o) = current.take() else { break };
                match self.delete_one(ctx, &o, &opts).await {
                    Ok(reply) => {
                        deleted.push(reply.body);
                        break;
                    }
                    Err(DeleteError::Raced(now)) => current = now,
                    Err(DeleteError::Api(e)) => return Err(e),
                }
            }
        }
        let info = &ctx.served.info;
        Ok(Reply::ok(json!({
            "kind": info.list_kind,
            "apiVersion": info.api_version(),
            "metadata": {"resourceVersion": self.cache.revision().to_string()},
            "items": deleted,
        })))
    }
}

enum DeleteError {
    Raced(Option<Cached>),
    Api(ApiError),
}
