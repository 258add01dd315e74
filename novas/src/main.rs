use std::process::ExitCode;

use clap::{Parser, Subcommand};
use novas::{
    cli,
    config::{env_var, Config, LogFormat, ServeFlags},
    secrets,
};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "novas", version, about = "NOVA access server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeFlags,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default)
    Serve(Box<ServeFlags>),
    /// Print the connected agents of a running NOVAS
    Tunnels {
        /// NOVAS_URL: base URL of the HTTP listener (default http://127.0.0.1:$NOVAS_HTTP_PORT)
        #[arg(long)]
        url: Option<String>,
        /// NOVAS_ADMIN_TOKEN (default: read from the data dir)
        #[arg(long)]
        token: Option<String>,
        /// NOVAS_DATA_DIR holding the admin-token file
        #[arg(long)]
        data_dir: Option<String>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Manage NOVAS users (reads and writes the store directly)
    User(Box<cli::user::UserArgs>),
    /// The policy document every NOVAS on the store enforces (import, show, history)
    Policy(Box<cli::policy::PolicyArgs>),
    /// Search the audit trail (reads the store directly)
    Audit(Box<cli::audit::AuditArgs>),
    /// Target host keys pinned on first use by the SSH front end
    SshHostkey(Box<cli::ssh::HostKeyArgs>),
    /// List and replay SSH session recordings (asciicast v2)
    Recordings(Box<cli::ssh::RecordingsArgs>),
    /// Issue a Kubernetes (KAC) token for a user and print a ready kubeconfig
    Kubeconfig(Box<cli::kube::KubeconfigArgs>),
    /// Print the SHA-256 fingerprint agents pin (NOVAC_SERVER_FINGERPRINT)
    Fingerprint {
        #[arg(long)]
        data_dir: Option<String>,
        /// A PEM certificate instead of the generated one
        #[arg(long)]
        cert: Option<String>,
    },
    /// Print a fresh random token (for NOVAS_AGENT_TOKEN)
    GenToken,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(flags)) => serve(*flags),
        Some(Command::Tunnels {
            url,
            token,
            data_dir,
            json,
        }) => tunnels(url, token, data_dir, json),
        Some(Command::Audit(args)) => cli::audit::run(*args),
        Some(Command::User(args)) => cli::user::main(*args),
        Some(Command::Policy(args)) => cli::policy::main(*args),
        Some(Command::SshHostkey(args)) => cli::ssh::hostkey_main(*args),
        Some(Command::Recordings(args)) => cli::ssh::recordings_main(*args),
        Some(Command::Kubeconfig(args)) => cli::kube::main(*args),
        Some(Command::Fingerprint { data_dir, cert }) => {
            cli::fingerprint(data_dir.or_else(|| env_var("NOVAS_DATA_DIR")), cert)
                .map(|fp| println!("{fp}"))
        }
        Some(Command::GenToken) => {
            println!("{}", secrets::generate_token());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn tunnels(
    url: Option<String>,
    token: Option<String>,
    data_dir: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let url = url.or_else(|| env_var("NOVAS_URL")).unwrap_or_else(|| {
        format!(
            "http://127.0.0.1:{}",
            env_var("NOVAS_HTTP_PORT").unwrap_or_else(|| "80".into())
        )
    });
    let dir = data_dir
        .or_else(|| env_var("NOVAS_DATA_DIR"))
        .unwrap_or_else(|| "novas-data".into());
    let token = token
        .or_else(|| env_var("NOVAS_ADMIN_TOKEN"))
        .or_else(|| {
            secrets::read(dir.as_ref(), secrets::ADMIN_TOKEN_FILE).map(|s| s.expose().to_string())
        })
        .ok_or_else(|| {
            anyhow::anyhow!("NOVAS_ADMIN_TOKEN: unset and no {dir}/admin-token to read")
        })?;
    let agents = cli::tunnels::fetch(&url, &token)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&agents)?);
    } else {
        print!("{}", cli::tunnels::table(&agents));
    }
    Ok(())
}

fn serve(flags: ServeFlags) -> anyhow::Result<()> {
    let cfg = match Config::load(flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    init_tracing(cfg.log_format);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cfg.worker_threads {
        rt.worker_threads(n);
    }
    // Small tunnel frames of one scheduler pass leave together.
    let rt = rt
        .enable_all()
        .on_thread_park(tunnel_proto::mux::flush_behind)
        .build()?;
    let shutdown = CancellationToken::new();
    rt.spawn(signal_shutdown(shutdown.clone()));
    rt.block_on(novas::run(cfg, shutdown))
}

async fn signal_shutdown(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutdown requested");
    token.cancel();
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
