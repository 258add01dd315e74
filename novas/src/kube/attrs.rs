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

/// Percent-decodes `s` (`+` stays as is in paths; `plus_space` for query
/// parts); `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(s: &str, plus_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (h, l) = (hex(*b.get(i + 1)?)?, hex(*b.get(i + 2)?)?);
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            b'+' if plus_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The path kube-apiserver will act on, decoded as Go's `URL.Path` is.
/// Refused (the message is what the user reads) when decoding could make
/// it differ from what the attributes say: `.` or `..` segments, empty
/// segments, an encoded `/`, a backslash, a malformed escape. kubectl
/// never sends any of these.
pub fn checked_path(raw: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("NOVAS: refused request path {raw:?}: {why}"));
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || raw.contains('\\') {
        return bad("encoded slash or backslash");
    }
    let Some(path) = percent_decode(raw, false) else {
        return bad("malformed percent-encoding");
    };
    if !path.starts_with('/') || path.contains('\\') || path.chars().any(|c| c.is_control()) {
        return bad("not an absolute path");
    }
    let inner = path.trim_end_matches('/');
    if inner.len() > 1
        && inner[1..]
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return bad("empty, . or .. segment");
    }
    Ok(path)
}

/// Whether the query asks for a watch, as kube-apiserver reads it: the
/// first `watch` value (keys and values percent-decoded), true by Go's
/// `strconv.ParseBool`.
fn wants_watch(query: &str) -> bool {
    let first = query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k, true)? == "watch").then(|| percent_decode(v, true))
    });
    matches!(
        first.flatten().as_deref(),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
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
    fn watch_is_read_as_kube_apiserver_reads_it() {
        for (q, watch) in [
            ("watch=true", true),
            ("watch=True", true),
            ("watch=t", true),
            ("watch=1", true),
            ("w%61tch=true", true),
            ("watch=%74rue", true),
            ("watch=false&watch=true", false),
            ("watch=true&watch=false", true),
            ("watch=yes", false),
            ("watch", false),
            ("xwatch=1", false),
        ] {
            assert_eq!(wants_watch(q), watch, "{q}");
        }
    }

    #[test]
    fn paths_that_decode_differently_are_refused() {
        assert_eq!(
            checked_path("/api/v1/namespaces/kube%2Dsystem/pods").as_deref(),
            Ok("/api/v1/namespaces/kube-system/pods")
        );
        assert_eq!(
            checked_path("/api/v1/pods/").as_deref(),
            Ok("/api/v1/pods/")
        );
        assert_eq!(checked_path("/").as_deref(), Ok("/"));
        for bad in [
            "/api/v1/namespaces/default/pods/../../kube-system/pods",
            "/api/v1/namespaces/default/pods/%2e%2e/x",
            "/api/v1/namespaces/team-a%2F..%2Fkube-system/pods",
            "/api/v1//pods",
            "/api/v1/./pods",
            "/api/v1/pods%zz",
            "/api/v1/pods\\x",
            "/api/v1/pods%00",
            "api/v1/pods",
        ] {
            let e = checked_path(bad).expect_err(bad);
            assert!(e.contains("refused request path"), "{e}");
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
