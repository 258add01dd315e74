//! The resources file (YAML): what users can reach, through which agents.

use std::{collections::HashSet, path::Path};

use serde::Deserialize;
use tunnel_proto::{stream::split_target, StreamKind};

use crate::registry::Selector;

/// Default range for resource ports without an explicit `listen`.
pub const DEFAULT_RANGE: (u16, u16) = (40000, 41000);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    listen_range: Option<String>,
    #[serde(default)]
    resources: Vec<RawResource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    name: String,
    kind: String,
    target: String,
    #[serde(default)]
    listen: Option<u16>,
    agent: Selector,
}

/// A validated resource.
#[derive(Debug, Clone)]
pub struct Resource {
    pub name: String,
    pub kind: StreamKind,
    pub target: String,
    pub listen_port: u16,
    pub selector: Selector,
}

/// Why a resources file is refused.
#[derive(Debug, thiserror::Error)]
pub enum ResourcesError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: {1}")]
    Parse(String, serde_yaml::Error),
    #[error("{file}: resource {name:?}: {msg}")]
    Invalid {
        file: String,
        name: String,
        msg: String,
    },
    #[error("{file}: {msg}")]
    File { file: String, msg: String },
}

pub fn load(path: &Path) -> Result<Vec<Resource>, ResourcesError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ResourcesError::Read(file.clone(), e))?;
    parse(&text, &file)
}

fn parse_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a > 0 && a <= b).then_some((a, b))
}

pub fn parse(text: &str, file: &str) -> Result<Vec<Resource>, ResourcesError> {
    let raw: File =
        serde_yaml::from_str(text).map_err(|e| ResourcesError::Parse(file.into(), e))?;
    let range = match &raw.listen_range {
        None => DEFAULT_RANGE,
        Some(s) => parse_range(s).ok_or_else(|| ResourcesError::File {
            file: file.into(),
            msg: format!("listen_range {s:?} is not like 40000-41000"),
        })?,
    };
    let invalid = |name: &str, msg: String| ResourcesError::Invalid {
        file: file.into(),
        name: name.into(),
        msg,
    };
    let mut names = HashSet::new();
    let mut used: HashSet<u16> = raw.resources.iter().filter_map(|r| r.listen).collect();
    let mut next = range.0;
    let mut out = Vec::new();
    for r in raw.resources {
        tunnel_proto::control::validate_name(&r.name).map_err(|m| invalid(&r.name, m))?;
        if !names.insert(r.name.clone()) {
            return Err(invalid(&r.name, "is declared twice".into()));
        }
        let kind = match r.kind.as_str() {
            "tcp" => StreamKind::Tcp,
            other => {
                return Err(invalid(
                    &r.name,
                    format!("kind {other:?} is not supported yet (supported: tcp)"),
                ))
            }
        };
        split_target(&r.target).map_err(|m| invalid(&r.name, m))?;
        if r.agent.name.is_none() && r.agent.tags.is_empty() {
            return Err(invalid(
                &r.name,
                "agent selector needs a name or tags".into(),
            ));
        }
        let listen_port = match r.listen {
            Some(0) => return Err(invalid(&r.name, "listen port 0".into())),
            Some(p) => p,
            None => {
                let Some(port) = (next..=range.1).find(|p| !used.contains(p)) else {
                    return Err(invalid(
                        &r.name,
                        format!("no free port left in {}-{}", range.0, range.1),
                    ));
                };
                used.insert(port);
                next = port;
                port
            }
        };
        if out.iter().any(|o: &Resource| o.listen_port == listen_port) {
            return Err(invalid(
                &r.name,
                format!("listen port {listen_port} is used twice"),
            ));
        }
        out.push(Resource {
            name: r.name,
            kind,
            target: r.target,
            listen_port,
            selector: r.agent,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_assigned_from_the_range() {
        let y = r#"
resources:
  - { name: a, kind: tcp, target: "10.0.1.5:5432", agent: { tags: { VPC: dev } } }
  - { name: b, kind: tcp, target: "db:3306", listen: 40000, agent: { name: novac-1 } }
  - { name: c, kind: tcp, target: "[fd00::1]:22", agent: { tags: { A: "1" } } }
"#;
        let r = parse(y, "t").expect("parse");
        assert_eq!(r[0].listen_port, 40001);
        assert_eq!(r[1].listen_port, 40000);
        assert_eq!(r[2].listen_port, 40002);
    }

    #[test]
    fn errors_name_file_and_resource() {
        for (y, needle) in [
            ("resources: [{name: a, kind: tcp, target: nope, agent: {name: x}}]", "\"a\""),
            ("resources: [{name: a, kind: ftp, target: h:1, agent: {name: x}}]", "not supported"),
            ("resources: [{name: a, kind: tcp, target: h:1, agent: {}}]", "selector"),
            ("resources: [{name: a, kind: tcp, target: h:1, agent: {name: x}, extra: 1}]", "extra"),
            (
                "resources: [{name: a, kind: tcp, target: h:1, agent: {name: x}}, {name: a, kind: tcp, target: h:2, agent: {name: x}}]",
                "twice",
            ),
        ] {
            let e = parse(y, "res.yaml").expect_err(y).to_string();
            assert!(e.contains("res.yaml") && e.contains(needle), "{e}");
        }
    }
}
