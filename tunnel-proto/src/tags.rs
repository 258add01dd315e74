//! Agent tags: `Key=Value;Key=Value`, as operators write them in NOVAC_TAGS.

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Most tags one agent may carry.
pub const MAX_TAGS: usize = 64;
/// Longest key or value.
pub const MAX_TAG_LEN: usize = 256;

/// An agent's tags, ordered by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tags(pub BTreeMap<String, String>);

impl Tags {
    /// True when every tag of `wanted` is present here with the same value.
    pub fn contains_all(&self, wanted: &BTreeMap<String, String>) -> bool {
        wanted.iter().all(|(k, v)| self.0.get(k) == Some(v))
    }

    /// Checks sizes and characters; used on tags received from the network.
    pub fn validate(&self) -> Result<(), String> {
        if self.0.len() > MAX_TAGS {
            return Err(format!("more than {MAX_TAGS} tags"));
        }
        for (k, v) in &self.0 {
            check_key(k)?;
            check_value(k, v)?;
        }
        Ok(())
    }
}

fn check_key(k: &str) -> Result<(), String> {
    if k.is_empty() || k.len() > MAX_TAG_LEN {
        return Err(format!("tag key must be 1-{MAX_TAG_LEN} characters"));
    }
    if let Some(c) = k
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        return Err(format!(
            "tag key {k:?} has the character {c:?}; use letters, digits, '.', '_', '-' or '/'"
        ));
    }
    Ok(())
}

fn check_value(k: &str, v: &str) -> Result<(), String> {
    if v.len() > MAX_TAG_LEN {
        return Err(format!(
            "value of tag {k:?} is over {MAX_TAG_LEN} characters"
        ));
    }
    if v.chars().any(|c| c.is_control() || c == ';' || c == '=') {
        return Err(format!(
            "value of tag {k:?} has a control character, ';' or '='"
        ));
    }
    Ok(())
}

impl FromStr for Tags {
    type Err = String;

    /// Parses `Key=Value;Key=Value`. Empty input and empty segments (a
    /// trailing `;`) are allowed; a repeated key is an error.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not Key=Value"))?;
            let (k, v) = (k.trim(), v.trim());
            check_key(k)?;
            check_value(k, v)?;
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(format!("tag {k:?} is given twice"));
            }
        }
        let tags = Tags(map);
        tags.validate()?;
        Ok(tags)
    }
}

impl fmt::Display for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operator_syntax() {
        let t: Tags = "VPC=dev_infra;Env=Production;".parse().expect("parse");
        assert_eq!(t.0.get("VPC").map(String::as_str), Some("dev_infra"));
        assert_eq!(t.0.get("Env").map(String::as_str), Some("Production"));
        assert_eq!(t.to_string(), "Env=Production;VPC=dev_infra");
        assert_eq!("".parse::<Tags>().expect("empty").0.len(), 0);
    }

    #[test]
    fn rejects_bad_tags() {
        for bad in ["VPC", "=x", "a=1;a=2", "sp ace=1", "k=a\u{7}b"] {
            assert!(bad.parse::<Tags>().is_err(), "{bad}");
        }
    }

    #[test]
    fn subset_match() {
        let t: Tags = "A=1;B=2".parse().expect("parse");
        let want: Tags = "A=1".parse().expect("parse");
        assert!(t.contains_all(&want.0));
        let want: Tags = "A=2".parse().expect("parse");
        assert!(!t.contains_all(&want.0));
    }
}
