//! Two `kapal server` processes on one real etcd serve the same API.

mod common;

use common::{Cluster, Etcd, eventually, kubectls};

#[test]
fn two_servers_share_one_etcd() {
    let Some(etcd) = Etcd::start() else { return };
    let a = Cluster::start_with(&["--datastore-endpoint", &etcd.endpoint]);
    let b = Cluster::start_sharing(&a, &["--datastore-endpoint", &etcd.endpoint]);
    let k = &kubectls()[kubectls().len() - 1];
    a.ok(k, &["create", "ns", "shared"]);
    a.ok(k, &["create", "cm", "from-a", "-n", "shared", "--from-literal=k=v"]);
    assert!(
        eventually(10, || b.kubectl(k, &["get", "cm", "from-a", "-n", "shared"]).status.success()),
        "B does not see A's write"
    );
    b.ok(k, &["patch", "cm", "from-a", "-n", "shared", "--type=merge", "-p", r#"{"data":{"k":"w"}}"#]);
    assert!(eventually(10, || a.ok(k, &["get", "cm", "from-a", "-n", "shared", "-o", "jsonpath={.data.k}"]) == "w"));
    // Optimistic concurrency holds across servers: a write with A's old version fails on B.
    let old = a.ok(k, &["get", "cm", "from-a", "-n", "shared", "-o", "json"]);
    a.ok(k, &["patch", "cm", "from-a", "-n", "shared", "--type=merge", "-p", r#"{"data":{"k":"x"}}"#]);
    assert!(eventually(10, || b.ok(k, &["get", "cm", "from-a", "-n", "shared", "-o", "jsonpath={.data.k}"]) == "x"));
    let out = b.fails(k, &["replace", "-f", "-"], Some(&old));
    assert!(out.contains("Conflict"), "{out}");
    // Services get distinct cluster IPs whichever server allocates them.
    for i in 0..5 {
        a.ok(k, &["create", "service", "clusterip", &format!("a{i}"), "-n", "shared", "--tcp=80"]);
        b.ok(k, &["create", "service", "clusterip", &format!("b{i}"), "-n", "shared", "--tcp=80"]);
    }
    let ips = a.ok(k, &["get", "svc", "-n", "shared", "-o", "jsonpath={.items[*].spec.clusterIP}"]);
    let mut list: Vec<&str> = ips.split_whitespace().collect();
    assert_eq!(list.len(), 10);
    list.sort();
    list.dedup();
    assert_eq!(list.len(), 10, "duplicate cluster IPs: {ips}");
    // One namespace controller (the Lease holder) empties and removes the namespace.
    b.ok(k, &["delete", "ns", "shared", "--timeout=60s"]);
    assert!(!a.kubectl(k, &["get", "ns", "shared"]).status.success());
}
