//! Timings of the node controllers, injectable so that tests can run them fast. The defaults are
//! kube-controller-manager's.

use std::time::Duration;

/// How often and how patiently the node lifecycle controller watches over nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `--node-monitor-period`: how often every node's health is checked.
    pub node_monitor_period: Duration,
    /// `--node-monitor-grace-period`: how long a node may go without a Lease renewal and without a
    /// status heartbeat before it is marked `Unknown`.
    pub node_monitor_grace_period: Duration,
    /// `--node-startup-grace-period`: the same for a node whose kubelet never posted its status.
    pub node_startup_grace_period: Duration,
    /// `--node-eviction-rate`: nodes per second that may newly get a NoExecute taint, per zone
    /// (burst 1), while the zone is healthy, or fully disrupted while other zones are not.
    pub node_eviction_rate: f64,
    /// `--secondary-node-eviction-rate`: the same for a partially disrupted zone larger than
    /// `large_cluster_size_threshold`; smaller partially disrupted zones get none at all.
    pub secondary_node_eviction_rate: f64,
    /// `--unhealthy-zone-threshold`: the share of not-ready nodes (with more than two of them)
    /// at which a zone counts as partially disrupted.
    pub unhealthy_zone_threshold: f64,
    /// `--large-cluster-size-threshold`: zones with more nodes than this keep tainting at the
    /// secondary rate when partially disrupted.
    pub large_cluster_size_threshold: usize,
    /// `--controllers`: which controllers run, as kube-controller-manager spells it: `*` for
    /// all, `name` to enable one, `-name` to disable one.
    pub controllers: Vec<String>,
}

impl Settings {
    /// Whether the controller `name` is enabled.
    pub fn enabled(&self, name: &str) -> bool {
        if self.controllers.iter().any(|c| c.strip_prefix('-') == Some(name)) {
            return false;
        }
        self.controllers.iter().any(|c| c == "*" || c == name)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            node_monitor_period: Duration::from_secs(5),
            node_monitor_grace_period: Duration::from_secs(50),
            node_startup_grace_period: Duration::from_secs(60),
            node_eviction_rate: 0.1,
            secondary_node_eviction_rate: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_size_threshold: 50,
            controllers: vec!["*".into()],
        }
    }
}
