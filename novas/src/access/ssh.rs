//! The SSH decisions, pure functions of a policy and a resource: which
//! target login a session uses, and whether a port forward may open.
//! Table-tested below.

use super::policy::Policy;
use crate::resources::{Account, Resource};

/// The logins `policy` allows on `resource`, default first. Errors name the
/// policy and what is wrong with it (checked at start for every policy).
pub fn ssh_logins<'r>(policy: &Policy, resource: &'r Resource) -> Result<Vec<&'r Account>, String> {
    let find = |name: &str| {
        resource.account(Some(name)).ok_or_else(|| {
            format!(
                "policy {:?}: resource {:?} has no account {name:?}",
                policy.name, resource.name
            )
        })
    };
    let default = match (&policy.account, policy.logins.first()) {
        (Some(a), _) => find(a)?,
        (None, Some(first)) => find(first)?,
        (None, None) => resource.account(None).ok_or_else(|| {
            format!(
                "policy {:?}: resource {:?} has several accounts; say which with `account:` or `logins:`",
                policy.name, resource.name
            )
        })?,
    };
    let mut out = vec![default];
    for l in &policy.logins {
        let a = find(l)?;
        if !out.iter().any(|x| x.name == a.name) {
            out.push(a);
        }
    }
    Ok(out)
}

/// The account a session logs in with: the one the user asked for (by
/// account name or target user name) if the policy allows it, else the
/// policy's default. The error is the message the user reads.
pub fn choose_login<'r>(
    policy: &Policy,
    resource: &'r Resource,
    requested: Option<&str>,
) -> Result<&'r Account, String> {
    let allowed = ssh_logins(policy, resource)?;
    match requested {
        None => Ok(allowed[0]),
        Some(want) => allowed
            .iter()
            .find(|a| a.name == want || a.username == want)
            .copied()
            .ok_or_else(|| {
                let names: Vec<&str> = allowed.iter().map(|a| a.name.as_str()).collect();
                format!(
                    "policy {:?} does not allow login {want:?} on {} (allowed: {})",
                    policy.name,
                    resource.name,
                    names.join(", ")
                )
            }),
    }
}

/// Whether a local forward (`ssh -L`) may open under `policy`. The error is
/// the message the user reads.
pub fn may_forward(policy: &Policy, resource: &str, host: &str, port: u32) -> Result<(), String> {
    if policy.port_forward {
        Ok(())
    } else {
        Err(format!(
            "policy {:?} does not allow port forwarding on {resource} (to {host}:{port})",
            policy.name
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Policies;
    use tunnel_proto::{Secret, StreamKind};

    fn resource(accounts: &[(&str, &str)]) -> Resource {
        Resource {
            name: "web-1".into(),
            kind: StreamKind::Ssh,
            target: "10.0.2.7:22".into(),
            listen_port: 0,
            selector: crate::registry::Selector {
                name: Some("a".into()),
                tags: Default::default(),
            },
            database: None,
            accounts: accounts
                .iter()
                .map(|(n, u)| Account {
                    name: n.to_string(),
                    username: u.to_string(),
                    password: Secret::new("pw".into()),
                    key: None,
                })
                .collect(),
        }
    }

    fn policy(yaml: &str) -> Policy {
        let p = Policies::parse(&format!("policies: [{{{yaml}}}]"), "p").expect("policy");
        let first = p.iter().next().expect("one").clone();
        first
    }

    #[test]
    fn login_choice() {
        let two = resource(&[("deploy", "deploy"), ("root", "root")]);
        let one = resource(&[("ops", "ubuntu")]);
        let base = "name: p, users: [u], resources: [web-1]";
        for (pol, res, want, got) in [
            (base.to_string(), &one, None, Ok("ops")),
            (base.to_string(), &one, Some("ops"), Ok("ops")),
            // The target user name works as well as the account name.
            (base.to_string(), &one, Some("ubuntu"), Ok("ops")),
            (
                base.to_string(),
                &one,
                Some("root"),
                Err("does not allow login \"root\""),
            ),
            (base.to_string(), &two, None, Err("several accounts")),
            (format!("{base}, account: deploy"), &two, None, Ok("deploy")),
            (
                format!("{base}, account: deploy"),
                &two,
                Some("root"),
                Err("allowed: deploy"),
            ),
            (
                format!("{base}, logins: [root, deploy]"),
                &two,
                None,
                Ok("root"),
            ),
            (
                format!("{base}, account: deploy, logins: [root]"),
                &two,
                Some("root"),
                Ok("root"),
            ),
            (
                format!("{base}, account: deploy, logins: [root]"),
                &two,
                None,
                Ok("deploy"),
            ),
            (
                format!("{base}, logins: [nope]"),
                &two,
                None,
                Err("no account \"nope\""),
            ),
        ] {
            let p = policy(&pol);
            let r = choose_login(&p, res, want).map(|a| a.name.as_str());
            match (r, got) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{pol} {want:?}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{pol}: {e}"),
                (r, g) => panic!("{pol} {want:?}: got {r:?}, want {g:?}"),
            }
        }
    }

    #[test]
    fn forwarding_needs_the_flag() {
        let base = "name: p, users: [u], resources: [web-1]";
        assert!(may_forward(&policy(base), "web-1", "127.0.0.1", 80)
            .expect_err("default off")
            .contains("does not allow port forwarding"));
        may_forward(
            &policy(&format!("{base}, port_forward: true")),
            "web-1",
            "h",
            1,
        )
        .expect("allowed");
    }
}
