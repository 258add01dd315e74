//! The targets an agent is willing to dial: defence in depth against a
//! compromised server. Syntax (NOVAC_ALLOW): comma-separated `CIDR[:PORTS]`,
//! PORTS being `N`, `N-M` or `*`; IPv6 with ports as `[CIDR]:PORTS`. A bare
//! address means a single host; no PORTS means every port.

use std::{net::IpAddr, str::FromStr};

use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    net: IpNet,
    ports: (u16, u16),
}

/// `None` inside means "allow everything" (NOVAC_ALLOW unset).
#[derive(Debug, Clone, Default)]
pub struct Allowlist(Option<Vec<Rule>>);

impl Allowlist {
    pub fn allow_all() -> Self {
        Self(None)
    }

    pub fn is_allow_all(&self) -> bool {
        self.0.is_none()
    }

    pub fn allows(&self, ip: IpAddr, port: u16) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match &self.0 {
            None => true,
            Some(rules) => rules
                .iter()
                .any(|r| r.net.contains(&ip) && (r.ports.0..=r.ports.1).contains(&port)),
        }
    }
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    if s.contains('/') {
        IpNet::from_str(s).map_err(|_| format!("{s:?} is not a CIDR"))
    } else {
        IpAddr::from_str(s)
            .map(IpNet::from)
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))
    }
}

fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    if s == "*" {
        return Ok((1, u16::MAX));
    }
    let parse = |p: &str| -> Result<u16, String> {
        match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{p:?} is not a port (1-65535)")),
        }
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse(a)?, parse(b)?);
            if a > b {
                return Err(format!("port range {s:?} is reversed"));
            }
            Ok((a, b))
        }
        None => {
            let p = parse(s)?;
            Ok((p, p))
        }
    }
}

impl FromStr for Allowlist {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (net, ports) = if let Some(rest) = entry.strip_prefix('[') {
                let (net, after) = rest
                    .split_once(']')
                    .ok_or_else(|| format!("{entry:?} has '[' without ']'"))?;
                match after {
                    "" => (net, None),
                    p => (
                        net,
                        Some(
                            p.strip_prefix(':')
                                .ok_or_else(|| format!("{entry:?}: expected ':' after ']'"))?,
                        ),
                    ),
                }
            } else if entry.matches(':').count() > 1 {
                (entry, None) // bare IPv6
            } else {
                match entry.split_once(':') {
                    Some((n, p)) => (n, Some(p)),
                    None => (entry, None),
                }
            };
            rules.push(Rule {
                net: parse_net(net)?,
                ports: ports.map(parse_ports).transpose()?.unwrap_or((1, u16::MAX)),
            });
        }
        if rules.is_empty() {
            return Err("no entries (unset the variable to allow every target)".into());
        }
        Ok(Self(Some(rules)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn table() {
        let a: Allowlist = "10.0.0.0/8:5432, 10.0.2.7:22-2222, 192.168.1.0/24, [fd00::/8]:443"
            .parse()
            .expect("parse");
        let cases = [
            ("10.1.2.3", 5432, true),
            ("10.1.2.3", 5433, false),
            ("10.0.2.7", 22, true),
            ("10.0.2.7", 2222, true),
            ("10.0.2.7", 2223, false),
            ("10.0.2.8", 22, false),
            ("192.168.1.9", 1, true),
            ("192.168.2.9", 1, false),
            ("fd12::1", 443, true),
            ("fd12::1", 80, false),
            ("::ffff:10.1.2.3", 5432, true),
            ("127.0.0.1", 5432, false),
        ];
        for (addr, port, want) in cases {
            assert_eq!(a.allows(ip(addr), port), want, "{addr}:{port}");
        }
    }

    #[test]
    fn allow_all_and_errors() {
        assert!(Allowlist::allow_all().allows(ip("8.8.8.8"), 53));
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.1:0",
            "10.0.0.1:9-1",
            "host:22",
            "[fd00::/8",
        ] {
            assert!(bad.parse::<Allowlist>().is_err(), "{bad}");
        }
        let any: Allowlist = "127.0.0.1:*".parse().expect("parse");
        assert!(any.allows(ip("127.0.0.1"), 65535));
    }
}
