//! End-to-end: the scheduler and controllers of `kapal server` with simulated nodes
//! (`kapal agent --simulate`), driven by real kubectl 1.27 and 1.33 the way users drive
//! Kubernetes: rollouts, scaling, rollbacks, drains, Jobs and Service endpoints.

mod common;

use common::{Cluster, eventually, kubectls};

#[test]
fn deployments_roll_out_scale_roll_back_and_clean_up() {
    let c = Cluster::start();
    let _nodes = c.simulated_nodes("sim", 3);
    for (i, k) in kubectls().iter().enumerate() {
        let ns = format!("deploy{i}");
        c.ok(k, &["create", "namespace", &ns]);
        c.ok(k, &["create", "deployment", "web", "-n", &ns, "--image=busybox:1", "--replicas=3"]);
        let out = c.ok(k, &["rollout", "status", "deployment/web", "-n", &ns, "--timeout=60s"]);
        assert!(out.contains("successfully rolled out"), "{out}");

        c.ok(k, &["scale", "deployment/web", "-n", &ns, "--replicas=5"]);
        c.ok(k, &["rollout", "status", "deployment/web", "-n", &ns, "--timeout=60s"]);
        let ready = c.ok(k, &["get", "deployment", "web", "-n", &ns, "-o", "jsonpath={.status.readyReplicas}"]);
        assert_eq!(ready, "5");

        c.ok(k, &["set", "image", "deployment/web", "-n", &ns, "busybox=busybox:2"]);
        let out = c.ok(k, &["rollout", "status", "deployment/web", "-n", &ns, "--timeout=60s"]);
        assert!(out.contains("successfully rolled out"), "{out}");
        let history = c.ok(k, &["rollout", "history", "deployment/web", "-n", &ns]);
        assert!(
            history.contains("REVISION") && history.lines().filter(|l| l.starts_with(['1', '2'])).count() == 2,
            "{history}"
        );
        let images = c
            .ok(k, &["get", "pods", "-n", &ns, "-l", "app=web", "-o", "jsonpath={.items[*].spec.containers[0].image}"]);
        assert!(
            eventually(30, || {
                let images = c.ok(
                    k,
                    &[
                        "get",
                        "pods",
                        "-n",
                        &ns,
                        "-l",
                        "app=web",
                        "--field-selector=status.phase=Running",
                        "-o",
                        "jsonpath={.items[*].spec.containers[0].image}",
                    ],
                );
                images.split_whitespace().filter(|i| *i == "busybox:2").count() == 5
            }),
            "{images}"
        );

        c.ok(k, &["rollout", "undo", "deployment/web", "-n", &ns]);
        c.ok(k, &["rollout", "status", "deployment/web", "-n", &ns, "--timeout=60s"]);
        let image = c.ok(
            k,
            &["get", "deployment", "web", "-n", &ns, "-o", "jsonpath={.spec.template.spec.containers[0].image}"],
        );
        assert_eq!(image, "busybox:1");
        let rs = c.ok(k, &["get", "replicasets", "-n", &ns, "-o", "name"]);
        assert_eq!(rs.lines().count(), 2, "the rollback reuses the first ReplicaSet: {rs}");

        let pods = c.ok(k, &["get", "pods", "-n", &ns, "-o", "wide"]);
        assert!(pods.contains("Running") && pods.contains("sim-"), "{pods}");
        let events = c.ok(k, &["get", "events", "-n", &ns]);
        assert!(events.contains("ScalingReplicaSet") && events.contains("Scheduled"), "{events}");

        c.ok(k, &["delete", "deployment", "web", "-n", &ns]);
        assert!(
            eventually(30, || c.ok(k, &["get", "pods,replicasets", "-n", &ns, "-o", "name"]).trim().is_empty()),
            "the garbage collector removes the deployment's ReplicaSets and pods"
        );
    }
}

#[test]
fn drain_evicts_pods_within_their_disruption_budget() {
    let c = Cluster::start();
    let _nodes = c.simulated_nodes("drain", 2);
    let k = &kubectls()[kubectls().len() - 1];
    c.ok(k, &["create", "deployment", "web", "--image=busybox", "--replicas=4"]);
    c.ok(k, &["rollout", "status", "deployment/web", "--timeout=60s"]);
    c.ok(k, &["create", "poddisruptionbudget", "web", "--selector=app=web", "--min-available=3"]);
    assert!(eventually(30, || {
        c.ok(k, &["get", "pdb", "web", "-o", "jsonpath={.status.disruptionsAllowed}"]) == "1"
    }));
    let out = c.ok(k, &["drain", "drain-0", "--ignore-daemonsets", "--timeout=90s"]);
    assert!(out.contains("drained"), "{out}");
    let node = c.ok(k, &["get", "node", "drain-0"]);
    assert!(node.contains("SchedulingDisabled"), "{node}");
    let on_drained = c.ok(k, &["get", "pods", "--field-selector=spec.nodeName=drain-0", "-o", "name"]);
    assert!(on_drained.trim().is_empty(), "{on_drained}");
    c.ok(k, &["rollout", "status", "deployment/web", "--timeout=60s"]);
    c.ok(k, &["uncordon", "drain-0"]);
}

#[test]
fn jobs_complete_and_services_get_endpoints() {
    let c = Cluster::start();
    let _nodes = c.simulated_nodes("work", 2);
    for (i, k) in kubectls().iter().enumerate() {
        let ns = format!("jobs{i}");
        c.ok(k, &["create", "namespace", &ns]);
        c.ok(k, &["create", "job", "once", "-n", &ns, "--image=busybox", "--", "true"]);
        let out = c.ok(k, &["wait", "--for=condition=Complete", "job/once", "-n", &ns, "--timeout=60s"]);
        assert!(out.contains("condition met"), "{out}");
        let jobs = c.ok(k, &["get", "jobs", "-n", &ns]);
        assert!(jobs.contains("1/1"), "{jobs}");

        c.ok(k, &["create", "deployment", "api", "-n", &ns, "--image=busybox", "--replicas=2", "--port=8080"]);
        c.ok(k, &["expose", "deployment", "api", "-n", &ns, "--port=80", "--target-port=8080"]);
        c.ok(k, &["rollout", "status", "deployment/api", "-n", &ns, "--timeout=60s"]);
        assert!(eventually(30, || {
            let addresses = c.ok(
                k,
                &[
                    "get",
                    "endpointslices",
                    "-n",
                    &ns,
                    "-l",
                    "kubernetes.io/service-name=api",
                    "-o",
                    "jsonpath={.items[*].endpoints[*].addresses[0]}",
                ],
            );
            addresses.split_whitespace().count() == 2
        }));
        let endpoints = c.ok(k, &["get", "endpoints", "api", "-n", &ns]);
        assert!(endpoints.contains(":8080"), "{endpoints}");
        let sa = c.ok(k, &["get", "serviceaccount", "default", "-n", &ns, "-o", "name"]);
        assert_eq!(sa.trim(), "serviceaccount/default");
        assert!(
            eventually(30, || {
                let ca = c.kubectl(
                    k,
                    &["get", "configmap", "kube-root-ca.crt", "-n", &ns, "-o", "jsonpath={.data.ca\\.crt}"],
                );
                String::from_utf8_lossy(&ca.stdout).contains("BEGIN CERTIFICATE")
            }),
            "kube-root-ca.crt carries the cluster CA"
        );
        let selector = c.ok(k, &["get", "job", "once", "-n", &ns, "-o", "jsonpath={.spec.selector.matchLabels}"]);
        assert!(selector.contains("batch.kubernetes.io/controller-uid"), "{selector}");
    }
}
