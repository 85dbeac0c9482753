//! EndpointSlices (`pkg/apis/discovery/validation`): address type, addresses, ports.

use std::collections::HashSet;

use serde_json::Value;

use super::names::{NameRule, is_dns1123_label, is_dns1123_subdomain, is_qualified_name, parse_ip_sloppy};
use super::path::Path;
use super::report::check_enum;
use super::report::{
    Errs, duplicate_str, immutable_raw, invalid_str, items, not_supported, required, str_list, str_or_empty, too_many,
};

const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
const MAX_ADDRESSES: usize = 100;

fn validate_address(address: &str, address_type: &str, p: &Path, errs: &mut Errs) {
    let ip = parse_ip_sloppy(address);
    match address_type {
        "IPv4" if !ip.is_some_and(|ip| ip.is_ipv4()) => {
            errs.push(invalid_str(p, address, "must be a valid IPv4 address"))
        }
        "IPv6" if !ip.is_some_and(|ip| ip.is_ipv6()) => {
            errs.push(invalid_str(p, address, "must be a valid IPv6 address"))
        }
        "FQDN" => {
            let name = address.strip_suffix('.').unwrap_or(address);
            if name.is_empty() {
                errs.push(super::report::required(p, ""));
            } else if !is_dns1123_subdomain(name).is_empty() {
                errs.push(invalid_str(p, name, &is_dns1123_subdomain(name).join(",")));
            } else if !name.contains('.') {
                errs.push(invalid_str(p, name, "should be a domain with at least two segments separated by dots"));
            }
        }
        _ => {}
    }
}

/// `ValidateEndpointSlice` beyond metadata.
pub(crate) fn validate_endpoint_slice(slice: &Value, errs: &mut Errs) {
    let root = Path::new("");
    let address_type = str_or_empty(slice, "addressType", &root, errs);
    let ap = Path::new("addressType");
    if address_type.is_empty() {
        errs.push(required(&ap, ""));
    } else if !ADDRESS_TYPES.contains(&address_type) {
        errs.push(not_supported(&ap, address_type, ADDRESS_TYPES));
    }
    let ep = Path::new("endpoints");
    for (i, endpoint) in items(slice, "endpoints", &root, errs).iter().enumerate() {
        let p = ep.index(i);
        let addresses = str_list(endpoint, "addresses", &p, errs);
        let addr_path = p.child("addresses");
        if addresses.is_empty() {
            errs.push(required(&addr_path, "must contain at least 1 address"));
        } else if addresses.len() > MAX_ADDRESSES {
            errs.push(too_many(&addr_path, addresses.len(), MAX_ADDRESSES));
        }
        for (j, address) in addresses.iter().enumerate() {
            validate_address(address, address_type, &addr_path.index(j), errs);
        }
        if let Some(hostname) = endpoint.get("hostname").and_then(Value::as_str) {
            for msg in is_dns1123_label(hostname) {
                errs.push(invalid_str(&p.child("hostname"), hostname, &msg));
            }
        }
        if let Some(node) = endpoint.get("nodeName").and_then(Value::as_str) {
            for msg in NameRule::DnsSubdomain.check(node, false) {
                errs.push(invalid_str(&p.child("nodeName"), node, &msg));
            }
        }
    }
    let pp = Path::new("ports");
    let mut names: HashSet<&str> = HashSet::new();
    for (i, port) in items(slice, "ports", &root, errs).iter().enumerate() {
        let p = pp.index(i);
        let name = str_or_empty(port, "name", &p, errs);
        if !name.is_empty() {
            for msg in is_dns1123_label(name) {
                errs.push(invalid_str(&p.child("name"), name, &msg));
            }
        }
        if !names.insert(name) {
            errs.push(duplicate_str(&p.child("name"), name));
        }
        check_enum(port, "protocol", &p, &["SCTP", "TCP", "UDP"], errs);
        if let Some(app) = port.get("appProtocol").and_then(Value::as_str) {
            for msg in is_qualified_name(app) {
                errs.push(invalid_str(&p.child("appProtocol"), app, &msg));
            }
        }
    }
}

/// `addressType` may not change.
pub(crate) fn validate_endpoint_slice_update(new: &Value, old: &Value, errs: &mut Errs) {
    let t = |v: &Value| v.get("addressType").and_then(Value::as_str).unwrap_or("").to_string();
    if t(new) != t(old) {
        errs.push(immutable_raw(&Path::new("addressType"), &super::report::go_quote(&t(new))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(slice: Value) -> Vec<String> {
        let mut errs = Vec::new();
        validate_endpoint_slice(&slice, &mut errs);
        errs.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn address_types_and_addresses() {
        assert!(
            msgs(json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.42.0.5"]}], "ports": [{"port": 80}]}))
                .is_empty()
        );
        assert_eq!(msgs(json!({})), ["addressType: Required value"]);
        assert_eq!(
            msgs(json!({"addressType": "IPv5", "endpoints": [{"addresses": []}]})),
            [
                "addressType: Unsupported value: \"IPv5\": supported values: \"FQDN\", \"IPv4\", \"IPv6\"",
                "endpoints[0].addresses: Required value: must contain at least 1 address",
            ]
        );
        assert_eq!(
            msgs(json!({"addressType": "IPv4", "endpoints": [{"addresses": ["::1"]}], "ports": [{}, {}]})),
            [
                "endpoints[0].addresses[0]: Invalid value: \"::1\": must be a valid IPv4 address",
                "ports[1].name: Duplicate value: \"\"",
            ]
        );
    }

    #[test]
    fn address_type_is_immutable() {
        let mut errs = Vec::new();
        validate_endpoint_slice_update(&json!({"addressType": "IPv6"}), &json!({"addressType": "IPv4"}), &mut errs);
        assert_eq!(errs[0].message, "Invalid value: \"IPv6\": field is immutable");
    }
}
