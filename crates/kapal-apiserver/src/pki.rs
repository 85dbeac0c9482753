//! The cluster's certificates: a CA, the API server's serving certificate, and the admin
//! client certificate, kept under `<data-dir>/tls/` and reused across restarts. Plus the
//! kubeconfig that points kubectl at the server with the admin identity.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

/// PEM files of one certificate and its key.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// The cluster's certificates.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca: Pem,
    pub serving: Pem,
    pub admin: Pem,
}

const CA_DAYS: i64 = 3650;
const LEAF_DAYS: i64 = 365;

/// Valid from yesterday (clock skew) for `days` days.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let ymd = |d: jiff::civil::Date| rcgen::date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8);
    if let (Ok(from), Ok(to)) =
        (today.checked_sub(jiff::Span::new().days(1)), today.checked_add(jiff::Span::new().days(days)))
    {
        params.not_before = ymd(from);
        params.not_after = ymd(to);
    }
}

pub(crate) fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn load(dir: &Path, name: &str) -> Option<Pem> {
    let cert = std::fs::read_to_string(dir.join(format!("{name}.crt"))).ok()?;
    let key = std::fs::read_to_string(dir.join(format!("{name}.key"))).ok()?;
    Some(Pem { cert, key })
}

fn save(dir: &Path, name: &str, pem: &Pem) -> Result<()> {
    write_private(&dir.join(format!("{name}.key")), &pem.key)?;
    write_private(&dir.join(format!("{name}.crt")), &pem.cert)
}

impl Pki {
    /// Loads the certificates under `dir`, creating what is missing. The serving certificate
    /// is re-issued when its names (`sans`) change.
    pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<Pki> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = match load(dir, "ca") {
            Some(ca) => ca,
            None => {
                let ca = new_ca()?;
                save(dir, "ca", &ca)?;
                ca
            }
        };
        let ca_key = KeyPair::from_pem(&ca.key).context("reading the CA key")?;
        let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).context("reading the CA certificate")?;
        let sans_file = dir.join("serving.sans");
        let wanted = sans.join("\n");
        let serving = match (load(dir, "serving"), std::fs::read_to_string(&sans_file).ok()) {
            (Some(s), Some(prev)) if prev == wanted => s,
            _ => {
                let s = new_leaf(&issuer, "kube-apiserver", &[], sans, ExtendedKeyUsagePurpose::ServerAuth)?;
                save(dir, "serving", &s)?;
                write_private(&sans_file, &wanted)?;
                s
            }
        };
        let admin = match load(dir, "admin") {
            Some(a) => a,
            None => {
                let a =
                    new_leaf(&issuer, "system:admin", &["system:masters"], &[], ExtendedKeyUsagePurpose::ClientAuth)?;
                save(dir, "admin", &a)?;
                a
            }
        };
        Ok(Pki { dir: dir.to_path_buf(), ca, serving, admin })
    }

    /// Issues a client certificate for `user` in `groups`, signed by the cluster CA.
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<Pem> {
        let ca_key = KeyPair::from_pem(&self.ca.key)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca.cert, ca_key)?;
        new_leaf(&issuer, user, groups, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A kubeconfig for `server` with the admin identity, as kubectl reads it.
    pub fn kubeconfig(&self, server: &str) -> String {
        kubeconfig(server, &self.ca.cert, &self.admin)
    }
}

/// A kubeconfig with one cluster, user and context, all named `default` as k3s does.
pub fn kubeconfig(server: &str, ca_pem: &str, client: &Pem) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\npreferences: {{}}\nusers:\n- name: default\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(ca_pem),
        b64(&client.cert),
        b64(&client.key)
    )
}

/// Writes a kubeconfig file readable only by its owner.
pub fn write_kubeconfig(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    write_private(path, contents)
}

fn new_ca() -> Result<Pem> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("kapal-server-ca@{}", jiff::Timestamp::now().as_second()));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, CA_DAYS);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
}

fn new_leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    orgs: &[&str],
    sans: &[String],
    usage: ExtendedKeyUsagePurpose,
) -> Result<Pem> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    for o in orgs {
        params.distinguished_name.push(DnType::OrganizationName, *o);
    }
    for san in sans {
        let entry = match san.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(san.as_str().try_into().with_context(|| format!("invalid DNS name {san:?}"))?),
        };
        params.subject_alt_names.push(entry);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
    set_validity(&mut params, LEAF_DAYS);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
}

/// This host's IPv4 addresses, from the kernel's routing trie (no extra crates needed).
pub fn host_addresses() -> Vec<String> {
    let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") else { return Vec::new() };
    let mut out: Vec<String> = Vec::new();
    let mut last_ip: Option<&str> = None;
    for line in trie.lines() {
        let t = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if t.split('.').count() == 4 && t.parse::<std::net::Ipv4Addr>().is_ok() {
            last_ip = Some(t);
        } else if t.contains("/32 host LOCAL")
            && let Some(ip) = last_ip
            && !out.iter().any(|o| o == ip)
        {
            out.push(ip.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_persist_and_serving_follows_sans() {
        let dir = tempfile::tempdir().unwrap();
        let sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let a = Pki::load_or_create(dir.path(), &sans).unwrap();
        let b = Pki::load_or_create(dir.path(), &sans).unwrap();
        assert_eq!(a.ca.cert, b.ca.cert);
        assert_eq!(a.serving.cert, b.serving.cert);
        assert_eq!(a.admin.cert, b.admin.cert);
        let more = vec!["localhost".to_string(), "127.0.0.1".to_string(), "10.0.0.9".to_string()];
        let c = Pki::load_or_create(dir.path(), &more).unwrap();
        assert_eq!(a.ca.cert, c.ca.cert);
        assert_ne!(a.serving.cert, c.serving.cert);
        let kc = a.kubeconfig("https://127.0.0.1:6443");
        assert!(kc.contains("server: https://127.0.0.1:6443"));
        assert!(kc.contains("client-key-data: "));
    }

    #[test]
    fn finds_loopback_address() {
        assert!(host_addresses().iter().any(|a| a == "127.0.0.1"));
    }
}
