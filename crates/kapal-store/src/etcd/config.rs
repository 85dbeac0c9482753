//! How to reach an etcd cluster: endpoints, key prefix, TLS files and timeouts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Identity, TlsOptions};

use crate::StoreError;

/// The port etcd clients use when an endpoint names none.
const DEFAULT_PORT: u16 = 2379;

/// Where Kapal's keys live in etcd by default: the same layout as kube-apiserver's.
pub const DEFAULT_PREFIX: &str = "/registry";

/// Everything [`EtcdStore::connect`](super::EtcdStore::connect) needs to reach an etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the members, each `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    /// The etcd key that stands for Kapal's `/registry`: Kapal key `/registry/x` is stored as
    /// `<prefix>/x`. Two Kapal clusters can share one etcd with prefixes such as `/kapal-a` and
    /// `/kapal-b`; prefixes must not nest (`/a` and `/a/b`).
    pub prefix: String,
    /// CA bundle that signs the members' serving certificates (required for `https`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate, for members that run with `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    /// Key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// How long to wait for a TCP (and TLS) connection to a member, and for the first answer
    /// at start-up.
    pub dial_timeout: Duration,
    /// How long one store operation may take, retries included, before it fails with
    /// [`StoreError::Unavailable`].
    pub request_timeout: Duration,
}

/// A `--datastore-endpoint` value that is not a list of etcd endpoints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid etcd endpoint {value:?}: {reason}")]
pub struct InvalidEndpoint {
    /// The whole value given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl EtcdConfig {
    /// A configuration for these client URLs with the default prefix and timeouts.
    pub fn new(endpoints: Vec<String>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            prefix: DEFAULT_PREFIX.to_string(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        }
    }

    /// Parses a k3s-style `--datastore-endpoint` value for etcd:
    /// `etcd://h1:2379,h2:2379`, `http://h1:2379,http://h2:2379` or `https://h1:2379,h2:2379`.
    ///
    /// `etcd://` means plain HTTP. A scheme given on the first endpoint applies to those that
    /// have none; a missing port is 2379. Paths, credentials, queries and a mix of `http` and
    /// `https` are refused rather than ignored.
    pub fn parse_endpoint(value: &str) -> Result<EtcdConfig, InvalidEndpoint> {
        let invalid = |reason: String| InvalidEndpoint { value: value.to_string(), reason };
        let mut scheme: Option<&str> = None;
        let mut endpoints = Vec::new();
        for item in value.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(invalid("an endpoint in the list is empty".into()));
            }
            let (item_scheme, rest) = match item.split_once("://") {
                Some((s, rest)) => (Some(url_scheme(s).map_err(&invalid)?), rest),
                None => (None, item),
            };
            let this = match (scheme, item_scheme) {
                (Some(a), Some(b)) if a != b => {
                    return Err(invalid("mixes http and https endpoints".into()));
                }
                (_, Some(s)) | (Some(s), None) => s,
                (None, None) => return Err(invalid(format!("{item:?} has no scheme (etcd://, http:// or https://)"))),
            };
            scheme = Some(this);
            let authority = host_port(rest).map_err(|reason| invalid(format!("{item:?}: {reason}")))?;
            endpoints.push(format!("{this}://{authority}"));
        }
        Ok(EtcdConfig::new(endpoints))
    }

    /// Whether the endpoints use TLS.
    pub fn uses_tls(&self) -> bool {
        self.endpoints.iter().any(|e| e.starts_with("https://"))
    }

    /// The endpoints as one string, for messages.
    pub(super) fn endpoint_list(&self) -> String {
        self.endpoints.join(",")
    }

    /// Checks the configuration and returns the normalised prefix.
    pub(super) fn checked_prefix(&self) -> crate::Result<String> {
        if self.endpoints.is_empty() {
            return Err(StoreError::Internal("no etcd endpoints given".into()));
        }
        if let Some(bad) = self.endpoints.iter().find(|e| !e.starts_with("http://") && !e.starts_with("https://")) {
            return Err(StoreError::Internal(format!("etcd endpoint {bad:?} is not an http:// or https:// URL")));
        }
        if self.uses_tls() && self.endpoints.iter().any(|e| e.starts_with("http://")) {
            return Err(StoreError::Internal(format!("etcd endpoints {} mix http and https", self.endpoint_list())));
        }
        let prefix = self.prefix.trim_end_matches('/');
        if !prefix.starts_with('/') {
            return Err(StoreError::Internal(format!(
                "etcd key prefix {:?} must be an absolute path below the root, such as /registry",
                self.prefix
            )));
        }
        Ok(prefix.to_string())
    }

    /// The TLS settings for `https` endpoints, read from the configured files.
    pub(super) fn tls_options(&self) -> crate::Result<Option<TlsOptions>> {
        let any_file = self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some();
        if !self.uses_tls() {
            if any_file {
                return Err(StoreError::Internal(format!(
                    "etcd CA/certificate/key files are set but the endpoints {} are not https://",
                    self.endpoint_list()
                )));
            }
            return Ok(None);
        }
        let Some(ca_file) = &self.ca_file else {
            return Err(StoreError::Internal(format!(
                "https etcd endpoints {} need a CA file (--datastore-cafile)",
                self.endpoint_list()
            )));
        };
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read_pem(ca_file, "CA")?));
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(read_pem(cert, "certificate")?, read_pem(key, "key")?));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(StoreError::Internal("an etcd client certificate needs its key file too".into()));
            }
            (None, Some(_)) => {
                return Err(StoreError::Internal("an etcd client key needs its certificate file too".into()));
            }
        }
        Ok(Some(tls))
    }
}

fn read_pem(path: &Path, what: &str) -> crate::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| StoreError::Internal(format!("reading etcd {what} file {}: {e}", path.display())))
}

fn url_scheme(s: &str) -> Result<&'static str, String> {
    match s.to_ascii_lowercase().as_str() {
        "etcd" | "http" => Ok("http"),
        "https" => Ok("https"),
        other => Err(format!("scheme {other:?} is not etcd (expected etcd://, http:// or https://)")),
    }
}

/// `host[:port]` with the port filled in; anything after the authority is refused.
fn host_port(rest: &str) -> Result<String, String> {
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err("paths and queries are not supported; set the key prefix separately".into());
    }
    if authority.contains('@') {
        return Err("credentials in the URL are not supported; use client certificates".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or("unclosed '[' in an IPv6 address")?;
        match after {
            "" => (format!("[{addr}]"), None),
            _ => (format!("[{addr}]"), Some(after.strip_prefix(':').ok_or("junk after an IPv6 address")?)),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err("the host is empty".into());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => {
            p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("port {p:?} is not a port number"))?
        }
    };
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(value: &str) -> Vec<String> {
        EtcdConfig::parse_endpoint(value).unwrap().endpoints
    }

    #[test]
    fn k3s_style_values_parse() {
        assert_eq!(endpoints("etcd://h1:2379,h2:2380"), ["http://h1:2379", "http://h2:2380"]);
        assert_eq!(endpoints("https://a:1,https://b:2/"), ["https://a:1", "https://b:2"]);
        assert_eq!(endpoints("http://10.0.0.1"), ["http://10.0.0.1:2379"]);
        assert_eq!(endpoints(" ETCD://[::1]:4001 , [fe80::1] "), ["http://[::1]:4001", "http://[fe80::1]:2379"]);
        let config = EtcdConfig::parse_endpoint("etcd://h:1").unwrap();
        assert_eq!(config.prefix, "/registry");
        assert!(!config.uses_tls());
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        for (value, reason) in [
            ("", "empty"),
            ("etcd://a:1,,b:2", "empty"),
            ("postgres://db:5432", "not etcd"),
            ("h1:2379", "no scheme"),
            ("http://a:1,https://b:2", "mixes"),
            ("etcd://a:1/kapal", "paths"),
            ("etcd://user:pw@a:1", "credentials"),
            ("etcd://a:http", "not a port"),
            ("etcd://a:0", "not a port"),
            ("etcd://:2379", "host is empty"),
            ("etcd://[::1", "unclosed"),
        ] {
            let err = EtcdConfig::parse_endpoint(value).unwrap_err().to_string();
            assert!(err.contains(reason), "{value:?}: {err}");
            assert!(err.contains(&format!("{value:?}")), "{value:?}: {err}");
        }
    }

    #[test]
    fn prefixes_and_tls_files_are_checked() {
        let mut config = EtcdConfig::new(vec!["http://a:1".into()]);
        config.prefix = "/kapal-a/".into();
        assert_eq!(config.checked_prefix().unwrap(), "/kapal-a");
        config.prefix = "kapal".into();
        assert!(config.checked_prefix().unwrap_err().to_string().contains("absolute"));
        config.prefix = "/".into();
        assert!(config.checked_prefix().is_err());
        let mixed = EtcdConfig::new(vec!["http://a:1".into(), "https://b:1".into()]);
        assert!(mixed.checked_prefix().unwrap_err().to_string().contains("mix"));
        config.ca_file = Some("/ca.pem".into());
        assert!(config.tls_options().unwrap_err().to_string().contains("not https"));
        let mut tls = EtcdConfig::new(vec!["https://a:1".into()]);
        assert!(tls.tls_options().unwrap_err().to_string().contains("CA file"));
        tls.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(tls.tls_options().unwrap_err().to_string().contains("/nonexistent/ca.pem"));
    }
}
