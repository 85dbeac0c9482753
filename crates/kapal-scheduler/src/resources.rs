//! Resource amounts as the scheduler counts them: pod requests (with init containers and
//! overhead) and node allocatable.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// CPU request assumed for a container without one, when scoring (upstream `DefaultMilliCPURequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory request assumed for a container without one, when scoring (upstream `DefaultMemoryRequest`).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Amounts of resources: requests of a pod, or allocatable/requested of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Number of pods (only meaningful for node allocatable).
    pub pods: i64,
    /// Extended and other scalar resources (hugepages, `example.com/gpu`, …), by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.pods += other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    /// Subtracts `other` from `self`.
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.pods -= other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Raises every amount of `self` to at least the one in `other`.
    pub fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.pods = self.pods.max(other.pods);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    /// Sets one named resource.
    pub fn set(&mut self, name: &str, quantity: &Quantity) {
        match name {
            "cpu" => self.milli_cpu = milli_value(quantity),
            "memory" => self.memory = value(quantity),
            "ephemeral-storage" => self.ephemeral_storage = value(quantity),
            "pods" => self.pods = value(quantity),
            other => {
                self.scalar.insert(other.to_string(), value(quantity));
            }
        }
    }

    /// Reads a resource list (`requests`, `allocatable`, …).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list {
            r.set(name, q);
        }
        r
    }
}

/// The value rounded up to an integer, as upstream's `Quantity.Value()`; unparsable counts as 0.
pub fn value(q: &Quantity) -> i64 {
    kapal_api::validation::quantity::parse(&q.0).map(|q| q.approx().ceil() as i64).unwrap_or(0)
}

/// The value in thousandths rounded up, as upstream's `Quantity.MilliValue()`.
pub fn milli_value(q: &Quantity) -> i64 {
    kapal_api::validation::quantity::parse(&q.0).map(|q| (q.approx() * 1000.0).ceil() as i64).unwrap_or(0)
}

/// A container's requests; limits stand in for requests that are not given, as the API's defaulting does.
fn container_requests(c: &Container) -> Resources {
    let Some(res) = &c.resources else { return Resources::default() };
    let mut r = res.limits.as_ref().map(Resources::from_list).unwrap_or_default();
    if let Some(requests) = &res.requests {
        for (name, q) in requests {
            r.set(name, q);
        }
    }
    r
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The pod's effective requests (upstream `PodRequests`): the sum over containers and sidecars,
/// at least each regular init container (plus the sidecars started before it), plus overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    requests_with(pod, container_requests)
}

/// Requests for scoring (upstream `NonMissingContainerRequests`): a container without a cpu or
/// memory request counts as 100m and 200 MiB, so that empty pods still spread.
pub fn pod_non_zero_requests(pod: &Pod) -> Resources {
    requests_with(pod, |c| {
        let mut r = container_requests(c);
        let has = |name: &str| {
            let res = c.resources.as_ref();
            res.and_then(|r| r.requests.as_ref()).is_some_and(|l| l.contains_key(name))
                || res.and_then(|r| r.limits.as_ref()).is_some_and(|l| l.contains_key(name))
        };
        if !has("cpu") {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !has("memory") {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
        r
    })
}

fn requests_with(pod: &Pod, per_container: impl Fn(&Container) -> Resources) -> Resources {
    let Some(spec) = &pod.spec else { return Resources::default() };
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&per_container(c));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = per_container(c);
        if is_sidecar(c) {
            sidecars.add(&r);
            total.add(&r);
            init_max.max_with(&sidecars);
        } else {
            let mut during = sidecars.clone();
            during.add(&r);
            init_max.max_with(&during);
        }
    }
    total.max_with(&init_max);
    if let Some(overhead) = &spec.overhead {
        total.add(&Resources::from_list(overhead));
    }
    total.pods = 0;
    total
}

/// A node's allocatable resources (capacity when allocatable is not reported).
pub fn node_allocatable(node: &Node) -> Resources {
    let status = node.status.as_ref();
    status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref())).map(Resources::from_list).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn requests_sum_containers_and_take_init_max_and_overhead() {
        let p = pod(json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m", "example.com/gpu": "1"}}},
            ],
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "1", "memory": "10Mi"}}},
            ],
            "overhead": {"cpu": "10m"},
        }));
        let r = pod_requests(&p);
        assert_eq!(r.milli_cpu, 1010);
        assert_eq!(r.memory, 1024 * 1024 * 1024);
        assert_eq!(r.scalar["example.com/gpu"], 1);
    }

    #[test]
    fn sidecars_add_to_the_sum_and_to_later_init_containers() {
        let p = pod(json!({
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
            "initContainers": [
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "300m"}}},
                {"name": "i", "resources": {"requests": {"cpu": "500m"}}},
            ],
        }));
        assert_eq!(pod_requests(&p).milli_cpu, 800);
    }

    #[test]
    fn limits_stand_in_for_missing_requests_and_defaults_apply_to_scoring() {
        let p = pod(json!({"containers": [{"name": "a", "resources": {"limits": {"cpu": "2"}}}, {"name": "b"}]}));
        assert_eq!(pod_requests(&p).milli_cpu, 2000);
        let nz = pod_non_zero_requests(&p);
        assert_eq!(nz.milli_cpu, 2100);
        assert_eq!(nz.memory, 2 * DEFAULT_MEMORY_REQUEST);
    }
}
