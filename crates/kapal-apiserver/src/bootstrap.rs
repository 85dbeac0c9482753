//! Objects every cluster has from the start: the four system namespaces and the `kubernetes`
//! Service with its endpoints. Written through the normal write path, as upstream's
//! bootstrap controller does.

use std::sync::Arc;

use anyhow::{Result, anyhow};
use http::{HeaderMap, Method};
use kapal_api::ApiError;
use serde_json::{Value, json};

use crate::ApiServer;
use crate::auth::User;
use crate::handlers::Ctx;
use crate::http::Query;
use crate::route::ResourcePath;

pub(crate) fn target(group: &str, version: &str, plural: &str, ns: Option<&str>, name: Option<&str>) -> ResourcePath {
    ResourcePath {
        group: group.into(),
        version: version.into(),
        namespace: ns.map(String::from),
        plural: plural.into(),
        name: name.map(String::from),
        subresource: None,
    }
}

impl ApiServer {
    pub(crate) fn internal_ctx(&self, method: Method, path: ResourcePath, body: &Value) -> Result<Ctx, ApiError> {
        let plural = path.plural.clone();
        let served = self
            .resources
            .snapshot()
            .get(&path.group, &path.version, &path.plural)
            .cloned()
            .ok_or_else(|| ApiError::internal(format!("{plural} is not served")))?;
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        Ok(Ctx {
            method,
            headers,
            query: Query(vec![("fieldManager".into(), "kapal-bootstrap".into())]),
            user: User::new("system:kapal", &["system:masters"]),
            path,
            served,
            body: serde_json::to_vec(body).unwrap_or_default().into(),
        })
    }

    /// Creates an object unless it exists.
    async fn ensure(&self, group: &str, version: &str, plural: &str, ns: Option<&str>, obj: Value) -> Result<()> {
        let ctx = self
            .internal_ctx(Method::POST, target(group, version, plural, ns, None), &obj)
            .map_err(|e| anyhow!("{e}"))?;
        match self.create(&ctx).await {
            Ok(_) => Ok(()),
            Err(e) if e.reason == "AlreadyExists" => Ok(()),
            Err(e) => Err(anyhow!("creating {plural} at start-up: {e}")),
        }
    }

    /// Creates or replaces an object.
    async fn put(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        ns: Option<&str>,
        name: &str,
        obj: Value,
    ) -> Result<()> {
        let ctx = self
            .internal_ctx(Method::PUT, target(group, version, plural, ns, Some(name)), &obj)
            .map_err(|e| anyhow!("{e}"))?;
        self.update(&ctx).await.map(|_| ()).map_err(|e| anyhow!("writing {plural}/{name} at start-up: {e}"))
    }
}

pub(crate) async fn run(api: &Arc<ApiServer>, advertise: &str, port: u16) -> Result<()> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        api.ensure(
            "",
            "v1",
            "namespaces",
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let ip = api.service_cidr.nth(1).to_string();
    api.ensure(
        "",
        "v1",
        "services",
        Some("default"),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "labels": labels},
            "spec": {"clusterIP": ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}], "sessionAffinity": "None", "type": "ClusterIP"}
        }),
    )
    .await?;
    api.put(
        "",
        "v1",
        "endpoints",
        Some("default"),
        "kubernetes",
        json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": advertise}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]
        }),
    )
    .await?;
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "kapal-apiserver"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [advertise], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]
    });
    let ctx = api
        .internal_ctx(
            Method::PUT,
            target("discovery.k8s.io", "v1", "endpointslices", Some("default"), Some("kubernetes")),
            &slice,
        )
        .map_err(|e| anyhow!("{e}"))?;
    match api.update(&ctx).await {
        Ok(_) => {}
        Err(e) if e.code == 404 => {
            api.ensure("discovery.k8s.io", "v1", "endpointslices", Some("default"), slice).await?
        }
        Err(e) => return Err(anyhow!("writing the kubernetes EndpointSlice: {e}")),
    }
    if let Some(ca) = api.ca_pem() {
        api.ensure(
            "",
            "v1",
            "configmaps",
            Some("kube-public"),
            cluster_info(&format!("https://{advertise}:{port}"), &ca),
        )
        .await?;
    }
    Ok(())
}

/// `kube-public/cluster-info` as kubeadm writes it: a kubeconfig without credentials, naming the
/// server and its CA. The controller manager publishes that CA as `kube-root-ca.crt` in every
/// namespace.
fn cluster_info(server: &str, ca_pem: &str) -> Value {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    certificate-authority-data: {ca}\n    server: {server}\ncontexts: null\ncurrent-context: \"\"\npreferences: {{}}\nusers: null\n"
    );
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cluster-info", "namespace": "kube-public"},
        "data": {"kubeconfig": kubeconfig}})
}
