//! Turning a request path into what it addresses.

/// A parsed resource path: `/api/v1/namespaces/ns/pods/name/status` and friends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// What a path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/api` or `/apis`.
    RootDiscovery {
        core: bool,
    },
    /// `/api/v1` or `/apis/<g>/<v>`.
    GroupVersionDiscovery {
        group: String,
        version: String,
    },
    /// `/apis/<g>`.
    GroupDiscovery {
        group: String,
    },
    Resource(ResourcePath),
    /// Anything else: `/version`, `/healthz`, `/openapi/...`, `/metrics`.
    Other,
}

/// Parses a request path. Segments are percent-decoded.
pub fn parse(path: &str) -> Route {
    let segments: Vec<String> =
        path.trim_matches('/').split('/').filter(|s| !s.is_empty()).map(crate::http::percent_decode).collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["api"] => Route::RootDiscovery { core: true },
        ["apis"] => Route::RootDiscovery { core: false },
        ["api", version] => Route::GroupVersionDiscovery { group: String::new(), version: version.to_string() },
        ["apis", group] => Route::GroupDiscovery { group: group.to_string() },
        ["apis", group, version] => {
            Route::GroupVersionDiscovery { group: group.to_string(), version: version.to_string() }
        }
        ["api", version, rest @ ..] => resource("", version, rest),
        ["apis", group, version, rest @ ..] => resource(group, version, rest),
        _ => Route::Other,
    }
}

fn resource(group: &str, version: &str, rest: &[&str]) -> Route {
    let mut p = ResourcePath { group: group.into(), version: version.into(), ..Default::default() };
    let rest = match rest {
        // `/namespaces/<ns>` alone addresses the namespace object itself.
        ["namespaces", ns] | ["namespaces", ns, "status" | "finalize"] if group.is_empty() && rest.len() <= 3 => {
            p.plural = "namespaces".into();
            p.name = Some(ns.to_string());
            p.subresource = rest.get(2).map(|s| s.to_string());
            return Route::Resource(p);
        }
        ["namespaces", ns, rest @ ..] => {
            p.namespace = Some(ns.to_string());
            rest
        }
        rest => rest,
    };
    match rest {
        [plural] => p.plural = plural.to_string(),
        [plural, name] => {
            p.plural = plural.to_string();
            p.name = Some(name.to_string());
        }
        [plural, name, sub] => {
            p.plural = plural.to_string();
            p.name = Some(name.to_string());
            p.subresource = Some(sub.to_string());
        }
        _ => return Route::Other,
    }
    Route::Resource(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourcePath {
        match parse(path) {
            Route::Resource(p) => p,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn parses_resource_paths() {
        let p = res("/api/v1/namespaces/default/pods/web/status");
        assert_eq!((p.group.as_str(), p.namespace.as_deref(), p.plural.as_str()), ("", Some("default"), "pods"));
        assert_eq!((p.name.as_deref(), p.subresource.as_deref()), (Some("web"), Some("status")));
        let p = res("/apis/apps/v1/deployments");
        assert_eq!((p.group.as_str(), p.namespace, p.plural.as_str()), ("apps", None, "deployments"));
        let p = res("/api/v1/namespaces/kube-system");
        assert_eq!((p.plural.as_str(), p.name.as_deref(), p.namespace), ("namespaces", Some("kube-system"), None));
        let p = res("/api/v1/namespaces/x/finalize");
        assert_eq!((p.name.as_deref(), p.subresource.as_deref()), (Some("x"), Some("finalize")));
        let p = res("/api/v1/namespaces");
        assert_eq!((p.plural.as_str(), p.name), ("namespaces", None));
        let p = res("/api/v1/nodes/n%3A1");
        assert_eq!(p.name.as_deref(), Some("n:1"));
    }

    #[test]
    fn parses_discovery_and_others() {
        assert_eq!(parse("/api"), Route::RootDiscovery { core: true });
        assert_eq!(parse("/apis/"), Route::RootDiscovery { core: false });
        assert_eq!(parse("/apis/apps"), Route::GroupDiscovery { group: "apps".into() });
        assert_eq!(parse("/apis/apps/v1"), Route::GroupVersionDiscovery { group: "apps".into(), version: "v1".into() });
        assert_eq!(parse("/version"), Route::Other);
        assert_eq!(parse("/api/v1/a/b/c/d/e"), Route::Other);
    }
}
