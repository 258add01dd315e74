//! The SSH login name: which NOVAS user, which resource, which target login.
//!
//! `alice%web-1` is NOVAS user `alice` on resource `web-1` with the login
//! the policy picks; `alice%web-1%root` asks for login `root`; plain `alice`
//! names no resource (the session then lists the ones alice may use).
//! `%` because OpenSSH passes it through unchanged and it appears in
//! neither user nor resource names.

/// A parsed login name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginName {
    pub user: String,
    pub resource: Option<String>,
    pub login: Option<String>,
}

/// Longest login name accepted; OpenSSH itself allows far less.
const MAX_LEN: usize = 512;

pub fn parse(name: &str) -> Result<LoginName, String> {
    if name.len() > MAX_LEN {
        return Err(format!("login name longer than {MAX_LEN} bytes"));
    }
    let mut parts = name.split('%');
    let user = parts.next().unwrap_or_default();
    let resource = parts.next();
    let login = parts.next();
    if parts.next().is_some() {
        return Err(format!(
            "login name {name:?} has more than two '%' (use USER%RESOURCE or USER%RESOURCE%LOGIN)"
        ));
    }
    let part = |p: Option<&str>, what: &str| match p {
        Some("") => Err(format!(
            "login name {name:?}: the {what} after '%' is empty"
        )),
        Some(s) => Ok(Some(s.to_string())),
        None => Ok(None),
    };
    if user.is_empty() {
        return Err(format!("login name {name:?}: the user before '%' is empty"));
    }
    Ok(LoginName {
        user: user.to_string(),
        resource: part(resource, "resource")?,
        login: part(login, "login")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names() {
        let ok = |u: &str, r: Option<&str>, l: Option<&str>| LoginName {
            user: u.into(),
            resource: r.map(Into::into),
            login: l.map(Into::into),
        };
        assert_eq!(parse("alice"), Ok(ok("alice", None, None)));
        assert_eq!(parse("alice%web-1"), Ok(ok("alice", Some("web-1"), None)));
        assert_eq!(
            parse("alice%web-1%root"),
            Ok(ok("alice", Some("web-1"), Some("root")))
        );
        for bad in [
            "",
            "%web",
            "alice%",
            "alice%web%",
            "a%b%c%d",
            &"x".repeat(600),
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
