//! The `FailedScheduling` message (upstream `FitError.Error()`): a histogram of per-node reasons.

use std::collections::{BTreeMap, HashMap};

/// Upstream `ErrNoNodesAvailable`.
pub const NO_NODES: &str = "no nodes available to schedule pods";

/// Why a pod fits nowhere: how many nodes gave each reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnosis {
    /// Nodes in the snapshot.
    pub num_nodes: usize,
    /// Reason → number of nodes that gave it.
    pub reasons: BTreeMap<String, usize>,
    /// Each rejected node's reasons (for preemption).
    pub per_node: HashMap<String, Vec<String>>,
}

impl Diagnosis {
    /// Counts one node's reasons.
    pub fn add(&mut self, reasons: Vec<String>) {
        for r in reasons {
            *self.reasons.entry(r).or_default() += 1;
        }
    }

    /// Counts one node's reasons and remembers them for that node.
    pub fn add_node(&mut self, node: &str, reasons: Vec<String>) {
        for r in &reasons {
            *self.reasons.entry(r.clone()).or_default() += 1;
        }
        self.per_node.insert(node.to_string(), reasons);
    }

    /// `0/<N> nodes are available: <count> <reason>, ….` with the entries sorted as strings.
    pub fn message(&self) -> String {
        if self.num_nodes == 0 {
            return NO_NODES.to_string();
        }
        let mut entries: Vec<String> = self.reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        entries.sort();
        format!("0/{} nodes are available: {}.", self.num_nodes, entries.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(n: usize, reasons: &[(&str, usize)]) -> Diagnosis {
        Diagnosis {
            num_nodes: n,
            reasons: reasons.iter().map(|(r, c)| (r.to_string(), *c)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn one_reason() {
        assert_eq!(diag(3, &[("Insufficient cpu", 3)]).message(), "0/3 nodes are available: 3 Insufficient cpu.");
    }

    #[test]
    fn entries_sort_as_strings_including_the_count() {
        let d = diag(
            13,
            &[
                ("node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }", 1),
                ("Insufficient cpu", 2),
                ("Insufficient memory", 10),
            ],
        );
        // "10 …" sorts before "2 …" because the comparison is on strings.
        assert_eq!(
            d.message(),
            "0/13 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, \
             10 Insufficient memory, 2 Insufficient cpu."
        );
    }

    #[test]
    fn a_node_with_several_reasons_counts_in_each() {
        let mut d = Diagnosis { num_nodes: 2, ..Default::default() };
        d.add(vec!["Insufficient cpu".into(), "Insufficient memory".into()]);
        d.add(vec!["Insufficient cpu".into()]);
        assert_eq!(d.message(), "0/2 nodes are available: 1 Insufficient memory, 2 Insufficient cpu.");
    }

    #[test]
    fn no_nodes_at_all() {
        assert_eq!(diag(0, &[]).message(), "no nodes available to schedule pods");
    }
}
