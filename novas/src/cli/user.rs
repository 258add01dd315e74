//! `novas user`: manage NOVAS users in the store (the same store the server
//! uses, so with a shared database every NOVAS sees the change).

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::{
    access::password,
    store::{Store, StoreUrl, UserRecord},
};

/// `novas user …`
#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
    /// NOVAS_STORE_URL (default: sqlite in the data dir)
    #[arg(long, global = true)]
    pub store_url: Option<String>,
    /// NOVAS_DATA_DIR (default ./novas-data)
    #[arg(long, global = true)]
    pub data_dir: Option<String>,
}

/// Opens the store (creating the SQLite file and its directory for a
/// first `user add` before the server ever ran) and runs the command.
pub fn main(args: UserArgs) -> anyhow::Result<()> {
    let url = super::store_url(args.store_url, args.data_dir);
    if let StoreUrl::Sqlite { path } = StoreUrl::parse(&url).context("--store-url")? {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    super::with_store(&url, |store| async move { run(&store, args.command).await })
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user (the password is prompted for, or read from stdin)
    Add {
        name: String,
        /// Comma-separated roles, e.g. dba,analyst
        #[arg(long, default_value = "")]
        roles: String,
        /// Read the password from the first line of stdin
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Replace a user's roles
    Roles {
        name: String,
        roles: String,
    },
    /// Refuse further logins of a user (sessions already open continue)
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    Remove {
        name: String,
    },
    /// List users and their roles (never their hashes)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Register an SSH public key (an OpenSSH .pub file, or - for stdin)
    AddKey {
        name: String,
        file: String,
    },
    /// List a user's SSH public keys
    Keys {
        name: String,
    },
    /// Remove an SSH public key by its SHA256:… fingerprint
    RemoveKey {
        name: String,
        fingerprint: String,
    },
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn parse_roles(s: &str) -> anyhow::Result<Vec<String>> {
    let mut roles = Vec::new();
    for r in s.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        tunnel_proto::control::validate_name(r).map_err(|m| anyhow::anyhow!("role {r:?}: {m}"))?;
        if !roles.iter().any(|x| x == r) {
            roles.push(r.to_string());
        }
    }
    Ok(roles)
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let pw = if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else {
        let a = rpassword::prompt_password("Password: ")?;
        let b = rpassword::prompt_password("Again: ")?;
        if a != b {
            bail!("the passwords differ");
        }
        a
    };
    if pw.chars().count() < 8 {
        bail!("password: use at least 8 characters");
    }
    Ok(pw)
}

/// Computes every verifier the front ends need from one password, off the
/// async threads: argon2 is deliberately slow.
pub fn credentials(name: &str, roles: Vec<String>, pw: &str) -> anyhow::Result<UserRecord> {
    let now = now_ms();
    Ok(UserRecord {
        name: name.to_string(),
        roles,
        password_argon2: password::hash(pw)?,
        scram_sha256: crate::postgres::ScramVerifier::generate(pw).to_string(),
        mysql_native: crate::mysql::auth::native_verifier(pw),
        disabled: false,
        created_at_ms: now,
        updated_at_ms: now,
    })
}

pub async fn run(store: &Store, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            name,
            roles,
            password_stdin,
        } => {
            tunnel_proto::control::validate_name(&name)
                .map_err(|m| anyhow::anyhow!("user name {name:?}: {m}"))?;
            if store.get_user(&name).await?.is_some() {
                bail!("user {name:?} exists (use `novas user passwd` or `roles`)");
            }
            let roles = parse_roles(&roles)?;
            let pw = read_password(password_stdin)?;
            let rec = credentials(&name, roles, &pw)?;
            store.upsert_user(&rec).await?;
            println!("user {name} created");
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let old = existing(store, &name).await?;
            let pw = read_password(password_stdin)?;
            let mut rec = credentials(&name, old.roles, &pw)?;
            rec.created_at_ms = old.created_at_ms;
            rec.disabled = old.disabled;
            store.upsert_user(&rec).await?;
            println!("password of {name} changed");
        }
        UserCommand::Roles { name, roles } => {
            let mut rec = existing(store, &name).await?;
            rec.roles = parse_roles(&roles)?;
            rec.updated_at_ms = now_ms();
            store.upsert_user(&rec).await?;
            println!("roles of {name}: {}", rec.roles.join(","));
        }
        UserCommand::Disable { name } => set_disabled(store, &name, true).await?,
        UserCommand::Enable { name } => set_disabled(store, &name, false).await?,
        UserCommand::Remove { name } => {
            if !store.delete_user(&name).await? {
                bail!("no user {name:?}");
            }
            println!("user {name} removed");
        }
        UserCommand::AddKey { name, file } => {
            existing(store, &name).await?;
            let text = if file == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                s
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?
            };
            let key = russh::keys::PublicKey::from_openssh(text.trim())
                .with_context(|| format!("{file}: not an OpenSSH public key"))?;
            let fingerprint = crate::ssh::hostkey::fingerprint(&key);
            if store
                .user_keys(&name)
                .await?
                .iter()
                .any(|k| k.fingerprint == fingerprint)
            {
                bail!("user {name:?} already has key {fingerprint}");
            }
            store
                .add_user_key(&crate::store::UserKeyRecord {
                    user: name.clone(),
                    fingerprint: fingerprint.clone(),
                    public_key: key.to_openssh()?,
                    added_at_ms: now_ms(),
                })
                .await?;
            println!("key {fingerprint} added for {name}");
        }
        UserCommand::Keys { name } => {
            existing(store, &name).await?;
            for k in store.user_keys(&name).await? {
                println!("{}  {}", k.fingerprint, k.public_key);
            }
        }
        UserCommand::RemoveKey { name, fingerprint } => {
            if !store.remove_user_key(&name, &fingerprint).await? {
                bail!("user {name:?} has no key {fingerprint}");
            }
            println!("key {fingerprint} removed from {name}");
        }
        UserCommand::List { json } => {
            let users = store.list_users().await?;
            if json {
                let list: Vec<_> = users
                    .iter()
                    .map(|u| {
                        serde_json::json!({
                            "name": u.name,
                            "roles": u.roles,
                            "disabled": u.disabled,
                            "created_at_ms": u.created_at_ms,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<24} {:<9} ROLES", "NAME", "STATUS");
                for u in users {
                    let status = if u.disabled { "disabled" } else { "active" };
                    println!("{:<24} {:<9} {}", u.name, status, u.roles.join(","));
                }
            }
        }
    }
    Ok(())
}

async fn existing(store: &Store, name: &str) -> anyhow::Result<UserRecord> {
    store
        .get_user(name)
        .await?
        .with_context(|| format!("no user {name:?}"))
}

async fn set_disabled(store: &Store, name: &str, disabled: bool) -> anyhow::Result<()> {
    let mut rec = existing(store, name).await?;
    rec.disabled = disabled;
    rec.updated_at_ms = now_ms();
    store.upsert_user(&rec).await?;
    println!(
        "user {name} {}",
        if disabled { "disabled" } else { "enabled" }
    );
    Ok(())
}
