//! The kubernetes part of a policy and the per-request decision: may this
//! identity make this request, and as whom does the agent impersonate.
//! Pure functions, tested by tables below.
//!
//! ```yaml
//! policies:
//!   - name: dev-pods
//!     roles: [dev]
//!     resources: [prod-eu]            # kubernetes resources (clusters)
//!     kubernetes:
//!       user: "nova:{user}"           # impersonated user ({user}: the NOVAS user)
//!       groups: [nova-dev]            # impersonated groups
//!       rules:                        # any one rule that matches allows
//!         - verbs: [get, list, watch]
//!           namespaces: [default, "team-*"]
//!           api_groups: [""]          # "" core, "apps", … ; default ["*"]
//!           resources: [pods, pods/log]
//!         - verbs: [create]
//!           namespaces: [default]
//!           resources: [pods/exec]
//!           names: ["web-*"]          # default ["*"]
//! ```
//! Resources are written as RBAC writes them: `pods` is the pods
//! themselves, `pods/log` one subresource, `pods/*` every subresource,
//! `*` everything. A namespace pattern `*` also covers cluster-scoped
//! requests (nodes, namespaces); any other pattern only namespaced ones.
//! A rule with names other than `*` only covers requests naming an object
//! (so it grants no list or watch).

use serde::Deserialize;

use super::attrs::Attrs;
use crate::access::{glob, Identity};

/// The verbs a rule may name.
pub const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKube {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    verbs: Vec<String>,
    #[serde(default = "star")]
    namespaces: Vec<String>,
    #[serde(default = "star")]
    api_groups: Vec<String>,
    #[serde(default = "star")]
    resources: Vec<String>,
    #[serde(default = "star")]
    names: Vec<String>,
}

fn star() -> Vec<String> {
    vec!["*".into()]
}

/// A policy's kubernetes block, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeRules {
    /// Template of the impersonated user; `{user}` is the NOVAS user.
    pub user: String,
    pub groups: Vec<String>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub namespaces: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub names: Vec<String>,
}

/// Who the agent impersonates for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impersonation {
    pub user: String,
    pub groups: Vec<String>,
}

impl KubeRules {
    /// Checks a raw block; the error says what is wrong.
    pub fn from_raw(raw: RawKube) -> Result<Self, String> {
        let user = raw.user.unwrap_or_else(|| "{user}".into());
        if user.trim().is_empty() {
            return Err("kubernetes.user is empty".into());
        }
        for v in std::iter::once(&user).chain(&raw.groups) {
            if v.chars().any(|c| c.is_control()) || v.starts_with("system:") {
                return Err(format!(
                    "kubernetes: {v:?} cannot be impersonated (control characters, or a system: name)"
                ));
            }
        }
        let mut rules = Vec::new();
        for (i, r) in raw.rules.into_iter().enumerate() {
            if r.verbs.is_empty() {
                return Err(format!("kubernetes.rules[{i}]: verbs is empty"));
            }
            if let Some(v) = r
                .verbs
                .iter()
                .find(|v| *v != "*" && !VERBS.contains(&v.as_str()))
            {
                return Err(format!(
                    "kubernetes.rules[{i}]: unknown verb {v:?} (known: *, {})",
                    VERBS.join(", ")
                ));
            }
            for (what, list) in [
                ("namespaces", &r.namespaces),
                ("api_groups", &r.api_groups),
                ("resources", &r.resources),
                ("names", &r.names),
            ] {
                if list.is_empty() {
                    return Err(format!(
                        "kubernetes.rules[{i}]: {what} is empty (leave it out for \"*\")"
                    ));
                }
            }
            rules.push(Rule {
                verbs: r.verbs,
                namespaces: r.namespaces,
                api_groups: r.api_groups,
                resources: r.resources,
                names: r.names,
            });
        }
        if rules.is_empty() {
            return Err("kubernetes.rules is empty: the policy would allow nothing".into());
        }
        Ok(Self {
            user,
            groups: raw.groups,
            rules,
        })
    }

    /// The identity the agent impersonates for `who`.
    pub fn impersonation(&self, who: &Identity) -> Impersonation {
        let fill = |s: &str| s.replace("{user}", &who.user);
        Impersonation {
            user: fill(&self.user),
            groups: self.groups.iter().map(|g| fill(g)).collect(),
        }
    }

    /// Whether some rule allows `a`.
    pub fn allows(&self, a: &Attrs) -> bool {
        self.rules.iter().any(|r| r.covers(a))
    }
}

impl Rule {
    fn covers(&self, a: &Attrs) -> bool {
        let verb = self.verbs.iter().any(|v| v == "*" || *v == a.verb);
        let group = self
            .api_groups
            .iter()
            .any(|g| g == "*" || *g == a.api_group);
        let resource = self.resources.iter().any(|r| resource_matches(r, a));
        let namespace = if a.namespace.is_empty() {
            self.namespaces.iter().any(|n| n == "*")
        } else {
            self.namespaces.iter().any(|n| glob(n, &a.namespace))
        };
        let name = if self.names.iter().any(|n| n == "*") {
            true
        } else {
            !a.name.is_empty() && self.names.iter().any(|n| glob(n, &a.name))
        };
        verb && group && resource && namespace && name
    }
}

/// RBAC's resource matching: `*`, `pods`, `pods/log`, `pods/*`, `*/scale`.
fn resource_matches(pattern: &str, a: &Attrs) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.split_once('/') {
        None => a.subresource.is_empty() && pattern == a.resource,
        Some((res, sub)) => {
            !a.subresource.is_empty()
                && (res == "*" || res == a.resource)
                && (sub == "*" || sub == a.subresource)
        }
    }
}

/// What the user reads when a request is refused, in kube-apiserver's own
/// phrasing plus the policy that decided.
pub fn denial_message(user: &str, a: &Attrs, policy: &str) -> String {
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let object = match a.name.as_str() {
        "" => resource.clone(),
        n => format!("{resource} {n:?}"),
    };
    let scope = match a.namespace.as_str() {
        "" => "at the cluster scope".to_string(),
        ns => format!("in the namespace {ns:?}"),
    };
    format!(
        "{object} is forbidden: NOVAS user {user:?} cannot {} resource {resource:?} in API group {:?} {scope}: denied by policy {policy:?}",
        a.verb, a.api_group
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Policies;
    use crate::kube::attrs::{parse, Request};

    const FILE: &str = r#"
policies:
  - name: dev-pods
    roles: [dev]
    resources: [prod]
    kubernetes:
      user: "nova:{user}"
      groups: [nova-dev, "team-{user}"]
      rules:
        - verbs: [get, list, watch]
          namespaces: [default, "team-*"]
          api_groups: [""]
          resources: [pods, pods/log]
        - verbs: [create]
          namespaces: [default]
          resources: [pods/exec]
          names: ["web-*"]
  - name: ops-all
    roles: [ops]
    resources: ["*"]
    kubernetes:
      user: ops
      rules:
        - verbs: ["*"]
"#;

    fn rules(policy: usize) -> KubeRules {
        let p = Policies::parse(FILE, "p.yaml").expect("parse");
        let list: Vec<_> = p.iter().collect();
        list[policy].kubernetes.clone().expect("kubernetes block")
    }

    fn attrs(method: &str, path: &str, query: &str) -> Attrs {
        match parse(method, path, query) {
            Request::Resource(a) => a,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn decisions_table() {
        let dev = rules(0);
        let ops = rules(1);
        for (rules, method, path, query, allowed) in [
            (&dev, "GET", "/api/v1/namespaces/default/pods", "", true),
            (
                &dev,
                "GET",
                "/api/v1/namespaces/default/pods",
                "watch=true",
                true,
            ),
            (&dev, "GET", "/api/v1/namespaces/team-a/pods/x", "", true),
            (
                &dev,
                "GET",
                "/api/v1/namespaces/default/pods/x/log",
                "follow=true",
                true,
            ),
            (
                &dev,
                "GET",
                "/api/v1/namespaces/kube-system/pods",
                "",
                false,
            ),
            (
                &dev,
                "DELETE",
                "/api/v1/namespaces/default/pods/x",
                "",
                false,
            ),
            (&dev, "GET", "/api/v1/namespaces/default/secrets", "", false),
            (
                &dev,
                "GET",
                "/apis/apps/v1/namespaces/default/pods",
                "",
                false,
            ),
            (&dev, "GET", "/api/v1/pods", "", false),
            (&dev, "GET", "/api/v1/nodes", "", false),
            (
                &dev,
                "GET",
                "/api/v1/namespaces/default/pods/web-1/exec",
                "command=sh",
                true,
            ),
            (
                &dev,
                "POST",
                "/api/v1/namespaces/default/pods/db-1/exec",
                "command=sh",
                false,
            ),
            (
                &dev,
                "POST",
                "/api/v1/namespaces/team-a/pods/web-1/exec",
                "",
                false,
            ),
            (
                &dev,
                "POST",
                "/api/v1/namespaces/default/pods/web-1/portforward",
                "",
                false,
            ),
            (
                &dev,
                "GET",
                "/api/v1/namespaces/default/pods/web-1/status",
                "",
                false,
            ),
            (
                &ops,
                "DELETE",
                "/apis/apps/v1/namespaces/x/deployments/y",
                "",
                true,
            ),
            (&ops, "GET", "/api/v1/nodes", "", true),
            (&ops, "POST", "/api/v1/namespaces/x/pods/y/exec", "", true),
        ] {
            let a = attrs(method, path, query);
            assert_eq!(rules.allows(&a), allowed, "{method} {path}?{query}: {a:?}");
        }
    }

    #[test]
    fn impersonation_fills_the_user() {
        let who = Identity {
            user: "alice".into(),
            roles: vec!["dev".into()],
        };
        assert_eq!(
            rules(0).impersonation(&who),
            Impersonation {
                user: "nova:alice".into(),
                groups: vec!["nova-dev".into(), "team-alice".into()],
            }
        );
        assert_eq!(rules(1).impersonation(&who).user, "ops");
    }

    #[test]
    fn bad_blocks_are_refused() {
        for (y, needle) in [
            ("{rules: [{verbs: [gett]}]}", "unknown verb"),
            ("{rules: []}", "allow nothing"),
            ("{}", "allow nothing"),
            ("{rules: [{verbs: []}]}", "verbs is empty"),
            (
                "{rules: [{verbs: [get], namespaces: []}]}",
                "namespaces is empty",
            ),
            ("{user: 'system:admin', rules: [{verbs: [get]}]}", "system:"),
            (
                "{groups: ['system:masters'], rules: [{verbs: [get]}]}",
                "system:",
            ),
            ("{rules: [{verbs: [get], color: red}]}", "color"),
        ] {
            let text =
                format!("policies: [{{name: k, users: [u], resources: [c], kubernetes: {y}}}]");
            let e = Policies::parse(&text, "p.yaml").expect_err(y).to_string();
            assert!(e.contains(needle), "{y}: {e}");
        }
    }

    #[test]
    fn denial_names_the_policy_and_the_request() {
        let a = attrs("DELETE", "/api/v1/namespaces/default/pods/web-1", "");
        let m = denial_message("bob", &a, "dev-pods");
        assert!(m.starts_with("pods \"web-1\" is forbidden"), "{m}");
        assert!(m.contains("cannot delete resource \"pods\""), "{m}");
        assert!(m.contains("namespace \"default\""), "{m}");
        assert!(m.ends_with("denied by policy \"dev-pods\""), "{m}");
        let a = attrs("GET", "/api/v1/nodes", "");
        assert!(denial_message("bob", &a, "p").contains("cluster scope"));
    }
}
