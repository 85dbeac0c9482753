//! Inbound authorization by client identity, path and method.

use std::sync::Arc;

use super::{ConnInfo, Inner, ProxyError, ResFuture, Routed, layer_service, ready};
use crate::config::{Action, AuthorizationPolicy, AuthorizationRule};
use crate::state::Shared;

/// Denies requests the current authorization policy does not allow (403).
#[derive(Clone)]
pub struct Authorize<S> {
    shared: Arc<Shared>,
    /// The client's SPIFFE ID, when its connection was mesh mTLS.
    identity: Option<Arc<str>>,
    inner: S,
}

impl<S: Inner> Authorize<S> {
    /// Wraps `inner`, for the requests of the connection `conn`.
    pub fn new(shared: Arc<Shared>, conn: &ConnInfo, inner: S) -> Self {
        Authorize { shared, identity: conn.client_identity.clone(), inner }
    }

    fn serve(&mut self, routed: Routed) -> ResFuture {
        let identity = self.identity.as_deref();
        let policy = &self.shared.snapshot().config.authorization;
        let req = &routed.req;
        match authorize(policy, identity, req.uri().path(), req.method().as_str()) {
            Action::Allow => self.inner.call(routed),
            Action::Deny => {
                tracing::info!(client = ?identity, path = %req.uri().path(), "request denied by authorization policy");
                ready(Err(ProxyError::Forbidden))
            }
        }
    }
}

layer_service!(Authorize, serve);

/// Evaluates a policy: a matching deny rule denies, else a matching allow rule allows, else
/// the default action applies.
pub fn authorize(policy: &AuthorizationPolicy, identity: Option<&str>, path: &str, method: &str) -> Action {
    let matching =
        |action| policy.rules.iter().filter(move |r| r.action == action).any(|r| matches(r, identity, path, method));
    if matching(Action::Deny) {
        Action::Deny
    } else if matching(Action::Allow) {
        Action::Allow
    } else {
        policy.default_action
    }
}

/// Evaluates a policy for an opaque TCP connection, which has no path or method. As in Istio,
/// a deny rule that names paths or methods still denies (fail closed), and an allow rule that
/// names them cannot allow.
pub fn authorize_tcp(policy: &AuthorizationPolicy, identity: Option<&str>) -> Action {
    let id_ok = |r: &AuthorizationRule| {
        r.identities.is_empty() || identity.is_some_and(|id| r.identities.iter().any(|p| pattern(p, id)))
    };
    let http_only = |r: &AuthorizationRule| !r.paths.is_empty() || !r.methods.is_empty();
    if policy.rules.iter().any(|r| r.action == Action::Deny && id_ok(r)) {
        Action::Deny
    } else if policy.rules.iter().any(|r| r.action == Action::Allow && id_ok(r) && !http_only(r)) {
        Action::Allow
    } else {
        policy.default_action
    }
}

fn pattern(p: &str, v: &str) -> bool {
    match p.strip_suffix('*') {
        Some(prefix) => v.starts_with(prefix),
        None => p == v,
    }
}

fn matches(rule: &AuthorizationRule, identity: Option<&str>, path: &str, method: &str) -> bool {
    let id_ok = rule.identities.is_empty() || identity.is_some_and(|id| rule.identities.iter().any(|p| pattern(p, id)));
    let path_ok = rule.paths.is_empty() || rule.paths.iter().any(|p| pattern(p, path));
    let method_ok = rule.methods.is_empty() || rule.methods.iter().any(|m| m == method);
    id_ok && path_ok && method_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(action: Action, identities: &[&str], paths: &[&str], methods: &[&str]) -> AuthorizationRule {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        AuthorizationRule { action, identities: v(identities), paths: v(paths), methods: v(methods) }
    }

    const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";
    const BAD: &str = "spiffe://cluster.local/ns/other/sa/x";

    #[test]
    fn default_deny_with_allow_rules() {
        let policy = AuthorizationPolicy {
            default_action: Action::Deny,
            rules: vec![rule(Action::Allow, &["spiffe://cluster.local/ns/default/*"], &[], &["GET"])],
        };
        assert_eq!(authorize(&policy, Some(WEB), "/x", "GET"), Action::Allow);
        assert_eq!(authorize(&policy, Some(WEB), "/x", "POST"), Action::Deny);
        assert_eq!(authorize(&policy, Some(BAD), "/x", "GET"), Action::Deny);
        // Plaintext clients have no identity and cannot match an identity rule.
        assert_eq!(authorize(&policy, None, "/x", "GET"), Action::Deny);
    }

    #[test]
    fn tcp_connections_fail_closed_on_http_only_rules() {
        let policy = AuthorizationPolicy {
            default_action: Action::Deny,
            rules: vec![rule(Action::Allow, &[WEB], &[], &[]), rule(Action::Allow, &[BAD], &["/public"], &[])],
        };
        assert_eq!(authorize_tcp(&policy, Some(WEB)), Action::Allow);
        // An allow rule about paths cannot allow a connection that has no path.
        assert_eq!(authorize_tcp(&policy, Some(BAD)), Action::Deny);
        assert_eq!(authorize_tcp(&policy, None), Action::Deny);
        let policy = AuthorizationPolicy {
            default_action: Action::Allow,
            rules: vec![rule(Action::Deny, &[BAD], &["/admin*"], &[])],
        };
        assert_eq!(authorize_tcp(&policy, Some(BAD)), Action::Deny);
        assert_eq!(authorize_tcp(&policy, Some(WEB)), Action::Allow);
    }

    #[test]
    fn deny_rules_win_over_allow_rules() {
        let policy = AuthorizationPolicy {
            default_action: Action::Allow,
            rules: vec![rule(Action::Allow, &["*"], &[], &[]), rule(Action::Deny, &[], &["/admin*"], &[])],
        };
        assert_eq!(authorize(&policy, Some(WEB), "/admin/users", "GET"), Action::Deny);
        assert_eq!(authorize(&policy, Some(WEB), "/public", "GET"), Action::Allow);
        assert_eq!(authorize(&policy, None, "/public", "GET"), Action::Allow);
    }
}
