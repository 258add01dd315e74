//! Kubernetes request attributes from an HTTP request line, the way
//! kube-apiserver's `RequestInfoFactory` derives them: verb, API group,
//! resource, subresource, namespace and name. A pure function, tested by a
//! table below.

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `/api`, `/apis[/group[/version]]`, `/api/v1`, `/version`,
    /// `/openapi/...`: what kubectl reads before anything else. Allowed to
    /// every user who may use the cluster at all.
    Discovery,
    /// Any other path outside `/api` and `/apis` (`/metrics`, `/logs`, …).
    NonResource,
    Resource(Attrs),
}

/// A resource request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attrs {
    pub verb: String,
    /// `""` for the core group.
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    /// `""` for cluster-scoped requests.
    pub namespace: String,
    /// `""` when the request names no object (list, watch, create).
    pub name: String,
}

/// Subresources whose use is a `create`, whatever the method: a WebSocket
/// exec is a GET, but kube-apiserver (since 1.31) authorises it as create,
/// and so does a policy here.
const CREATE_SUBRESOURCES: [&str; 3] = ["exec", "attach", "portforward"];

/// Subresources of a namespace object itself (kube-apiserver's list).
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

/// Whether a `watch` query parameter asks for a watch (`true`, `1`).
fn wants_watch(query: &str) -> bool {
    query.split('&').any(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        k == "watch" && (v == "true" || v == "1")
    })
}

/// Parses `method`, `path` (without the cluster prefix) and `query`.
/// Never fails: a path kube-apiserver would not route is classified anyway
/// (its request then reaches the API server, which answers 404).
pub fn parse(method: &str, path: &str, query: &str) -> Request {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api"] | ["apis"] | ["api", _] | ["apis", _] | ["apis", _, _] => {
            return Request::Discovery
        }
        ["version"] | ["openapi", ..] => return Request::Discovery,
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Request::NonResource,
    };
    let mut a = Attrs {
        api_group: group.to_string(),
        api_version: version.to_string(),
        ..Attrs::default()
    };
    let mut rest = rest;
    // The deprecated `/watch/` prefix.
    let mut watch_prefix = false;
    if rest.first() == Some(&"watch") {
        watch_prefix = true;
        rest = &rest[1..];
    }
    if rest.first() == Some(&"namespaces") {
        if let Some(ns) = rest.get(1) {
            a.namespace = ns.to_string();
            // `/namespaces/{ns}/{resource}…`, except the namespace's own
            // subresources (`/namespaces/{ns}/status`, `/finalize`).
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
                rest = &rest[2..];
            }
        }
    }
    if !rest.is_empty() {
        a.resource = rest[0].to_string();
        if let Some(n) = rest.get(1) {
            a.name = n.to_string();
        }
        if let Some(s) = rest.get(2) {
            a.subresource = s.to_string();
        }
    }
    let has_name = !a.name.is_empty();
    a.verb = match method {
        _ if CREATE_SUBRESOURCES.contains(&a.subresource.as_str()) => "create",
        "GET" | "HEAD" if watch_prefix || wants_watch(query) => "watch",
        "GET" | "HEAD" if has_name => "get",
        "GET" | "HEAD" => "list",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if has_name => "delete",
        "DELETE" => "deletecollection",
        // OPTIONS, CONNECT, …: no Kubernetes verb; a policy cannot name it.
        other => {
            return Request::Resource(Attrs {
                verb: other.to_ascii_lowercase(),
                ..a
            })
        }
    }
    .to_string();
    Request::Resource(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        // (method, path, query, verb, group, resource, subresource, namespace, name)
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            &'a str,
            &'a str,
            &'a str,
            &'a str,
            &'a str,
            &'a str,
        );
        let cases: &[Case] = &[
            ("GET", "/api/v1/pods", "", "list", "", "pods", "", "", ""),
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                "limit=500",
                "list",
                "",
                "pods",
                "",
                "default",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods/web-1",
                "",
                "get",
                "",
                "pods",
                "",
                "default",
                "web-1",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                "watch=true&resourceVersion=5",
                "watch",
                "",
                "pods",
                "",
                "default",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                "watch=1",
                "watch",
                "",
                "pods",
                "",
                "default",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                "watch=false",
                "list",
                "",
                "pods",
                "",
                "default",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                "xwatch=true",
                "list",
                "",
                "pods",
                "",
                "default",
                "",
            ),
            (
                "GET",
                "/api/v1/watch/namespaces/default/pods",
                "",
                "watch",
                "",
                "pods",
                "",
                "default",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods/web-1/log",
                "follow=true",
                "get",
                "",
                "pods",
                "log",
                "default",
                "web-1",
            ),
            (
                "POST",
                "/api/v1/namespaces/default/pods/web-1/exec",
                "command=echo",
                "create",
                "",
                "pods",
                "exec",
                "default",
                "web-1",
            ),
            // WebSocket exec is a GET, authorised as create.
            (
                "GET",
                "/api/v1/namespaces/default/pods/web-1/exec",
                "command=echo",
                "create",
                "",
                "pods",
                "exec",
                "default",
                "web-1",
            ),
            (
                "POST",
                "/api/v1/namespaces/default/pods/web-1/portforward",
                "",
                "create",
                "",
                "pods",
                "portforward",
                "default",
                "web-1",
            ),
            (
                "POST",
                "/api/v1/namespaces/team-a/pods",
                "",
                "create",
                "",
                "pods",
                "",
                "team-a",
                "",
            ),
            (
                "PUT",
                "/apis/apps/v1/namespaces/prod/deployments/api",
                "",
                "update",
                "apps",
                "deployments",
                "",
                "prod",
                "api",
            ),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/prod/deployments/api/scale",
                "",
                "patch",
                "apps",
                "deployments",
                "scale",
                "prod",
                "api",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/default/pods/web-1",
                "",
                "delete",
                "",
                "pods",
                "",
                "default",
                "web-1",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/default/pods",
                "",
                "deletecollection",
                "",
                "pods",
                "",
                "default",
                "",
            ),
            ("GET", "/api/v1/nodes", "", "list", "", "nodes", "", "", ""),
            (
                "GET",
                "/api/v1/nodes/n1",
                "",
                "get",
                "",
                "nodes",
                "",
                "",
                "n1",
            ),
            (
                "GET",
                "/api/v1/namespaces",
                "",
                "list",
                "",
                "namespaces",
                "",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/kube-system",
                "",
                "get",
                "",
                "namespaces",
                "",
                "kube-system",
                "kube-system",
            ),
            (
                "PUT",
                "/api/v1/namespaces/x/finalize",
                "",
                "update",
                "",
                "namespaces",
                "finalize",
                "x",
                "x",
            ),
            (
                "GET",
                "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                "",
                "list",
                "rbac.authorization.k8s.io",
                "clusterroles",
                "",
                "",
                "",
            ),
            (
                "GET",
                "/apis/apps/v1/deployments",
                "watch=true",
                "watch",
                "apps",
                "deployments",
                "",
                "",
                "",
            ),
        ];
        for &(m, p, q, verb, group, res, sub, ns, name) in cases {
            let want = Request::Resource(Attrs {
                verb: verb.into(),
                api_group: group.into(),
                api_version: "v1".into(),
                resource: res.into(),
                subresource: sub.into(),
                namespace: ns.into(),
                name: name.into(),
            });
            assert_eq!(parse(m, p, q), want, "{m} {p}?{q}");
        }
    }

    #[test]
    fn discovery_and_other_paths() {
        for p in [
            "/api",
            "/api/",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/version",
            "/openapi/v2",
            "/openapi/v3/apis/apps/v1",
        ] {
            assert_eq!(parse("GET", p, ""), Request::Discovery, "{p}");
        }
        for p in [
            "/",
            "/metrics",
            "/logs/kube-apiserver.log",
            "/healthz",
            "/apix/v1/pods",
        ] {
            assert_eq!(parse("GET", p, ""), Request::NonResource, "{p}");
        }
    }

    #[test]
    fn odd_methods_get_no_kubernetes_verb() {
        let Request::Resource(a) = parse("OPTIONS", "/api/v1/pods", "") else {
            panic!("resource")
        };
        assert_eq!(a.verb, "options");
    }
}
