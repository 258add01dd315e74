//! `novas policy`: the policy document in the store, which every NOVAS on
//! that store follows within `NOVAS_POLICY_REFRESH` (see
//! [`crate::live_policies`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::{
    access::Policies,
    audit::{query::format_time, AuditEvent, EventKind},
    config::env_var,
    resources,
    store::{Store, StoreUrl},
};

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
    /// NOVAS_STORE_URL (default: sqlite in the data dir)
    #[arg(long, global = true)]
    pub store_url: Option<String>,
    /// NOVAS_DATA_DIR (default ./novas-data)
    #[arg(long, global = true)]
    pub data_dir: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file and make it the current version for every node
    Import {
        file: PathBuf,
        /// Also check it against this resources file (default NOVAS_RESOURCES, if set)
        #[arg(long)]
        resources: Option<PathBuf>,
    },
    /// Validate a policy file without storing it
    Check {
        file: PathBuf,
        #[arg(long)]
        resources: Option<PathBuf>,
    },
    /// Print the current policy document (or an older version)
    Show {
        #[arg(long)]
        version: Option<i64>,
    },
    /// List the stored versions, newest first
    History {
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
}

/// Reads and validates `file`; returns its text.
fn validated(file: &Path, resources_file: Option<PathBuf>) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let policies = Policies::parse(&text, &file.display().to_string())?;
    let resources_file = resources_file.or_else(|| env_var("NOVAS_RESOURCES").map(PathBuf::from));
    if let Some(r) = resources_file {
        let res = resources::load(&r).with_context(|| format!("resources {}", r.display()))?;
        resources::check_policies(&res, &policies).map_err(|m| anyhow::anyhow!(m))?;
    }
    Ok(text)
}

/// Who runs the command, for the audit trail.
fn operator() -> String {
    let user = env_var("SUDO_USER")
        .or_else(|| env_var("USER"))
        .unwrap_or_else(|| "unknown".into());
    match crate::config::hostname() {
        Some(h) => format!("{user}@{h}"),
        None => user,
    }
}

pub fn main(args: PolicyArgs) -> anyhow::Result<()> {
    let cmd = args.command;
    if let PolicyCommand::Check { file, resources } = &cmd {
        validated(file, resources.clone())?;
        println!("{}: valid", file.display());
        return Ok(());
    }
    let url = super::store_url(args.store_url, args.data_dir);
    // Only `import` may create a SQLite store; reading a wrong path must
    // not leave an empty database there.
    if let StoreUrl::Sqlite { path } = StoreUrl::parse(&url).context("--store-url")? {
        match &cmd {
            PolicyCommand::Import { .. } => {
                if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
            }
            _ if !path.exists() => bail!(
                "no store at {} (set --data-dir, NOVAS_DATA_DIR or NOVAS_STORE_URL)",
                path.display()
            ),
            _ => {}
        }
    }
    super::with_store(&url, |store| async move { run(&store, cmd).await })
}

async fn run(store: &Store, cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Import { file, resources } => {
            let text = validated(&file, resources)?;
            let by = operator();
            let source = format!("novas policy import {}", file.display());
            let (version, new) = store.put_policy_doc(&text, &source, &by).await?;
            if !new {
                println!(
                    "{} is already the current version (v{version})",
                    file.display()
                );
                return Ok(());
            }
            let mut event = AuditEvent::new(EventKind::AdminChange {
                action: "policy_import".into(),
                object: format!("policies v{version}"),
                detail: source,
            })
            .user(by);
            event.node = "cli".into();
            event.normalize();
            store.insert_events(&[event]).await?;
            println!(
                "policies v{version} stored; every NOVAS on this store applies it within NOVAS_POLICY_REFRESH"
            );
        }
        PolicyCommand::Show { version } => {
            let doc = match version {
                Some(v) => store.policy_doc(v).await?,
                None => store.current_policy_doc().await?,
            };
            match doc {
                Some(d) => print!("{}", d.document),
                None if version.is_some() => bail!("no policy version {version:?} in the store"),
                None => bail!("no policies in the store yet (`novas policy import FILE`)"),
            }
        }
        PolicyCommand::History { limit } => {
            println!(
                "{:<8} {:<24} {:<24} {:<14} SOURCE",
                "VERSION", "TIME", "BY", "SHA256"
            );
            for d in store.policy_history(limit.clamp(1, 10_000)).await? {
                println!(
                    "{:<8} {:<24} {:<24} {:<14} {}",
                    d.version,
                    format_time(d.created_at_ms),
                    d.created_by,
                    &d.sha256[..d.sha256.len().min(12)],
                    d.source
                );
            }
        }
        PolicyCommand::Check { file, resources } => {
            validated(&file, resources)?;
            println!("{}: valid", file.display());
        }
    }
    Ok(())
}
