//! One task per client channel, relaying it to a channel of the same kind
//! on the target.
//!
//! A session channel first collects the requests that come before the
//! command (pty size, environment), then, on `shell`, `exec` or
//! `subsystem`, checks access, audits, opens the target channel, replays
//! them, and relays both directions concurrently (each direction waits for
//! its own flow-control window, so one stalled side never blocks the
//! other). Shells and commands are recorded; subsystems (sftp) are not:
//! they carry file contents, not a terminal.

use std::sync::Arc;

use russh::{client, server, Channel, ChannelMsg, ChannelWriteHalf, Pty};

use super::{
    conn::{Access, ConnState},
    menu,
    recording::{Header, Recorder},
    SshError,
};
use crate::audit::{Decision, EventKind};

/// What a session channel asked to run.
enum Start {
    Shell,
    Exec(String),
    Subsystem(String),
}

impl Start {
    fn channel(&self) -> &'static str {
        match self {
            Start::Shell => "shell",
            Start::Exec(_) => "exec",
            Start::Subsystem(_) => "subsystem",
        }
    }

    fn text(&self) -> &str {
        match self {
            Start::Shell => "",
            Start::Exec(c) | Start::Subsystem(c) => c,
        }
    }
}

struct PtyReq {
    term: String,
    cols: u32,
    rows: u32,
    px_w: u32,
    px_h: u32,
    modes: Vec<(Pty, u32)>,
}

/// Tells the user why, on stderr, and ends the channel with status 1.
async fn refuse(tx: &ChannelWriteHalf<server::Msg>, msg: &str) {
    let text = format!("novas: {msg}\r\n");
    let _ = tx.extended_data_bytes(1, text.into_bytes()).await;
    let _ = tx.exit_status(1).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

pub async fn session_channel(
    state: Arc<ConnState>,
    channel: Channel<server::Msg>,
    handle: server::Handle,
) {
    let (mut rx, tx) = channel.split();
    let mut pty: Option<PtyReq> = None;
    let mut env: Vec<(String, String)> = Vec::new();
    let start = loop {
        match rx.wait().await {
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            }) => {
                pty = Some(PtyReq {
                    term,
                    cols: col_width,
                    rows: row_height,
                    px_w: pix_width,
                    px_h: pix_height,
                    modes: terminal_modes,
                })
            }
            Some(ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            }) => {
                if let Some(p) = pty.as_mut() {
                    (p.cols, p.rows) = (col_width, row_height);
                }
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) => env.push((variable_name, variable_value)),
            Some(ChannelMsg::RequestShell { .. }) => break Start::Shell,
            Some(ChannelMsg::Exec { command, .. }) => {
                break Start::Exec(String::from_utf8_lossy(&command).into_owned())
            }
            Some(ChannelMsg::RequestSubsystem { name, .. }) => break Start::Subsystem(name),
            Some(ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    };
    let mut access = state.current();
    if let Some(Access::Choose(names)) = access {
        if !matches!(start, Start::Shell) || pty.is_none() {
            let msg = format!(
                "name the resource in the login, e.g. `ssh -p PORT {}%RESOURCE@HOST`; resources you may use: {}",
                state.user().unwrap_or("USER"),
                names.join(", ")
            );
            return refuse(&tx, &msg).await;
        }
        match menu_choice(&state, &mut rx, &tx, names, pty.as_mut()).await {
            Some(name) => access = Some(state.choose(&name)),
            None => return refuse(&tx, "no resource chosen").await,
        }
    }
    let grant = match access {
        Some(Access::Granted(g)) => g,
        Some(Access::Refused(msg)) => return refuse(&tx, msg).await,
        Some(Access::Choose(_)) | None => return refuse(&tx, "not logged in").await,
    };
    // Fail closed: a command the audit cannot record does not run.
    let audited = state.front.dac.auditor.check().is_ok()
        && state
            .emit(EventKind::Command {
                channel: start.channel().into(),
                text: start.text().into(),
                decision: Decision::Allow,
                policy: grant.policy.name.clone(),
                error: None,
            })
            .is_ok();
    if !audited {
        return refuse(&tx, &SshError::Audit.to_string()).await;
    }
    tracing::info!(
        channel = start.channel(),
        command = start.text(),
        "ssh channel starting"
    );
    let up = match state.upstream().await {
        Ok(up) => up,
        Err(msg) => return refuse(&tx, &msg).await,
    };
    let target = match up.handle.channel_open_session().await {
        Ok(c) => c,
        Err(e) => return refuse(&tx, &format!("the target refused a session channel: {e}")).await,
    };
    if let Some(p) = &pty {
        let _ = target
            .request_pty(false, &p.term, p.cols, p.rows, p.px_w, p.px_h, &p.modes)
            .await;
    }
    for (k, v) in env {
        let _ = target.set_env(false, k, v).await;
    }
    let sent = match &start {
        Start::Shell => target.request_shell(true).await,
        Start::Exec(cmd) => target.exec(true, cmd.as_bytes()).await,
        Start::Subsystem(name) => target.request_subsystem(true, name.as_str()).await,
    };
    if let Err(e) = sent {
        return refuse(&tx, &format!("the target connection failed: {e}")).await;
    }
    let recorder = match &start {
        Start::Subsystem(_) => None,
        _ => open_recording(&state, &start, pty.as_ref()),
    };
    let (urx, utx) = target.split();
    let id = tx.id();
    let down = downstream(&state, urx, &tx, &handle, id, recorder.as_deref());
    let upward = upstream_dir(rx, &utx, recorder.as_deref());
    tokio::pin!(down);
    tokio::select! {
        _ = &mut down => {}
        _ = upward => { down.await }
    }
    if let Some(r) = &recorder {
        r.finish();
    }
}

/// Shows the menu and reads a choice, at most three tries.
async fn menu_choice(
    state: &ConnState,
    rx: &mut russh::ChannelReadHalf,
    tx: &ChannelWriteHalf<server::Msg>,
    names: &[String],
    mut pty: Option<&mut PtyReq>,
) -> Option<String> {
    let user = state.user().unwrap_or("-");
    for _ in 0..3 {
        tx.data_bytes(menu::render(user, names).into_bytes())
            .await
            .ok()?;
        let mut input = menu::LineInput::default();
        let line = loop {
            match rx.wait().await? {
                ChannelMsg::Data { data } => match input.feed(&data) {
                    menu::Typed::More(echo) => {
                        tx.data_bytes(echo).await.ok()?;
                    }
                    menu::Typed::Line(line, echo) => {
                        tx.data_bytes(echo).await.ok()?;
                        break line;
                    }
                    menu::Typed::Cancel => return None,
                },
                ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    ..
                } => {
                    if let Some(p) = pty.as_deref_mut() {
                        (p.cols, p.rows) = (col_width, row_height);
                    }
                }
                ChannelMsg::Eof | ChannelMsg::Close => return None,
                _ => {}
            }
        };
        if let Some(name) = menu::pick(&line, names) {
            return Some(name.clone());
        }
        let again = format!("no choice {:?}\r\n", line.trim());
        tx.data_bytes(again.into_bytes()).await.ok()?;
    }
    None
}

fn open_recording(state: &ConnState, start: &Start, pty: Option<&PtyReq>) -> Option<Arc<Recorder>> {
    let grant = state.grant()?;
    let n = state.next_channel();
    let id = format!("{}-{n}", state.session_id);
    let header = Header {
        version: 2,
        width: pty.map_or(80, |p| p.cols),
        height: pty.map_or(24, |p| p.rows),
        timestamp: crate::audit::now_ms() / 1000,
        title: Some(format!(
            "{}@{} as {} ({})",
            state.user().unwrap_or("-"),
            grant.resource.name,
            grant.account.username,
            start.channel()
        )),
        command: match start {
            Start::Exec(c) => Some(c.clone()),
            _ => None,
        },
    };
    match Recorder::create(&state.front.recordings, &id, &header) {
        Ok(r) => {
            tracing::info!(recording = %r.path.display(), "recording");
            Some(Arc::new(r))
        }
        Err(e) => {
            tracing::error!(error = %e, dir = %state.front.recordings.display(), "cannot create the recording");
            None
        }
    }
}

/// Client → target.
async fn upstream_dir(
    mut rx: russh::ChannelReadHalf,
    utx: &ChannelWriteHalf<client::Msg>,
    rec: Option<&Recorder>,
) {
    while let Some(msg) = rx.wait().await {
        let r = match msg {
            ChannelMsg::Data { data } => {
                if let Some(r) = rec {
                    r.input(&data);
                }
                utx.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => utx.extended_data_bytes(ext, data).await,
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                if let Some(r) = rec {
                    r.resize(col_width, row_height);
                }
                utx.window_change(col_width, row_height, pix_width, pix_height)
                    .await
            }
            ChannelMsg::Signal { signal } => utx.signal(signal).await,
            ChannelMsg::Eof => utx.eof().await,
            ChannelMsg::Close => {
                let _ = utx.close().await;
                return;
            }
            _ => Ok(()),
        };
        if r.is_err() {
            return;
        }
    }
    let _ = utx.close().await;
}

/// Target → client. Returns when the target closes the channel.
async fn downstream(
    state: &ConnState,
    mut urx: russh::ChannelReadHalf,
    tx: &ChannelWriteHalf<server::Msg>,
    handle: &server::Handle,
    id: russh::ChannelId,
    rec: Option<&Recorder>,
) {
    while let Some(msg) = urx.wait().await {
        let r = match msg {
            ChannelMsg::Data { data } => {
                if let Some(r) = rec {
                    r.output(&data);
                }
                tx.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                if let Some(r) = rec {
                    r.output(&data);
                }
                tx.extended_data_bytes(ext, data).await
            }
            ChannelMsg::Eof => tx.eof().await,
            ChannelMsg::ExitStatus { exit_status } => {
                if let Ok(mut g) = state.exit_status.lock() {
                    *g = Some(exit_status);
                }
                tracing::info!(exit_status, "ssh channel exit status");
                tx.exit_status(exit_status).await
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => {
                let _ = handle
                    .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                    .await;
                Ok(())
            }
            ChannelMsg::Failure => {
                refuse(tx, "the target refused the request").await;
                return;
            }
            ChannelMsg::Close => break,
            _ => Ok(()),
        };
        if r.is_err() {
            break;
        }
    }
    let _ = tx.close().await;
}

/// A `-L` forward: a direct-tcpip channel on the target, bytes both ways.
pub async fn forward(
    state: Arc<ConnState>,
    channel: Channel<server::Msg>,
    host: String,
    port: u32,
    orig: String,
    orig_port: u32,
) {
    let up = match state.upstream().await {
        Ok(up) => up,
        Err(msg) => {
            tracing::info!(%msg, "port forward without a target connection");
            let _ = channel.close().await;
            return;
        }
    };
    let target = match up
        .handle
        .channel_open_direct_tcpip(host.clone(), port, orig, orig_port)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(error = %e, target = %format!("{host}:{port}"), "the target refused the forward");
            let _ = channel.close().await;
            return;
        }
    };
    let mut a = channel.into_stream();
    let mut b = target.into_stream();
    match tokio::io::copy_bidirectional(&mut a, &mut b).await {
        Ok((up_n, down_n)) => {
            tracing::info!(bytes_up = up_n, bytes_down = down_n, "port forward closed")
        }
        Err(e) => tracing::info!(error = %e, "port forward ended"),
    }
}
