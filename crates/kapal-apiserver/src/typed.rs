//! Decoding built-in kinds through their k8s-openapi types.
//!
//! Kubernetes decodes every request into a Go struct and stores what that struct encodes to:
//! unknown fields are dropped and a value of the wrong type is a 400. Doing the same through
//! k8s-openapi's types gives Kapal the same behaviour, field for field.

use k8s_openapi::{api, apiextensions_apiserver};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

/// Decodes `obj` as the built-in type named by its k8s-openapi schema name and encodes it
/// back. `Ok(None)` when the name is not a built-in type.
pub fn normalize(schema_name: &str, obj: &Value) -> Result<Option<Value>, String> {
    let out = match schema_name {
        "io.k8s.api.core.v1.Namespace" => roundtrip::<api::core::v1::Namespace>(obj),
        "io.k8s.api.core.v1.Pod" => roundtrip::<api::core::v1::Pod>(obj),
        "io.k8s.api.core.v1.Service" => roundtrip::<api::core::v1::Service>(obj),
        "io.k8s.api.core.v1.Endpoints" => roundtrip::<api::core::v1::Endpoints>(obj),
        "io.k8s.api.core.v1.ConfigMap" => roundtrip::<api::core::v1::ConfigMap>(obj),
        "io.k8s.api.core.v1.Secret" => roundtrip::<api::core::v1::Secret>(obj),
        "io.k8s.api.core.v1.ServiceAccount" => roundtrip::<api::core::v1::ServiceAccount>(obj),
        "io.k8s.api.core.v1.Node" => roundtrip::<api::core::v1::Node>(obj),
        "io.k8s.api.core.v1.Event" => roundtrip::<api::core::v1::Event>(obj),
        "io.k8s.api.core.v1.PersistentVolume" => roundtrip::<api::core::v1::PersistentVolume>(obj),
        "io.k8s.api.core.v1.PersistentVolumeClaim" => roundtrip::<api::core::v1::PersistentVolumeClaim>(obj),
        "io.k8s.api.core.v1.LimitRange" => roundtrip::<api::core::v1::LimitRange>(obj),
        "io.k8s.api.core.v1.ResourceQuota" => roundtrip::<api::core::v1::ResourceQuota>(obj),
        "io.k8s.api.core.v1.PodTemplate" => roundtrip::<api::core::v1::PodTemplate>(obj),
        "io.k8s.api.apps.v1.Deployment" => roundtrip::<api::apps::v1::Deployment>(obj),
        "io.k8s.api.apps.v1.ReplicaSet" => roundtrip::<api::apps::v1::ReplicaSet>(obj),
        "io.k8s.api.apps.v1.StatefulSet" => roundtrip::<api::apps::v1::StatefulSet>(obj),
        "io.k8s.api.apps.v1.DaemonSet" => roundtrip::<api::apps::v1::DaemonSet>(obj),
        "io.k8s.api.apps.v1.ControllerRevision" => roundtrip::<api::apps::v1::ControllerRevision>(obj),
        "io.k8s.api.batch.v1.Job" => roundtrip::<api::batch::v1::Job>(obj),
        "io.k8s.api.batch.v1.CronJob" => roundtrip::<api::batch::v1::CronJob>(obj),
        "io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler" => {
            roundtrip::<api::autoscaling::v1::HorizontalPodAutoscaler>(obj)
        }
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler" => {
            roundtrip::<api::autoscaling::v2::HorizontalPodAutoscaler>(obj)
        }
        "io.k8s.api.discovery.v1.EndpointSlice" => roundtrip::<api::discovery::v1::EndpointSlice>(obj),
        "io.k8s.api.coordination.v1.Lease" => roundtrip::<api::coordination::v1::Lease>(obj),
        "io.k8s.api.events.v1.Event" => roundtrip::<api::events::v1::Event>(obj),
        "io.k8s.api.policy.v1.PodDisruptionBudget" => roundtrip::<api::policy::v1::PodDisruptionBudget>(obj),
        "io.k8s.api.networking.v1.NetworkPolicy" => roundtrip::<api::networking::v1::NetworkPolicy>(obj),
        "io.k8s.api.networking.v1.Ingress" => roundtrip::<api::networking::v1::Ingress>(obj),
        "io.k8s.api.networking.v1.IngressClass" => roundtrip::<api::networking::v1::IngressClass>(obj),
        "io.k8s.api.rbac.v1.Role" => roundtrip::<api::rbac::v1::Role>(obj),
        "io.k8s.api.rbac.v1.RoleBinding" => roundtrip::<api::rbac::v1::RoleBinding>(obj),
        "io.k8s.api.rbac.v1.ClusterRole" => roundtrip::<api::rbac::v1::ClusterRole>(obj),
        "io.k8s.api.rbac.v1.ClusterRoleBinding" => roundtrip::<api::rbac::v1::ClusterRoleBinding>(obj),
        "io.k8s.api.storage.v1.StorageClass" => roundtrip::<api::storage::v1::StorageClass>(obj),
        "io.k8s.api.node.v1.RuntimeClass" => roundtrip::<api::node::v1::RuntimeClass>(obj),
        "io.k8s.api.scheduling.v1.PriorityClass" => roundtrip::<api::scheduling::v1::PriorityClass>(obj),
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition" => {
            roundtrip::<apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(obj)
        }
        _ => return Ok(None),
    };
    out.map(Some)
}

fn roundtrip<T: DeserializeOwned + Serialize>(obj: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&typed).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drops_unknown_fields_and_rejects_wrong_types() {
        let cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}, "foo": 1});
        let out = normalize("io.k8s.api.core.v1.ConfigMap", &cm).unwrap().unwrap();
        assert_eq!(out["data"]["k"], "v");
        assert!(out.get("foo").is_none());
        let bad = json!({"metadata": {"name": "a"}, "data": {"k": 1}});
        assert!(normalize("io.k8s.api.core.v1.ConfigMap", &bad).is_err());
        assert_eq!(normalize("example.com.Widget", &cm), Ok(None));
    }
}
