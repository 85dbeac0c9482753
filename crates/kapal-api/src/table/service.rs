//! Services and (v1) Endpoints.

use jiff::Timestamp;
use serde_json::Value;

use super::duration::age;
use super::format::{int, items, join_host_port, labels, list_with_more, load_balancer_ingress, name, or_none, text};
use super::{AGE, Col, NAME, Printer};

pub(super) static SERVICE: Printer = Printer {
    columns: &[
        NAME,
        Col::string(
            "Type",
            "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer.",
        ),
        Col::string("Cluster-IP", "clusterIP is the IP address of the service and is usually assigned randomly."),
        Col::string(
            "External-IP",
            "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
        ),
        Col::string("Port(s)", "The list of ports that are exposed by this service."),
        AGE,
        Col::string("Selector", "Route service traffic to pods with label keys and values matching this selector.")
            .wide(),
    ],
    cells: service,
};

fn service(obj: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &obj["spec"];
    // Service defaulting sets the type to ClusterIP and fills clusterIPs from clusterIP.
    let kind = match text(&spec["type"]) {
        "" => "ClusterIP",
        t => t,
    };
    let cluster_ip = match items(&spec["clusterIPs"]).first() {
        Some(ip) => text(ip).to_string(),
        None => or_none(text(&spec["clusterIP"])),
    };
    vec![
        name(obj),
        Value::from(kind),
        Value::from(cluster_ip),
        Value::from(external_ip(obj, kind)),
        Value::from(or_none(&ports(&spec["ports"]))),
        age(obj, now),
        Value::from(labels(&spec["selector"])),
    ]
}

/// The EXTERNAL-IP cell, which depends on the service type.
fn external_ip(obj: &Value, kind: &str) -> String {
    let spec = &obj["spec"];
    let external: Vec<&str> = items(&spec["externalIPs"]).iter().map(text).collect();
    match kind {
        "ClusterIP" | "NodePort" if external.is_empty() => "<none>".to_string(),
        "ClusterIP" | "NodePort" => external.join(","),
        "LoadBalancer" => {
            let mut all = load_balancer_ingress(&obj["status"]["loadBalancer"]["ingress"]);
            all.extend(external.iter().map(|s| s.to_string()));
            if all.is_empty() { "<pending>".to_string() } else { all.join(",") }
        }
        "ExternalName" => text(&spec["externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// `80/TCP,443:30443/TCP`.
fn ports(ports: &Value) -> String {
    items(ports)
        .iter()
        .map(|p| {
            // Port defaulting sets the protocol to TCP.
            let protocol = match text(&p["protocol"]) {
                "" => "TCP",
                proto => proto,
            };
            match int(&p["nodePort"]) {
                node_port if node_port > 0 => format!("{}:{node_port}/{protocol}", int(&p["port"])),
                _ => format!("{}/{protocol}", int(&p["port"])),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) static ENDPOINTS: Printer = Printer {
    columns: &[NAME, Col::string("Endpoints", "The set of all endpoints is the union of all subsets."), AGE],
    cells: |obj, now| vec![name(obj), Value::from(endpoints(&obj["subsets"])), age(obj, now)],
};

/// Up to three ready `ip:port` pairs (or bare IPs for port-less subsets), then ` + N more...`.
fn endpoints(subsets: &Value) -> String {
    let subsets = items(subsets);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut list = Vec::new();
    for subset in subsets {
        let addresses = items(&subset["addresses"]);
        let ports = items(&subset["ports"]);
        if ports.is_empty() {
            list.extend(addresses.iter().map(|a| text(&a["ip"]).to_string()));
            continue;
        }
        for port in ports {
            list.extend(addresses.iter().map(|a| join_host_port(text(&a["ip"]), int(&port["port"]))));
        }
    }
    list_with_more(&list, list.len(), 3, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    fn row(svc: Value) -> Vec<Value> {
        let cells = (SERVICE.cells)(&svc, now());
        assert_eq!(cells.len(), SERVICE.columns.len());
        cells
    }

    #[test]
    fn cluster_ip_service() {
        let svc = json!({
            "metadata": {"name": "web", "creationTimestamp": "2025-06-01T11:59:15Z"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.43.0.12", "clusterIPs": ["10.43.0.12"],
                     "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}],
                     "selector": {"app": "web", "tier": "front"}},
        });
        assert_eq!(
            row(svc),
            vec![
                json!("web"),
                json!("ClusterIP"),
                json!("10.43.0.12"),
                json!("<none>"),
                json!("80/TCP,443/TCP"),
                json!("45s"),
                json!("app=web,tier=front")
            ]
        );
    }

    #[test]
    fn node_port_headless_and_defaults() {
        let svc = json!({"spec": {"type": "NodePort", "clusterIPs": ["10.43.0.5"], "externalIPs": ["1.2.3.4", "5.6.7.8"],
                                  "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]}});
        let cells = row(svc);
        assert_eq!(
            cells[1..5],
            [json!("NodePort"), json!("10.43.0.5"), json!("1.2.3.4,5.6.7.8"), json!("80:30080/TCP,53/UDP")]
        );

        let headless = json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"]}});
        assert_eq!(row(headless)[1..5], [json!("ClusterIP"), json!("None"), json!("<none>"), json!("<none>")]);

        // Objects written before clusterIPs existed.
        assert_eq!(row(json!({"spec": {"clusterIP": "10.43.0.9"}}))[2], "10.43.0.9");
        assert_eq!(row(json!({}))[6], "<none>");
    }

    #[test]
    fn load_balancer_external_ips() {
        let pending = json!({"spec": {"type": "LoadBalancer", "clusterIPs": ["10.43.0.7"]}});
        assert_eq!(row(pending)[3], "<pending>");
        let lb = json!({"spec": {"type": "LoadBalancer", "externalIPs": ["9.9.9.9"]},
                        "status": {"loadBalancer": {"ingress": [{"ip": "5.5.5.5"}, {"hostname": "lb.example.com"}, {"ip": "1.1.1.1"}, {"ip": "5.5.5.5"}]}}});
        assert_eq!(row(lb)[3], "1.1.1.1,5.5.5.5,lb.example.com,9.9.9.9");
    }

    #[test]
    fn external_name_and_unknown_types() {
        let svc = json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(row(svc)[2..4], [json!("<none>"), json!("db.example.com")]);
        assert_eq!(row(json!({"spec": {"type": "Weird"}}))[3], "<unknown>");
    }

    #[test]
    fn endpoints_list_three_then_more() {
        let ep = json!({"subsets": [
            {"addresses": [{"ip": "10.42.0.1"}, {"ip": "10.42.0.2"}], "notReadyAddresses": [{"ip": "10.42.0.9"}],
             "ports": [{"port": 80}, {"port": 443}]},
            {"addresses": [{"ip": "fd00::1"}]},
        ]});
        assert_eq!(endpoints(&ep["subsets"]), "10.42.0.1:80,10.42.0.2:80,10.42.0.1:443 + 2 more...");
        let small = json!([{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 8080}]}]);
        assert_eq!(endpoints(&small), "[fd00::1]:8080");
        assert_eq!(endpoints(&json!([])), "<none>");
        assert_eq!(endpoints(&json!([{"notReadyAddresses": [{"ip": "1.1.1.1"}], "ports": [{"port": 1}]}])), "");
        assert_eq!((ENDPOINTS.cells)(&json!({}), now()).len(), ENDPOINTS.columns.len());
    }
}
