//! `novas audit`: search the audit trail straight from the store.

use anyhow::{bail, Context};
use clap::Args;

use crate::{
    audit::{
        now_ms,
        query::{format_time, parse_time},
        AuditEvent, AuditQuery, Decision, EventKind, EventType,
    },
    store::StoreUrl,
};

/// Statement text is cut to this many characters in the table.
const TEXT_WIDTH: usize = 60;

#[derive(Debug, Clone, Default, Args)]
pub struct AuditArgs {
    /// Only events of this NOVAS user
    #[arg(long)]
    pub user: Option<String>,
    /// Only events on this resource
    #[arg(long)]
    pub resource: Option<String>,
    /// session_open, session_close, statement, login_failure, command, access_denied,
    /// admin_change, agent_connect or agent_disconnect
    #[arg(long)]
    pub kind: Option<String>,
    /// allow or deny (statements)
    #[arg(long)]
    pub decision: Option<String>,
    /// From this time: a duration ago (1h, 30m), RFC 3339 or unix ms
    #[arg(long)]
    pub since: Option<String>,
    /// Before this time (same forms as --since)
    #[arg(long)]
    pub until: Option<String>,
    /// Only this session id
    #[arg(long)]
    pub session: Option<String>,
    /// Statement text contains this (any case)
    #[arg(long, short = 'q')]
    pub text: Option<String>,
    /// Most events shown (default 100, at most 1000)
    #[arg(long)]
    pub limit: Option<u32>,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// NOVAS_STORE_URL (default sqlite://$NOVAS_DATA_DIR/novas.db)
    #[arg(long)]
    pub store_url: Option<String>,
    /// NOVAS_DATA_DIR holding the default SQLite store
    #[arg(long)]
    pub data_dir: Option<String>,
}

impl AuditArgs {
    /// The search the flags describe; errors name the flag.
    pub fn query(&self, now_ms: i64) -> anyhow::Result<AuditQuery> {
        let time = |flag: &str, v: &Option<String>| {
            v.as_deref()
                .map(|s| parse_time(s, now_ms).map_err(|m| anyhow::anyhow!("--{flag}: {m}")))
                .transpose()
        };
        let q = AuditQuery {
            user: self.user.clone(),
            resource: self.resource.clone(),
            kind: self
                .kind
                .as_deref()
                .map(str::parse::<EventType>)
                .transpose()
                .map_err(|m| anyhow::anyhow!("--kind: {m}"))?,
            decision: self
                .decision
                .as_deref()
                .map(str::parse::<Decision>)
                .transpose()
                .map_err(|m| anyhow::anyhow!("--decision: {m}"))?,
            since_ms: time("since", &self.since)?,
            until_ms: time("until", &self.until)?,
            session_id: self.session.clone(),
            text: self.text.clone(),
            limit: self.limit,
        };
        if self.limit == Some(0) {
            bail!("--limit: must be at least 1");
        }
        if let (Some(s), Some(u)) = (q.since_ms, q.until_ms) {
            if s >= u {
                bail!("--until: must be later than --since");
            }
        }
        Ok(q)
    }

    fn store_url(&self) -> String {
        super::store_url(self.store_url.clone(), self.data_dir.clone())
    }
}

/// Runs the search and prints it.
pub fn run(args: AuditArgs) -> anyhow::Result<()> {
    let q = args.query(now_ms())?;
    let url = args.store_url();
    // Reading must not leave an empty database where a wrong path pointed.
    if let StoreUrl::Sqlite { path } = StoreUrl::parse(&url).context("--store-url")? {
        if !path.exists() {
            bail!(
                "no store at {} (set --data-dir, NOVAS_DATA_DIR or NOVAS_STORE_URL)",
                path.display()
            );
        }
    }
    let events = super::with_store(
        &url,
        |store| async move { Ok(store.query_events(&q).await?) },
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&events)?);
    } else {
        print!("{}", table(&events));
    }
    Ok(())
}

fn cut(s: &str, width: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= width {
        return one_line;
    }
    let mut t: String = one_line.chars().take(width.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// The TEXT column: statement text, or what else the event says.
fn summary(ev: &EventKind) -> String {
    match ev {
        EventKind::SessionOpen {
            agent,
            client_addr,
            account,
        } => format!(
            "from {client_addr} as {} via {}",
            account.as_deref().unwrap_or("-"),
            agent.as_deref().unwrap_or("-")
        ),
        EventKind::SessionClose {
            outcome,
            bytes_up,
            bytes_down,
            duration_ms,
            exit_status,
        } => {
            let mut s =
                format!("{outcome} after {duration_ms} ms, {bytes_up} B up, {bytes_down} B down");
            if let Some(code) = exit_status {
                s.push_str(&format!(", exit status {code}"));
            }
            s
        }
        EventKind::Statement { text, error, .. } => match error {
            Some(e) => format!("{text}  [error: {e}]"),
            None => text.clone(),
        },
        EventKind::LoginFailure {
            client_addr,
            reason,
        }
        | EventKind::AccessDenied {
            client_addr,
            reason,
        } => format!("from {client_addr}: {reason}"),
        EventKind::Command {
            channel,
            text,
            error,
            ..
        } => match error {
            Some(e) => format!("{channel}: {text}  [error: {e}]"),
            None => format!("{channel}: {text}"),
        },
        EventKind::AgentConnect {
            agent,
            remote_addr,
            tags,
            agent_version,
        } => format!("agent {agent} from {remote_addr} [{tags}] version {agent_version}"),
        EventKind::AgentDisconnect {
            agent,
            reason,
            connected_ms,
        } => format!("agent {agent}: {reason} after {connected_ms} ms"),
        EventKind::AdminChange {
            action,
            object,
            detail,
        } => format!("{action} {object}: {detail}"),
        EventKind::KubeRequest(k) => {
            let mut s = format!(
                "{} -> {} as {}, {} B, {} ms",
                k.text, k.status, k.kube_user, k.bytes_down, k.duration_ms
            );
            if let Some(r) = &k.recording {
                s.push_str(&format!(", recording {r}"));
            }
            if let Some(e) = &k.error {
                s.push_str(&format!("  [{e}]"));
            }
            s
        }
    }
}

/// Renders events as an aligned table, newest first as given.
pub fn table(events: &[AuditEvent]) -> String {
    let header = [
        "TIME", "USER", "RESOURCE", "KIND", "DECISION", "POLICY", "TEXT",
    ];
    let dash = || "-".to_string();
    let rows: Vec<[String; 7]> = events
        .iter()
        .map(|e| {
            let kind = match &e.event {
                EventKind::Statement { kind, .. } => format!("statement/{kind}"),
                EventKind::KubeRequest(k) => format!("kube/{}", k.verb),
                other => other.event_type().to_string(),
            };
            [
                format_time(e.time_ms),
                e.user.clone().unwrap_or_else(dash),
                e.resource.clone().unwrap_or_else(dash),
                kind,
                e.event
                    .decision()
                    .map_or_else(dash, |d| d.as_str().to_string()),
                e.event.policy().map_or_else(dash, str::to_string),
                cut(&summary(&e.event), TEXT_WIDTH),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    if rows.is_empty() {
        out.push_str("(no matching audit events)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::env_var, store::test_util::sample_events};

    #[test]
    fn table_shows_events() {
        let mut events = sample_events(1_767_225_600_000);
        if let EventKind::Statement { text, .. } = &mut events[1].event {
            *text = format!("SELECT\n{}", "x, ".repeat(100));
        }
        let t = table(&events);
        assert!(t.starts_with("TIME"));
        assert!(t.contains("2026-01-01T00:00:00.000Z"));
        assert!(t.contains("statement/ddl") && t.contains("deny") && t.contains("no-ddl"));
        assert!(t.contains("login_failure") && t.contains("bad password"));
        assert!(t.contains("SELECT x, x,") && t.contains('…'), "{t}");
        assert!(t.lines().all(|l| l.chars().count() < 200), "{t}");
        assert!(table(&[]).contains("no matching"));
    }

    #[test]
    fn flags_become_a_query() {
        let args = AuditArgs {
            user: Some("alice".into()),
            kind: Some("statement".into()),
            decision: Some("deny".into()),
            since: Some("1h".into()),
            ..Default::default()
        };
        let q = args.query(10_000_000).expect("valid");
        assert_eq!(q.since_ms, Some(10_000_000 - 3_600_000));
        assert_eq!(q.decision, Some(Decision::Deny));
        for (bad, flag) in [
            (
                AuditArgs {
                    decision: Some("perhaps".into()),
                    ..Default::default()
                },
                "--decision",
            ),
            (
                AuditArgs {
                    since: Some("later".into()),
                    ..Default::default()
                },
                "--since",
            ),
            (
                AuditArgs {
                    kind: Some("query".into()),
                    ..Default::default()
                },
                "--kind",
            ),
        ] {
            let e = bad.query(0).expect_err(flag).to_string();
            assert!(e.starts_with(flag), "{e}");
        }
        let args = AuditArgs {
            data_dir: Some("/srv/novas".into()),
            ..Default::default()
        };
        if env_var("NOVAS_STORE_URL").is_none() {
            assert_eq!(args.store_url(), "sqlite:///srv/novas/novas.db");
        }
    }

    #[tokio::test]
    async fn reads_a_store_file() {
        let (store, dir) = crate::store::test_util::sqlite_store().await;
        store
            .insert_events(&sample_events(1_000))
            .await
            .expect("insert");
        store.close().await;
        let args = AuditArgs {
            data_dir: Some(dir.path().display().to_string()),
            store_url: Some(format!(
                "sqlite://{}",
                dir.path().join("novas.db").display()
            )),
            ..Default::default()
        };
        // `run` owns a runtime of its own: call it from a plain thread.
        let out = std::thread::spawn(move || run(args))
            .join()
            .expect("thread");
        out.expect("audit run");
        let missing = AuditArgs {
            store_url: Some(format!("sqlite://{}", dir.path().join("nope.db").display())),
            ..Default::default()
        };
        let e = run(missing).expect_err("no such store").to_string();
        assert!(e.contains("no store at"), "{e}");
        assert!(!dir.path().join("nope.db").exists());
    }
}
