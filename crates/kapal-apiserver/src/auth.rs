//! Authentication: x509 client certificates (CN = user, O = groups) and bearer tokens.

use std::collections::HashMap;
use std::sync::RwLock;

use http::HeaderMap;

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn new(name: &str, groups: &[&str]) -> User {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        User { name: name.to_string(), groups }
    }
}

/// The identity in a verified client certificate (rustls verified the chain).
pub fn user_from_certificate(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups: Vec<&str> = subject.iter_organization().filter_map(|o| o.as_str().ok()).collect();
    Some(User::new(&name, &groups))
}

/// A bearer token that matches no identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid bearer token")]
pub struct InvalidToken;

/// Bearer tokens the server accepts.
#[derive(Default)]
pub struct Tokens {
    tokens: RwLock<HashMap<String, User>>,
}

impl Tokens {
    pub fn add(&self, token: &str, user: User) {
        if let Ok(mut t) = self.tokens.write() {
            t.insert(token.to_string(), user);
        }
    }

    pub fn lookup(&self, token: &str) -> Option<User> {
        self.tokens.read().ok()?.get(token).cloned()
    }
}

/// Authenticates a request: the connection's certificate first, then `Authorization: Bearer`.
/// A request with a bearer token that is not valid is rejected even if a certificate is present,
/// as upstream does.
pub fn authenticate(
    cert_user: Option<&User>,
    headers: &HeaderMap,
    tokens: &Tokens,
) -> Result<Option<User>, InvalidToken> {
    if let Some(auth) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(token) = auth.strip_prefix("Bearer ").map(str::trim).filter(|t| !t.is_empty())
    {
        return match tokens.lookup(token) {
            Some(u) => Ok(Some(u)),
            None => Err(InvalidToken),
        };
    }
    Ok(cert_user.cloned())
}

/// Paths anyone may read without credentials, as Kubernetes' default RBAC allows.
pub fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version" | "/version/" | "/cacerts")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_and_certs() {
        let tokens = Tokens::default();
        tokens.add("secret", User::new("agent", &["system:nodes"]));
        let mut h = HeaderMap::new();
        let admin = User::new("system:admin", &["system:masters"]);
        assert_eq!(authenticate(Some(&admin), &h, &tokens), Ok(Some(admin.clone())));
        h.insert(http::header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        assert_eq!(authenticate(None, &h, &tokens).unwrap().unwrap().name, "agent");
        h.insert(http::header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert!(authenticate(Some(&admin), &h, &tokens).is_err());
        assert!(is_public("/readyz"));
        assert!(!is_public("/api"));
    }
}
