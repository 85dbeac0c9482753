//! NodePorts and NodeName filters.

use crate::cache::NodeInfo;
use crate::podinfo::PodInfo;

/// Upstream NodePorts `ErrReason`.
pub const PORTS_REASON: &str = "node(s) didn't have free ports for the requested pod ports";
/// Upstream NodeName `ErrReason`.
pub const NAME_REASON: &str = "node(s) didn't match the requested node name";

/// NodePorts: every requested host port must be free on the node.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Option<Vec<String>> {
    let conflict = pod.host_ports.iter().any(|p| node.used_ports.iter().any(|u| u.conflicts(p)));
    conflict.then(|| vec![PORTS_REASON.to_string()])
}

/// NodeName: a pod naming a node fits only there.
pub fn filter_name(pod: &PodInfo, node: &NodeInfo) -> Option<Vec<String>> {
    pod.node_name().is_some_and(|n| n != node.name).then(|| vec![NAME_REASON.to_string()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node_with_pods, pod};
    use serde_json::json;

    fn on_port(port: i32, ip: Option<&str>, protocol: &str) -> PodInfo {
        pod(
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip, "protocol": protocol}]}]}),
        )
    }

    #[test]
    fn host_ports_conflict_per_protocol_and_address() {
        let n = node_with_pods(json!({"pods": "10"}), &[on_port(8080, Some("10.0.0.1"), "TCP")]);
        assert_eq!(filter(&on_port(8080, None, "TCP"), &n).unwrap(), [PORTS_REASON]);
        assert!(filter(&on_port(8080, Some("10.0.0.1"), "TCP"), &n).is_some());
        assert!(filter(&on_port(8080, Some("10.0.0.2"), "TCP"), &n).is_none());
        assert!(filter(&on_port(8080, None, "UDP"), &n).is_none());
        assert!(filter(&on_port(8081, None, "TCP"), &n).is_none());
    }

    #[test]
    fn node_name_must_match() {
        let n = node_with_pods(json!({"pods": "10"}), &[]);
        assert!(filter_name(&pod(json!({"nodeName": "other"})), &n).is_some());
        assert!(filter_name(&pod(json!({"nodeName": "n"})), &n).is_none());
        assert!(filter_name(&pod(json!({})), &n).is_none());
    }
}
