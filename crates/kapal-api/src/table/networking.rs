//! `networking.k8s.io/v1` (Ingress, IngressClass, NetworkPolicy) and
//! `discovery.k8s.io/v1` EndpointSlices.

use serde_json::Value;

use super::duration::age;
use super::format::{int, items, label_selector, list_with_more, load_balancer_ingress, name, text};
use super::{AGE, Col, NAME, Printer};

pub(super) static INGRESS: Printer = Printer {
    columns: &[
        NAME,
        Col::string("Class", "The name of the IngressClass resource that should be used for additional configuration"),
        Col::string("Hosts", "Hosts that incoming requests are matched against before the ingress rule"),
        Col::string("Address", "Address is a list containing ingress points for the load-balancer"),
        Col::string("Ports", "Ports of TLS configurations that open"),
        AGE,
    ],
    cells: |obj, now| {
        let spec = &obj["spec"];
        let class = match &spec["ingressClassName"] {
            Value::String(class) => class.as_str(),
            _ => "<none>",
        };
        let ports = if items(&spec["tls"]).is_empty() { "80" } else { "80, 443" };
        vec![
            name(obj),
            Value::from(class),
            Value::from(hosts(&spec["rules"])),
            Value::from(load_balancer_ingress(&obj["status"]["loadBalancer"]["ingress"]).join(",")),
            Value::from(ports),
            age(obj, now),
        ]
    },
};

/// Up to three rule hosts; ` + N more...` counts every further rule, with a host or not.
fn hosts(rules: &Value) -> String {
    let rules = items(rules);
    let mut list = Vec::new();
    let mut more = false;
    for rule in rules {
        if list.len() == 3 {
            more = true;
        }
        let host = text(&rule["host"]);
        if !more && !host.is_empty() {
            list.push(host);
        }
    }
    if list.is_empty() {
        return "*".to_string();
    }
    let shown = list.join(",");
    if more { format!("{shown} + {} more...", rules.len() - 3) } else { shown }
}

pub(super) static INGRESS_CLASS: Printer = Printer {
    columns: &[
        NAME,
        Col::string("Controller", "Controller that is responsible for handling this class"),
        Col::string("Parameters", "A reference to a resource with additional parameters"),
        AGE,
    ],
    cells: |obj, now| {
        let spec = &obj["spec"];
        let params = &spec["parameters"];
        let parameters = if params.is_object() {
            let group = match &params["apiGroup"] {
                Value::String(group) => format!(".{group}"),
                _ => String::new(),
            };
            format!("{}{group}/{}", text(&params["kind"]), text(&params["name"]))
        } else {
            "<none>".to_string()
        };
        vec![name(obj), Value::from(text(&spec["controller"])), Value::from(parameters), age(obj, now)]
    },
};

pub(super) static NETWORK_POLICY: Printer = Printer {
    columns: &[
        NAME,
        Col::string("Pod-Selector", "podSelector selects the pods to which this NetworkPolicy object applies."),
        AGE,
    ],
    cells: |obj, now| vec![name(obj), Value::from(label_selector(&obj["spec"]["podSelector"])), age(obj, now)],
};

pub(super) static ENDPOINT_SLICE: Printer = Printer {
    columns: &[
        NAME,
        Col::string("AddressType", "addressType specifies the type of address carried by this EndpointSlice."),
        Col::string("Ports", "ports specifies the list of network ports exposed by each endpoint in this slice."),
        Col::string("Endpoints", "endpoints is a list of unique endpoints in this slice."),
        AGE,
    ],
    cells: |obj, now| {
        let ports: Vec<String> = items(&obj["ports"])
            .iter()
            .map(|p| match (&p["port"], &p["name"]) {
                (port @ Value::Number(_), _) => int(port).to_string(),
                (_, Value::String(name)) => name.clone(),
                _ => "*".to_string(),
            })
            .collect();
        let addresses: Vec<String> =
            items(&obj["endpoints"]).iter().flat_map(|e| items(&e["addresses"])).map(|a| text(a).to_string()).collect();
        vec![
            name(obj),
            Value::from(text(&obj["addressType"])),
            Value::from(list_with_more(&ports, ports.len(), 3, "<unset>")),
            Value::from(list_with_more(&addresses, addresses.len(), 3, "<unset>")),
            age(obj, now),
        ]
    },
};

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use serde_json::json;

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn ingress_row() {
        let ing = json!({
            "metadata": {"name": "web"},
            "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.example.com"]}],
                     "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.9"}, {"hostname": "lb.example.com"}]}},
        });
        let cells = (INGRESS.cells)(&ing, now());
        assert_eq!(cells.len(), INGRESS.columns.len());
        assert_eq!(
            cells[..5],
            [
                json!("web"),
                json!("nginx"),
                json!("a.example.com,b.example.com"),
                json!("10.0.0.9,lb.example.com"),
                json!("80, 443")
            ]
        );
        let bare = (INGRESS.cells)(&json!({}), now());
        assert_eq!(bare[1..5], [json!("<none>"), json!("*"), json!(""), json!("80")]);
    }

    #[test]
    fn ingress_hosts_more() {
        let rules = json!([{"host": "a"}, {}, {"host": "b"}, {"host": "c"}, {"host": "d"}, {}]);
        assert_eq!(hosts(&rules), "a,b,c + 3 more...");
        assert_eq!(hosts(&json!([{"host": "a"}, {}, {"host": "b"}, {"host": "c"}])), "a,b,c");
        assert_eq!(hosts(&json!([{}, {"host": ""}])), "*");
    }

    #[test]
    fn ingress_class_parameters() {
        let ic = json!({"spec": {"controller": "k8s.io/ingress-nginx",
                                 "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"}}});
        let cells = (INGRESS_CLASS.cells)(&ic, now());
        assert_eq!(
            cells[1..3],
            [json!("k8s.io/ingress-nginx"), json!("IngressParameters.k8s.example.com/external-lb")]
        );
        let core = json!({"spec": {"parameters": {"kind": "ConfigMap", "name": "c"}}});
        assert_eq!((INGRESS_CLASS.cells)(&core, now())[2], "ConfigMap/c");
        assert_eq!((INGRESS_CLASS.cells)(&json!({}), now())[2], "<none>");
    }

    #[test]
    fn network_policy_selector() {
        let np = json!({"spec": {"podSelector": {"matchLabels": {"role": "db"}}}});
        assert_eq!((NETWORK_POLICY.cells)(&np, now())[1], "role=db");
        assert_eq!((NETWORK_POLICY.cells)(&json!({"spec": {"podSelector": {}}}), now())[1], "<none>");
    }

    #[test]
    fn endpoint_slice_row() {
        let slice = json!({
            "metadata": {"name": "web-abc12"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80}, {"name": "metrics"}, {}, {"port": 9000}],
            "endpoints": [{"addresses": ["10.42.0.5"], "conditions": {"ready": false}}, {"addresses": ["10.42.0.6", "10.42.0.7"]}],
        });
        let cells = (ENDPOINT_SLICE.cells)(&slice, now());
        assert_eq!(cells.len(), ENDPOINT_SLICE.columns.len());
        assert_eq!(
            cells[1..4],
            [json!("IPv4"), json!("80,metrics,* + 1 more..."), json!("10.42.0.5,10.42.0.6,10.42.0.7")]
        );
        let empty = (ENDPOINT_SLICE.cells)(&json!({"addressType": "IPv6"}), now());
        assert_eq!(empty[2..4], [json!("<unset>"), json!("<unset>")]);
    }
}
