//! Priority admission for PriorityClasses users create: a pod naming a class gets that class's
//! `priority` and `preemptionPolicy`, and a pod naming a class that does not exist is refused,
//! as upstream's Priority admission plugin does. (The built-in `system-*` classes are resolved
//! by defaulting in kapal-api.)

use kapal_api::ApiError;
use serde_json::{Value, json};

use crate::ApiServer;
use crate::handlers::Ctx;

const PRIORITY_CLASSES: &str = "/registry/scheduling.k8s.io/priorityclasses/";

impl ApiServer {
    /// Resolves the pod's `priorityClassName` on create.
    pub(crate) fn admit_priority(&self, ctx: &Ctx, obj: &mut Value) -> Result<(), ApiError> {
        let info = &ctx.served.info;
        if !(info.group.is_empty() && info.kind == "Pod") {
            return Ok(());
        }
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
        let Some(class_name) = spec.get("priorityClassName").and_then(Value::as_str).map(str::to_string) else {
            return Ok(());
        };
        if class_name.is_empty() || spec.get("priority").is_some_and(|p| !p.is_null()) {
            return Ok(());
        }
        let Some(class) = self.cache.get(&format!("{PRIORITY_CLASSES}{class_name}")) else {
            let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            return Err(ApiError::forbidden(format!(
                "pods \"{name}\" is forbidden: no PriorityClass with name {class_name} was found"
            )));
        };
        let class = class.object();
        spec.insert("priority".into(), class.get("value").cloned().unwrap_or(json!(0)));
        if spec.get("preemptionPolicy").is_none_or(Value::is_null) {
            let policy = class.get("preemptionPolicy").cloned().unwrap_or(json!("PreemptLowerPriority"));
            spec.insert("preemptionPolicy".into(), policy);
        }
        Ok(())
    }
}
