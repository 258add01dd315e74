//! `novas tunnels`: the registry of a running NOVAS as a table.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use anyhow::{bail, Context};

use crate::registry::AgentView;

/// Fetches `/api/tunnels` from `url` (`http://host:port`).
pub fn fetch(url: &str, token: &str) -> anyhow::Result<Vec<AgentView>> {
    let hostport = url
        .strip_prefix("http://")
        .with_context(|| format!("NOVAS_URL {url:?}: only http://host:port is supported"))?
        .trim_end_matches('/');
    let mut conn =
        TcpStream::connect(hostport).with_context(|| format!("cannot connect to {hostport}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        conn,
        "GET /api/tunnels HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    conn.take(64 * 1024 * 1024).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status == "401" {
        bail!("the server refused the admin token (set NOVAS_ADMIN_TOKEN or --data-dir)");
    }
    if status != "200" {
        bail!("GET /api/tunnels answered {status}");
    }
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_string()
    };
    serde_json::from_str(&body).context("unexpected /api/tunnels JSON")
}

fn dechunk(mut s: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").context("bad chunk")?;
        let n = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..n).context("short chunk")?);
        s = rest.get(n + 2..).context("short chunk")?;
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Renders the registry as an aligned table.
pub fn table(agents: &[AgentView]) -> String {
    let header = [
        "NAME",
        "TAGS",
        "REMOTE",
        "NODE",
        "VERSION",
        "CONNECTED",
        "LAST-HEARTBEAT",
        "STREAMS",
        "BYTES-IN",
        "BYTES-OUT",
    ];
    let rows: Vec<[String; 10]> = agents
        .iter()
        .map(|a| {
            let tags: Vec<String> = a.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            [
                a.name.clone(),
                if tags.is_empty() {
                    "-".into()
                } else {
                    tags.join(";")
                },
                a.remote_addr.clone(),
                a.node.clone(),
                a.agent_version.clone(),
                a.connected_since.clone(),
                a.last_heartbeat.clone(),
                format!("{}/{}", a.active_streams, a.streams_total),
                human_bytes(a.bytes_in),
                human_bytes(a.bytes_out),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in &rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    if rows.is_empty() {
        out.push_str("(no agents connected)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_agents() {
        let a = AgentView {
            name: "novac-1".into(),
            tags: [("VPC".to_string(), "dev".to_string())].into(),
            remote_addr: "10.0.0.2:5555".into(),
            node: "n1".into(),
            agent_version: "0.1.0".into(),
            capabilities: vec![],
            connected_since: "2026-01-01T00:00:00Z".into(),
            last_heartbeat: "2026-01-01T00:00:10Z".into(),
            rtt_ms: 0.2,
            active_streams: 1,
            streams_total: 5,
            bytes_in: 2048,
            bytes_out: 10,
            group: "VPC=dev".into(),
        };
        let t = table(&[a]);
        assert!(t.starts_with("NAME"));
        assert!(
            t.contains("novac-1")
                && t.contains("VPC=dev")
                && t.contains("2.0 KiB")
                && t.contains("1/5")
        );
        assert!(table(&[]).contains("no agents"));
        assert_eq!(
            dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").expect("chunks"),
            "abcde"
        );
    }
}
