//! Priority admission for PriorityClasses users create, as upstream's Priority admission plugin
//! does it: a pod naming a class gets that class's `priority` and `preemptionPolicy`; a pod
//! naming a class that does not exist is refused; a pod naming none gets the `globalDefault`
//! class, if there is one; and only one class may be the global default. (The built-in
//! `system-*` classes, and priority 0 when there is no default, come from defaulting in
//! kapal-api.)

use kapal_api::ApiError;
use serde_json::{Value, json};

use crate::ApiServer;
use crate::handlers::Ctx;

const PRIORITY_CLASSES: &str = "/registry/scheduling.k8s.io/priorityclasses/";

impl ApiServer {
    /// Resolves the pod's `priorityClassName` on create; refuses a second default class.
    pub(crate) fn admit_priority(&self, ctx: &Ctx, obj: &mut Value) -> Result<(), ApiError> {
        let info = &ctx.served.info;
        if info.group == "scheduling.k8s.io" && info.kind == "PriorityClass" {
            return self.admit_default_class(obj);
        }
        if !(info.group.is_empty() && info.kind == "Pod") {
            return Ok(());
        }
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
        let class_name = spec.get("priorityClassName").and_then(Value::as_str).unwrap_or_default().to_string();
        if class_name.is_empty() {
            // Defaulting gave the pod priority 0; the global default class, if any, replaces
            // that (a priority the pod set itself is left alone).
            let Some(default) = self.default_priority_class() else { return Ok(()) };
            if spec.get("priority").and_then(Value::as_i64).is_some_and(|p| p != 0) {
                return Ok(());
            }
            let name = default.pointer("/metadata/name").cloned().unwrap_or_default();
            spec.insert("priorityClassName".into(), name);
            spec.insert("priority".into(), default.get("value").cloned().unwrap_or(json!(0)));
            let policy = default.get("preemptionPolicy").cloned().unwrap_or(json!("PreemptLowerPriority"));
            spec.insert("preemptionPolicy".into(), policy);
            return Ok(());
        }
        if spec.get("priority").is_some_and(|p| !p.is_null()) {
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

    /// The `globalDefault` class; of several (created concurrently), the lowest value, as
    /// upstream picks.
    fn default_priority_class(&self) -> Option<std::sync::Arc<Value>> {
        self.cache
            .list(PRIORITY_CLASSES)
            .iter()
            .filter(|c| c.bytes.windows(20).any(|w| w == br#""globalDefault":true"#))
            .map(|c| c.object())
            .filter(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
            .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0))
    }

    fn admit_default_class(&self, obj: &Value) -> Result<(), ApiError> {
        if obj.get("globalDefault").and_then(Value::as_bool) != Some(true) {
            return Ok(());
        }
        let Some(default) = self.default_priority_class() else { return Ok(()) };
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let existing = default.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        Err(ApiError::forbidden(format!(
            "priorityclasses.scheduling.k8s.io \"{name}\" is forbidden: PriorityClass {existing} is already marked as default. Only one default can exist"
        )))
    }
}
