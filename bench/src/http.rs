//! A minimal HTTP/1.1 GET for novas's API (one request per connection).

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Context};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// `GET path` with a bearer token; returns the status and the body.
pub async fn get(addr: SocketAddr, path: &str, bearer: &str) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(Duration::from_secs(10), get_inner(addr, path, bearer))
        .await
        .with_context(|| format!("GET http://{addr}{path} timed out"))?
}

async fn get_inner(addr: SocketAddr, path: &str, bearer: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {bearer}\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8(raw).context("response is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("response without a header end")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("response without a status")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").context("bad chunk header")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size {
            bail!("truncated chunk");
        }
        out.push_str(&rest[..size]);
        s = rest[size..].trim_start_matches("\r\n");
    }
}

/// The agents `/api/tunnels` lists, by name.
pub async fn tunnel_names(http: SocketAddr, token: &str) -> anyhow::Result<Vec<String>> {
    let (status, body) = get(http, "/api/tunnels", token).await?;
    if status != 200 {
        bail!("/api/tunnels answered {status}: {body}");
    }
    let v: serde_json::Value = serde_json::from_str(&body).context("/api/tunnels JSON")?;
    let arr = v.as_array().context("/api/tunnels is not a JSON array")?;
    Ok(arr
        .iter()
        .filter_map(|a| a.get("name")?.as_str().map(str::to_string))
        .collect())
}
