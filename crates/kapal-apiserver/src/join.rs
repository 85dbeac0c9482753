//! Sharing the cluster's CA and admin identity between servers on one store, as k3s does:
//! the first server stores them encrypted with the cluster token; every later server with the
//! same token fetches them, so all servers trust the same clients and serve the same API.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use kapal_store::{Store, StoreError};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Where the encrypted bundle lives in the store.
pub const KEY: &str = "/registry/kapal/bootstrap";
/// The files shared between servers (each server issues its own serving certificate).
const FILES: &[&str] = &["ca.crt", "ca.key", "admin.crt", "admin.key"];

fn cipher(token: &str) -> Result<LessSafeKey> {
    let key = Sha256::digest(format!("kapal-bootstrap:{token}"));
    let unbound = UnboundKey::new(&AES_256_GCM, &key).map_err(|_| anyhow!("deriving the bootstrap key"))?;
    Ok(LessSafeKey::new(unbound))
}

fn seal(token: &str, plain: &[u8]) -> Result<Value> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| anyhow!("no randomness for the bootstrap nonce"))?;
    let mut data = plain.to_vec();
    cipher(token)?
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
        .map_err(|_| anyhow!("encrypting the bootstrap data"))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(json!({"nonce": b64.encode(nonce), "data": b64.encode(data)}))
}

fn open(token: &str, sealed: &Value) -> Result<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let nonce = b64.decode(sealed["nonce"].as_str().unwrap_or_default()).context("bootstrap nonce")?;
    let mut data = b64.decode(sealed["data"].as_str().unwrap_or_default()).context("bootstrap data")?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| anyhow!("bootstrap nonce has the wrong length"))?;
    let plain =
        cipher(token)?.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data).map_err(|_| {
            anyhow!(
                "this datastore belongs to a cluster with another token: start the server with that cluster's --token"
            )
        })?;
    Ok(plain.to_vec())
}

/// Makes `tls_dir` hold the cluster's shared certificates: fetched from the store when another
/// server put them there, otherwise this server's (created if needed) are stored for the others.
pub async fn sync(store: &Arc<dyn Store>, tls_dir: &Path, token: &str) -> Result<()> {
    std::fs::create_dir_all(tls_dir).with_context(|| format!("creating {}", tls_dir.display()))?;
    loop {
        match store.get(KEY).await.map_err(|e| anyhow!("reading bootstrap data: {e}"))? {
            Some(kv) => {
                let sealed: Value = serde_json::from_slice(&kv.value).context("bootstrap data is not JSON")?;
                let files: Value = serde_json::from_slice(&open(token, &sealed)?).context("bootstrap data")?;
                return install(tls_dir, &files);
            }
            None => {
                // First server: make sure the CA exists locally, then offer it to the others.
                crate::pki::Pki::load_or_create(tls_dir, &["localhost".to_string()])?;
                let mut files = serde_json::Map::new();
                for f in FILES {
                    let text = std::fs::read_to_string(tls_dir.join(f)).with_context(|| format!("reading {f}"))?;
                    files.insert(f.to_string(), json!(text));
                }
                let sealed = seal(token, &serde_json::to_vec(&files)?)?;
                match store.create(KEY, serde_json::to_vec(&sealed)?).await {
                    Ok(_) => return Ok(()),
                    // Another server got there first: take its certificates instead.
                    Err(StoreError::AlreadyExists(_)) => continue,
                    Err(e) => bail!("storing bootstrap data: {e}"),
                }
            }
        }
    }
}

/// Writes the shared files, re-issuing this server's serving certificate if the CA changed.
fn install(tls_dir: &Path, files: &Value) -> Result<()> {
    let current_ca = std::fs::read_to_string(tls_dir.join("ca.crt")).ok();
    let cluster_ca = files["ca.crt"].as_str().unwrap_or_default();
    if current_ca.as_deref() != Some(cluster_ca) {
        let _ = std::fs::remove_file(tls_dir.join("serving.crt"));
        let _ = std::fs::remove_file(tls_dir.join("serving.sans"));
        tracing::info!("joining the cluster's certificate authority from the datastore");
    }
    for f in FILES {
        let text = files[*f].as_str().ok_or_else(|| anyhow!("bootstrap data lacks {f}"))?;
        if std::fs::read_to_string(tls_dir.join(f)).ok().as_deref() != Some(text) {
            crate::pki::write_private(&tls_dir.join(f), text)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_its_token() {
        let sealed = seal("secret", b"hello").unwrap();
        assert_eq!(open("secret", &sealed).unwrap(), b"hello");
        let err = open("other", &sealed).unwrap_err().to_string();
        assert!(err.contains("--token"), "{err}");
    }

    #[tokio::test]
    async fn second_server_gets_the_first_servers_ca() {
        let db = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(kapal_store::sqlite::SqliteStore::open(&db.path().join("s.db")).unwrap());
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        sync(&store, a.path(), "tok").await.unwrap();
        // B had made its own CA before joining: it is replaced, and its serving cert re-issued.
        crate::pki::Pki::load_or_create(b.path(), &["localhost".into()]).unwrap();
        sync(&store, b.path(), "tok").await.unwrap();
        let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(read(a.path(), "ca.crt"), read(b.path(), "ca.crt"));
        assert_eq!(read(a.path(), "admin.key"), read(b.path(), "admin.key"));
        assert!(!b.path().join("serving.crt").exists());
        let c = tempfile::tempdir().unwrap();
        assert!(sync(&store, c.path(), "wrong").await.is_err());
    }
}

/// The header carrying HMAC-SHA256(token, CA PEM) on `/cacerts`, so that an agent holding the
/// token can tell the real cluster CA from one a man in the middle offers.
pub const CA_HMAC_HEADER: &str = "kapal-ca-hmac";

/// The cluster CA as agents fetch it from `/cacerts`.
#[derive(Debug, Clone)]
pub struct CaBundle {
    pem: String,
    hmac: String,
}

impl CaBundle {
    /// The CA `pem`, vouched for by `token`.
    pub fn new(pem: &str, token: &str) -> CaBundle {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.as_bytes());
        let tag = ring::hmac::sign(&key, pem.as_bytes());
        CaBundle { pem: pem.to_string(), hmac: tag.as_ref().iter().map(|b| format!("{b:02x}")).collect() }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub(crate) fn response(&self) -> hyper::Response<axum::body::Body> {
        let mut resp =
            crate::http::bytes_response(http::StatusCode::OK, "application/x-pem-file", self.pem.as_bytes().to_vec());
        if let Ok(v) = http::HeaderValue::from_str(&self.hmac) {
            resp.headers_mut().insert(CA_HMAC_HEADER, v);
        }
        resp
    }
}
