//! `novas ssh-hostkey` (the target host keys pinned on first use) and
//! `novas recordings` (list and replay SSH session recordings).

use std::{io::Write, path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::{audit::query::format_time, config::env_var, ssh::recording};

fn data_dir(arg: Option<String>) -> PathBuf {
    PathBuf::from(
        arg.or_else(|| env_var("NOVAS_DATA_DIR"))
            .unwrap_or_else(|| "novas-data".into()),
    )
}

#[derive(Debug, Args)]
pub struct HostKeyArgs {
    #[command(subcommand)]
    pub command: HostKeyCommand,
    /// NOVAS_STORE_URL (default: sqlite in the data dir)
    #[arg(long, global = true)]
    pub store_url: Option<String>,
    /// NOVAS_DATA_DIR (default ./novas-data)
    #[arg(long, global = true)]
    pub data_dir: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum HostKeyCommand {
    /// The pinned host key of every ssh resource
    List,
    /// Forget a resource's pinned key: the next session trusts and pins the key it finds
    Forget { resource: String },
}

pub fn hostkey_main(args: HostKeyArgs) -> anyhow::Result<()> {
    let url = super::store_url(args.store_url, args.data_dir);
    super::with_store(&url, |store| async move {
        match args.command {
            HostKeyCommand::List => {
                println!(
                    "{:<24} {:<24} {:<52} FIRST SEEN",
                    "RESOURCE", "TARGET", "FINGERPRINT"
                );
                for k in store.host_keys().await? {
                    println!(
                        "{:<24} {:<24} {:<52} {}",
                        k.resource,
                        k.target,
                        k.fingerprint,
                        format_time(k.first_seen_ms)
                    );
                }
            }
            HostKeyCommand::Forget { resource } => {
                if !store.forget_host_key(&resource).await? {
                    bail!("no host key pinned for {resource:?}");
                }
                println!(
                    "host key of {resource} forgotten; the next session pins the key it finds"
                );
            }
        }
        Ok(())
    })
}

#[derive(Debug, Args)]
pub struct RecordingsArgs {
    #[command(subcommand)]
    pub command: RecordingsCommand,
    /// NOVAS_DATA_DIR (default ./novas-data)
    #[arg(long, global = true)]
    pub data_dir: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RecordingsCommand {
    /// List recordings, oldest first
    List {
        #[arg(long)]
        json: bool,
    },
    /// Replay a recording in this terminal, with its timing
    Play {
        /// The recording id (see `list`)
        id: String,
        /// Playback speed factor; 0 prints everything at once
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Longest pause replayed, in seconds
        #[arg(long, default_value_t = 2.0)]
        max_idle: f64,
        /// Replay the keys typed instead of the output
        #[arg(long)]
        input: bool,
    },
}

pub fn recordings_main(args: RecordingsArgs) -> anyhow::Result<()> {
    let dir = crate::ssh::recordings_dir(&data_dir(args.data_dir));
    match args.command {
        RecordingsCommand::List { json } => list(&dir, json),
        RecordingsCommand::Play {
            id,
            speed,
            max_idle,
            input,
        } => play(&dir, &id, speed, max_idle, input),
    }
}

fn list(dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let rows = recording::list(dir).with_context(|| dir.display().to_string())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{:<40} {:<24} {:>9}  TITLE", "ID", "STARTED", "BYTES");
    for r in rows {
        let title = r.title.unwrap_or_default();
        let cmd = r.command.map(|c| format!(": {c}")).unwrap_or_default();
        println!(
            "{:<40} {:<24} {:>9}  {title}{cmd}",
            r.id,
            format_time(r.timestamp * 1000),
            r.bytes
        );
    }
    Ok(())
}

fn play(
    dir: &std::path::Path,
    id: &str,
    speed: f64,
    max_idle: f64,
    input: bool,
) -> anyhow::Result<()> {
    let Some(path) = recording::path_of(dir, id) else {
        bail!("{id:?} is not a recording id");
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{} (see `novas recordings list`)", path.display()))?;
    let (_, events) =
        recording::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let want = if input { "i" } else { "o" };
    let mut out = std::io::stdout().lock();
    let mut last = 0.0f64;
    for ev in events.iter().filter(|e| e.code == want) {
        if speed > 0.0 {
            let pause = ((ev.time - last).max(0.0)).min(max_idle.max(0.0)) / speed;
            out.flush()?;
            std::thread::sleep(Duration::from_secs_f64(pause));
        }
        last = ev.time;
        out.write_all(ev.data.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}
