//! Workload identity: SPIFFE IDs (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`).

use std::fmt;

/// A parsed SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    uri: String,
    trust_domain_len: usize,
}

/// Why a string is not a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SPIFFE ID {id:?}: {reason}")]
pub struct SpiffeIdError {
    id: String,
    reason: &'static str,
}

impl SpiffeId {
    /// Parses and checks a SPIFFE ID per the SPIFFE spec (scheme, trust domain, path, length).
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        let err = |reason| SpiffeIdError { id: s.to_string(), reason };
        let rest = s.strip_prefix("spiffe://").ok_or_else(|| err("must start with spiffe://"))?;
        if s.len() > 2048 {
            return Err(err("longer than 2048 bytes"));
        }
        let (td, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if td.is_empty() || td.len() > 255 {
            return Err(err("trust domain must be 1-255 characters"));
        }
        if !td.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c)) {
            return Err(err("trust domain may only contain a-z, 0-9, '-', '.', '_'"));
        }
        if path.ends_with('/') || path.contains("//") || path.contains(['?', '#']) {
            return Err(err("path must not end in '/', contain '//', a query or a fragment"));
        }
        if path.split('/').skip(1).any(|seg| seg == "." || seg == "..") {
            return Err(err("path must not contain '.' or '..' segments"));
        }
        Ok(SpiffeId { uri: s.to_string(), trust_domain_len: td.len() })
    }

    /// `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub fn for_service_account(trust_domain: &str, namespace: &str, sa: &str) -> Result<Self, SpiffeIdError> {
        Self::parse(&format!("spiffe://{trust_domain}/ns/{namespace}/sa/{sa}"))
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.uri["spiffe://".len().."spiffe://".len() + self.trust_domain_len]
    }

    /// The whole URI.
    pub fn as_str(&self) -> &str {
        &self.uri
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_service_account_ids() {
        let id = SpiffeId::for_service_account("cluster.local", "default", "web").unwrap();
        assert_eq!(id.as_str(), "spiffe://cluster.local/ns/default/sa/web");
        assert_eq!(id.trust_domain(), "cluster.local");
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "http://cluster.local/ns/a",
            "spiffe://",
            "spiffe:///ns/a",
            "spiffe://Cluster/ns/a",
            "spiffe://td/ns/a/",
            "spiffe://td/ns//a",
            "spiffe://td/ns/a?x=1",
            "spiffe://td/ns/../a",
            "spiffe://td:8080/ns/a",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
    }
}
