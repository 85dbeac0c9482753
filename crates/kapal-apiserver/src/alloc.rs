//! Cluster IP and node port allocation for Services.
//!
//! Each allocated value is a key in the store (`/registry/ranges/serviceips/10.43.0.7`),
//! created with create-if-absent, so two servers on one store can never hand out the same
//! address. Keys are released when the Service lets go of them.

use std::net::Ipv4Addr;

use kapal_api::{ApiError, Cause};
use rand::Rng;
use serde_json::{Value, json};

use crate::ApiServer;
use crate::resources::Served;

const IP_PREFIX: &str = "/registry/ranges/serviceips/";
const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";

/// The service network: a base address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCidr {
    pub base: Ipv4Addr,
    pub bits: u8,
}

impl ServiceCidr {
    pub fn parse(s: &str) -> Result<ServiceCidr, String> {
        let (ip, bits) = s.split_once('/').ok_or_else(|| format!("{s:?} is not a CIDR (want a.b.c.d/n)"))?;
        let base: Ipv4Addr = ip.parse().map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| (8..=30).contains(b))
            .ok_or_else(|| format!("prefix length {bits:?} must be 8..30"))?;
        let mask = u32::MAX << (32 - bits);
        Ok(ServiceCidr { base: Ipv4Addr::from(u32::from(base) & mask), bits })
    }

    fn size(&self) -> u32 {
        1u32 << (32 - self.bits)
    }

    /// The n-th address of the range (1 is the `kubernetes` Service, 10 the DNS Service).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + n)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.bits);
        u32::from(ip) & mask == u32::from(self.base)
    }

    /// Addresses below this offset are left for static assignment, as upstream does.
    fn dynamic_start(&self) -> u32 {
        (self.size() / 16).clamp(16, 256)
    }
}

/// The node port range (inclusive).
pub const NODE_PORTS: (u16, u16) = (30000, 32767);

fn wants_cluster_ip(svc: &Value) -> bool {
    svc.pointer("/spec/type").and_then(Value::as_str) != Some("ExternalName")
}

fn wants_node_ports(svc: &Value) -> bool {
    matches!(svc.pointer("/spec/type").and_then(Value::as_str), Some("NodePort" | "LoadBalancer"))
}

fn node_ports(svc: &Value) -> Vec<u16> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| ps.iter().filter_map(|p| p["nodePort"].as_u64()).filter_map(|p| u16::try_from(p).ok()).collect())
        .unwrap_or_default()
}

fn cluster_ip(svc: &Value) -> Option<Ipv4Addr> {
    svc.pointer("/spec/clusterIP").and_then(Value::as_str).and_then(|s| s.parse().ok())
}

impl ApiServer {
    /// Allocates what a Service being created or updated needs. Returns the keys newly taken.
    pub(crate) async fn allocate(
        &self,
        served: &Served,
        obj: &mut Value,
        old: Option<&Value>,
        dry_run: bool,
    ) -> Result<Vec<String>, ApiError> {
        if served.is_custom() || !served.info.group.is_empty() || served.info.kind != "Service" {
            return Ok(Vec::new());
        }
        let mut taken = Vec::new();
        let result = self.allocate_service(obj, old, dry_run, &mut taken).await;
        if result.is_err() {
            self.release(&taken).await;
        }
        result.map(|_| taken)
    }

    async fn allocate_service(
        &self,
        svc: &mut Value,
        old: Option<&Value>,
        dry_run: bool,
        taken: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        let name = crate::objects::name(svc).unwrap_or_default().to_string();
        let owner = format!("{}/{name}", crate::objects::namespace(svc).unwrap_or_default());
        let invalid = |field: &str, value: Value, detail: String| {
            ApiError::invalid("", "Service", &name, vec![Cause::invalid(field, &value, &detail)])
        };
        if wants_cluster_ip(svc) {
            let requested = svc.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or_default().to_string();
            let old_ip =
                old.and_then(|o| o.pointer("/spec/clusterIP")).and_then(Value::as_str).unwrap_or_default().to_string();
            if requested.is_empty() && !old_ip.is_empty() {
                svc["spec"]["clusterIP"] = json!(old_ip);
            } else if requested == "None" || (!requested.is_empty() && requested == old_ip) {
                // Headless, or unchanged.
            } else if requested.is_empty() {
                let ip = self.allocate_ip(&owner, dry_run, taken).await?;
                svc["spec"]["clusterIP"] = json!(ip.to_string());
            } else {
                let ip: Ipv4Addr = requested.parse().map_err(|_| {
                    invalid(
                        "spec.clusterIPs",
                        json!([requested]),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".into(),
                    )
                })?;
                if !self.service_cidr.contains(ip) {
                    let range = format!("{}/{}", self.service_cidr.base, self.service_cidr.bits);
                    return Err(invalid(
                        "spec.clusterIPs",
                        json!([requested]),
                        format!(
                            "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}"
                        ),
                    ));
                }
                if !self.reserve(&format!("{IP_PREFIX}{ip}"), &owner, dry_run, taken).await? {
                    return Err(invalid(
                        "spec.clusterIPs",
                        json!([requested]),
                        format!("failed to allocate IP {ip}: provided IP is already allocated"),
                    ));
                }
            }
            if let Some(ip) = svc.pointer("/spec/clusterIP").cloned() {
                svc["spec"]["clusterIPs"] = json!([ip]);
            }
        }
        if wants_node_ports(svc) {
            let old_ports = old.map(node_ports).unwrap_or_default();
            let old_by_port: Vec<(Value, Value, Value)> = old
                .and_then(|o| o.pointer("/spec/ports").and_then(Value::as_array).cloned())
                .unwrap_or_default()
                .into_iter()
                .map(|p| (p["port"].clone(), p["protocol"].clone(), p["nodePort"].clone()))
                .collect();
            let count = svc.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len);
            for i in 0..count {
                let port = svc["spec"]["ports"][i].clone();
                let requested = port["nodePort"].as_u64().and_then(|p| u16::try_from(p).ok());
                match requested {
                    Some(p) if old_ports.contains(&p) => {}
                    Some(p) => {
                        if !(NODE_PORTS.0..=NODE_PORTS.1).contains(&p) {
                            return Err(invalid(
                                &format!("spec.ports[{i}].nodePort"),
                                json!(p),
                                format!(
                                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                                    NODE_PORTS.0, NODE_PORTS.1
                                ),
                            ));
                        }
                        if !self.reserve(&format!("{PORT_PREFIX}{p}"), &owner, dry_run, taken).await? {
                            return Err(invalid(
                                &format!("spec.ports[{i}].nodePort"),
                                json!(p),
                                "provided port is already allocated".into(),
                            ));
                        }
                    }
                    None => {
                        let reuse = old_by_port
                            .iter()
                            .find(|(pt, proto, np)| *pt == port["port"] && *proto == port["protocol"] && np.is_u64())
                            .map(|(_, _, np)| np.clone());
                        let np = match reuse {
                            Some(np) => np,
                            None => json!(self.allocate_port(&owner, dry_run, taken).await?),
                        };
                        svc["spec"]["ports"][i]["nodePort"] = np;
                    }
                }
            }
        } else if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for p in ports {
                if let Some(m) = p.as_object_mut() {
                    m.remove("nodePort");
                }
            }
        }
        // What the old object held and the new one does not is released after the write;
        // releasing early could hand it out twice if the write then failed.
        if let Some(old) = old {
            let keep_ip = cluster_ip(svc);
            let keep_ports = node_ports(svc);
            let mut stale = Vec::new();
            if let Some(ip) = cluster_ip(old).filter(|ip| Some(*ip) != keep_ip) {
                stale.push(format!("{IP_PREFIX}{ip}"));
            }
            stale.extend(
                node_ports(old).into_iter().filter(|p| !keep_ports.contains(p)).map(|p| format!("{PORT_PREFIX}{p}")),
            );
            if !stale.is_empty() && !dry_run {
                let store = self.store.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    for key in stale {
                        let _ = store.delete(&key, None).await;
                    }
                });
            }
        }
        Ok(())
    }

    async fn allocate_ip(&self, owner: &str, dry_run: bool, taken: &mut Vec<String>) -> Result<Ipv4Addr, ApiError> {
        let cidr = self.service_cidr;
        let (start, end) = (cidr.dynamic_start(), cidr.size() - 1);
        for attempt in 0..(end - 1) {
            // Random probes first, then a sweep, so a nearly full range still finds its gaps.
            let n = if attempt < 64 { rand::rng().random_range(start..end) } else { 1 + (attempt - 64) % (end - 1) };
            let ip = cidr.nth(n);
            if self.cache.get(&format!("{IP_PREFIX}{ip}")).is_some() {
                continue;
            }
            if self.reserve(&format!("{IP_PREFIX}{ip}"), owner, dry_run, taken).await? {
                return Ok(ip);
            }
        }
        Err(ApiError::internal("failed to allocate a service IP: range is full"))
    }

    async fn allocate_port(&self, owner: &str, dry_run: bool, taken: &mut Vec<String>) -> Result<u16, ApiError> {
        let (lo, hi) = NODE_PORTS;
        let span = u32::from(hi - lo) + 1;
        for attempt in 0..span + 64 {
            let p = if attempt < 64 { rand::rng().random_range(lo..=hi) } else { lo + ((attempt - 64) % span) as u16 };
            if self.cache.get(&format!("{PORT_PREFIX}{p}")).is_some() {
                continue;
            }
            if self.reserve(&format!("{PORT_PREFIX}{p}"), owner, dry_run, taken).await? {
                return Ok(p);
            }
        }
        Err(ApiError::internal("failed to allocate a node port: range is full"))
    }

    /// Takes a key. `false` when someone holds it.
    async fn reserve(&self, key: &str, owner: &str, dry_run: bool, taken: &mut Vec<String>) -> Result<bool, ApiError> {
        if dry_run {
            return Ok(self.cache.get(key).is_none());
        }
        let value = serde_json::to_vec(&json!({"owner": owner})).unwrap_or_default();
        match self.store.create(key, value).await {
            Ok(_) => {
                taken.push(key.to_string());
                Ok(true)
            }
            Err(kapal_store::StoreError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(crate::store_error(e)),
        }
    }

    /// Gives back keys taken for a write that did not happen.
    pub(crate) async fn release(&self, keys: &[String]) {
        for key in keys {
            if let Err(e) = self.store.delete(key, None).await {
                tracing::warn!(key, error = %e, "releasing an allocation failed");
            }
        }
    }

    /// Gives back everything a deleted object held.
    pub(crate) async fn release_object(&self, served: &Served, obj: &Value) {
        if served.is_custom() || !served.info.group.is_empty() || served.info.kind != "Service" {
            return;
        }
        let mut keys: Vec<String> = node_ports(obj).into_iter().map(|p| format!("{PORT_PREFIX}{p}")).collect();
        if let Some(ip) = cluster_ip(obj) {
            keys.push(format!("{IP_PREFIX}{ip}"));
        }
        self.release(&keys).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_math() {
        let c = ServiceCidr::parse("10.43.0.0/16").unwrap();
        assert_eq!(c.nth(1), Ipv4Addr::new(10, 43, 0, 1));
        assert_eq!(c.nth(10), Ipv4Addr::new(10, 43, 0, 10));
        assert!(c.contains(Ipv4Addr::new(10, 43, 200, 1)));
        assert!(!c.contains(Ipv4Addr::new(10, 44, 0, 1)));
        assert_eq!(c.dynamic_start(), 256);
        assert!(ServiceCidr::parse("10.43.0.0").is_err());
        assert_eq!(ServiceCidr::parse("10.43.1.7/16").unwrap().base, Ipv4Addr::new(10, 43, 0, 0));
    }
}
