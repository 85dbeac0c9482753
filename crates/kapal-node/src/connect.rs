//! How an agent reaches the API server with nothing but its URL and the cluster token: fetch the
//! CA from `/cacerts`, believe it only if its HMAC under the token matches (so a man in the middle
//! without the token cannot substitute his own), keep it under the data dir with its HMAC (so that
//! a CA kept from another cluster, or from before the server's CA changed, is fetched again rather
//! than trusted), then talk to the API over TLS verified by that CA, authenticating with the token.

use std::path::{Path, PathBuf};

use base64::Engine;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The header with HMAC-SHA256(token, CA PEM), hex.
pub const CA_HMAC_HEADER: &str = "kapal-ca-hmac";

/// What can go wrong while connecting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--server {0}: not an https:// URL")]
    Url(String),
    #[error("fetching the cluster CA from {url}: {source}")]
    Fetch { url: String, source: kube::Error },
    #[error("fetching the cluster CA from {url}: {message}")]
    Refused { url: String, message: String },
    #[error("the CA served by {0} is not vouched for by --token: wrong token, or not the cluster you meant")]
    Untrusted(String),
    #[error("{path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("building a client for {url}: {message}")]
    Client { url: String, message: String },
}

/// A kube client for the server at `url`, authenticating with `token`. The CA is kept in
/// `<data_dir>/server-ca.crt` (its HMAC in `server-ca.hmac`) after the first successful fetch,
/// and used again while `token` vouches for it.
pub async fn connect(url: &str, token: &str, data_dir: &Path) -> Result<Client, Error> {
    if !url.starts_with("https://") {
        return Err(Error::Url(url.to_string()));
    }
    let ca = match cached_ca(data_dir, token) {
        Some(pem) => pem,
        None => {
            let (pem, tag) = fetch_ca(url, token).await?;
            keep_ca(data_dir, &pem, &tag)?;
            pem
        }
    };
    client(url, &kubeconfig(url, &ca, Some(token)), false).await
}

const CA_FILE: &str = "server-ca.crt";
const CA_HMAC_FILE: &str = "server-ca.hmac";

/// The CA kept under `data_dir`, if `token` vouches for it. A CA kept for another token (the
/// agent joins another cluster, or the server's CA and token were made anew) is not used: the
/// agent would fail every request with "invalid peer certificate: UnknownIssuer".
fn cached_ca(data_dir: &Path, token: &str) -> Option<String> {
    let pem = std::fs::read_to_string(data_dir.join(CA_FILE)).ok()?;
    let tag = std::fs::read_to_string(data_dir.join(CA_HMAC_FILE)).ok()?;
    let usable = !pem.trim().is_empty() && vouched(&pem, token, tag.trim());
    if !usable {
        tracing::info!(dir = %data_dir.display(), "the kept server CA is not vouched for by the token; fetching it again");
    }
    usable.then_some(pem)
}

/// Keeps a CA (vouched for) and its HMAC under `data_dir`.
fn keep_ca(data_dir: &Path, pem: &str, tag: &str) -> Result<(), Error> {
    std::fs::create_dir_all(data_dir).map_err(|source| Error::File { path: data_dir.into(), source })?;
    for (name, contents) in [(CA_FILE, pem), (CA_HMAC_FILE, tag)] {
        let path = data_dir.join(name);
        std::fs::write(&path, contents).map_err(|source| Error::File { path, source })?;
    }
    Ok(())
}

/// The CA PEM and its HMAC tag (hex), once the tag proves `token` vouches for it.
async fn fetch_ca(url: &str, token: &str) -> Result<(String, String), Error> {
    // Nothing is trusted yet: the HMAC below is what makes the answer believable.
    let insecure = client(url, &kubeconfig(url, "", None), true).await?;
    let cacerts = format!("{}/cacerts", url.trim_end_matches('/'));
    let request = http::Request::get("/cacerts")
        .body(kube::client::Body::empty())
        .map_err(|e| Error::Refused { url: cacerts.clone(), message: e.to_string() })?;
    let response = insecure.send(request).await.map_err(|source| Error::Fetch { url: cacerts.clone(), source })?;
    let status = response.status();
    let hmac = response.headers().get(CA_HMAC_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = response
        .into_body()
        .collect_bytes()
        .await
        .map_err(|e| Error::Refused { url: cacerts.clone(), message: e.to_string() })?;
    if !status.is_success() {
        return Err(Error::Refused { url: cacerts, message: format!("HTTP {status}") });
    }
    let pem = String::from_utf8_lossy(&body).into_owned();
    match hmac {
        Some(tag) if vouched(&pem, token, &tag) => Ok((pem, tag)),
        _ => Err(Error::Untrusted(url.to_string())),
    }
}

/// Whether `tag` (hex) is HMAC-SHA256 of `pem` under `token`.
pub fn vouched(pem: &str, token: &str, tag: &str) -> bool {
    let Some(tag) = hex(tag) else { return false };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.as_bytes());
    ring::hmac::verify(&key, pem.as_bytes(), &tag).is_ok()
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn kubeconfig(url: &str, ca_pem: &str, token: Option<&str>) -> serde_json::Value {
    let mut cluster = serde_json::json!({"server": url});
    if !ca_pem.is_empty() {
        cluster["certificate-authority-data"] = base64::engine::general_purpose::STANDARD.encode(ca_pem).into();
    }
    let mut user = serde_json::json!({});
    if let Some(token) = token {
        user["token"] = token.into();
    }
    serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "kapal",
        "clusters": [{"name": "kapal", "cluster": cluster}],
        "users": [{"name": "agent", "user": user}],
        "contexts": [{"name": "kapal", "context": {"cluster": "kapal", "user": "agent"}}],
    })
}

/// Requests an agent keeps in flight at most: simulated nodes renew thousands of Leases, and
/// each request in flight beyond the pooled connections would open another connection.
const MAX_IN_FLIGHT: usize = 64;

async fn client(url: &str, kubeconfig: &serde_json::Value, insecure: bool) -> Result<Client, Error> {
    let fail = |message: String| Error::Client { url: url.to_string(), message };
    let kubeconfig: Kubeconfig = serde_json::from_value(kubeconfig.clone()).map_err(|e| fail(e.to_string()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| fail(e.to_string()))?;
    config.accept_invalid_certs = insecure;
    let builder = kube::client::ClientBuilder::try_from(config).map_err(|e| fail(e.to_string()))?;
    Ok(builder.with_layer(&tower::limit::ConcurrencyLimitLayer::new(MAX_IN_FLIGHT)).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_vouches_for_a_ca() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret");
        let tag: String = ring::hmac::sign(&key, b"PEM").as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert!(vouched("PEM", "secret", &tag));
        assert!(!vouched("PEM", "other", &tag));
        assert!(!vouched("EVIL", "secret", &tag));
        assert!(!vouched("PEM", "secret", "zz"));
    }

    #[test]
    fn a_kept_ca_is_used_only_while_the_token_vouches_for_it() {
        let dir = std::env::temp_dir().join(format!("kapal-node-ca-{}", std::process::id()));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"first-token");
        let tag: String = ring::hmac::sign(&key, b"PEM").as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(cached_ca(&dir, "first-token"), None, "nothing kept yet");
        keep_ca(&dir, "PEM", &tag).unwrap();
        assert_eq!(cached_ca(&dir, "first-token").as_deref(), Some("PEM"));
        // Another cluster, or a server whose CA and token were made anew.
        assert_eq!(cached_ca(&dir, "second-token"), None);
        // A CA kept by an older agent, without its HMAC, is fetched again.
        std::fs::remove_file(dir.join(CA_HMAC_FILE)).unwrap();
        assert_eq!(cached_ca(&dir, "first-token"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
