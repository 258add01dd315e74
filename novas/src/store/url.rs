//! Store URLs: which backend, and a form safe to print.

use std::path::PathBuf;

use super::StoreError;

/// A parsed `NOVAS_STORE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite://PATH` (relative, or absolute as `sqlite:///abs/path`).
    Sqlite { path: PathBuf },
    /// `postgres://…` or `postgresql://…`, handed to the driver as is.
    Postgres { url: String },
    /// `mysql://…` or `mariadb://…`, handed to the driver as is.
    MySql { url: String },
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let url = url.trim();
        let bad = |msg: &str| StoreError::BadUrl {
            url: redact(url),
            msg: msg.to_string(),
        };
        let (scheme, rest) = url
            .split_once(':')
            .ok_or_else(|| bad("expected sqlite://PATH, postgres://… or mysql://…"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                // Driver options (`?mode=rwc`) are ours to choose: drop them.
                let path = path.split('?').next().unwrap_or_default();
                if path.is_empty() || path == ":memory:" {
                    return Err(bad("sqlite needs a file path (sqlite://PATH)"));
                }
                Ok(Self::Sqlite { path: path.into() })
            }
            "postgres" | "postgresql" => Ok(Self::Postgres {
                url: url.to_string(),
            }),
            "mysql" | "mariadb" => Ok(Self::MySql {
                url: url.to_string(),
            }),
            _ => Err(bad(
                "unsupported scheme (use sqlite://, postgres://, postgresql://, mysql:// or mariadb://)",
            )),
        }
    }

    /// The password in the URL, if any, so error text can be scrubbed of it.
    pub(crate) fn password(&self) -> Option<String> {
        match self {
            Self::Sqlite { .. } => None,
            Self::Postgres { url } | Self::MySql { url } => {
                let (_, after) = url.split_once("://")?;
                let authority = after.split(['/', '?']).next()?;
                let (userinfo, _) = authority.rsplit_once('@')?;
                let (_, pw) = userinfo.split_once(':')?;
                Some(pw.to_string()).filter(|p| !p.is_empty())
            }
        }
    }
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, after)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (authority, tail) = after.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// Replaces every occurrence of `secret`, as written in the URL or
/// percent-decoded, in `text` (a driver's error may quote what it was given).
pub(crate) fn scrub(mut text: String, secret: Option<&str>) -> String {
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return text;
    };
    for form in [secret.to_string(), percent_decode(secret)] {
        if !form.is_empty() && text.contains(&form) {
            text = text.replace(&form, "***");
        }
    }
    text
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_backend() {
        assert_eq!(
            StoreUrl::parse("sqlite://novas-data/novas.db").expect("rel"),
            StoreUrl::Sqlite {
                path: "novas-data/novas.db".into()
            }
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/novas/novas.db?mode=rwc").expect("abs"),
            StoreUrl::Sqlite {
                path: "/var/lib/novas/novas.db".into()
            }
        );
        for u in ["postgres://u:p@h/db", "postgresql://h/db"] {
            assert!(matches!(
                StoreUrl::parse(u).expect(u),
                StoreUrl::Postgres { .. }
            ));
        }
        for u in ["mysql://u:p@h:3306/db", "mariadb://h/db"] {
            assert!(matches!(
                StoreUrl::parse(u).expect(u),
                StoreUrl::MySql { .. }
            ));
        }
        for u in ["", "sqlite://", "sqlite::memory:", "redis://h", "novas.db"] {
            assert!(StoreUrl::parse(u).is_err(), "{u}");
        }
    }

    #[test]
    fn password_never_printed() {
        let u = "postgres://novas:s3cr%40t@db.example:5432/novas?sslmode=require";
        assert_eq!(
            redact(u),
            "postgres://novas:***@db.example:5432/novas?sslmode=require"
        );
        assert_eq!(redact("mysql://root@h/db"), "mysql://root@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
        let parsed = StoreUrl::parse(u).expect("url");
        assert_eq!(parsed.password().as_deref(), Some("s3cr%40t"));
        let e = StoreUrl::parse("redis://u:hunter2@h").expect_err("scheme");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(
            scrub("bad password hunter2".into(), Some("hunter2")),
            "bad password ***"
        );
        assert_eq!(
            scrub("for s3cr@t and s3cr%40t".into(), Some("s3cr%40t")),
            "for *** and ***"
        );
    }
}
