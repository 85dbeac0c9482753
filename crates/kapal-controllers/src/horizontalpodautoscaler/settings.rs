//! The HPA controller's tuning, injectable so that tests can run it fast. The defaults are
//! kube-controller-manager's `--horizontal-pod-autoscaler-*` flags.

use std::time::Duration;

/// How often and how cautiously the HPA controller scales.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `--horizontal-pod-autoscaler-sync-period`: how often every HPA is evaluated.
    pub sync_period: Duration,
    /// `--horizontal-pod-autoscaler-tolerance`: ratios this close to 1 do not scale.
    pub tolerance: f64,
    /// `--horizontal-pod-autoscaler-cpu-initialization-period`: cpu samples of pods started this
    /// recently count only once the pod has been ready for a full metrics window.
    pub cpu_initialization_period: Duration,
    /// `--horizontal-pod-autoscaler-initial-readiness-delay`: how long after start a pod that is
    /// not ready yet is taken to be still starting rather than broken.
    pub initial_readiness_delay: Duration,
    /// `--horizontal-pod-autoscaler-downscale-stabilization`: the scale-down window when an HPA
    /// sets none.
    pub downscale_stabilization: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sync_period: Duration::from_secs(15),
            tolerance: 0.1,
            cpu_initialization_period: Duration::from_secs(300),
            initial_readiness_delay: Duration::from_secs(30),
            downscale_stabilization: Duration::from_secs(300),
        }
    }
}
