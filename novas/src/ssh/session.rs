//! The russh server handler of one client connection: authenticates the
//! NOVAS user, decides access once, and hands each channel to a relay task.
//!
//! Channel requests (pty, env, shell, exec, subsystem) are answered at once
//! here: russh keeps one "wants reply" flag per channel, so a reply sent
//! later from another task could answer the wrong request. If the target
//! then refuses, the relay says so on stderr and closes the channel.

use std::sync::Arc;

use russh::{
    server::{self, Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey},
    Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    conn::{Access, ConnState},
    hostkey, login,
    login::LoginName,
    relay,
};
use crate::{
    access::{may_forward, Identity},
    audit::{Decision, EventKind},
    users::{admit, Candidate},
};

pub struct Conn {
    state: Arc<ConnState>,
    /// Fired once logged in: disarms the login deadline.
    authed: CancellationToken,
    login: Option<LoginName>,
}

impl Conn {
    pub fn new(state: Arc<ConnState>, authed: CancellationToken) -> Self {
        Self {
            state,
            authed,
            login: None,
        }
    }

    fn reject() -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(
                &[MethodKind::PublicKey, MethodKind::Password][..],
            )),
            partial_success: false,
        }
    }

    fn failure(&self, user: &str, reason: String) {
        self.state.login_failure(user, reason);
    }

    /// Parses the login name; a bad one is a failed login.
    fn parse_login(&mut self, name: &str) -> Option<LoginName> {
        match login::parse(name) {
            Ok(l) => {
                self.login = Some(l.clone());
                Some(l)
            }
            Err(e) => {
                self.failure(name, e);
                None
            }
        }
    }

    /// Whether `key` is one of the user's registered keys.
    async fn key_registered(&self, user: &str, key: &russh::keys::PublicKey) -> bool {
        let fp = hostkey::fingerprint(key);
        match self.state.front.store.user_keys(user).await {
            Ok(keys) => keys.iter().any(|k| k.fingerprint == fp),
            Err(e) => {
                tracing::warn!(error = %e, "user key store unavailable");
                false
            }
        }
    }

    fn logged_in(&self, identity: Identity) {
        self.state.span.record("user", identity.user.as_str());
        self.state.live.set_user(&identity.user);
        let _ = self.state.identity.set(identity);
    }
}

impl server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Self::reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let Some(l) = self.parse_login(user) else {
            return Ok(Self::reject());
        };
        match self
            .state
            .front
            .dac
            .users
            .check_password(&l.user, password)
            .await
        {
            Ok(identity) => {
                self.logged_in(identity);
                Ok(Auth::Accept)
            }
            Err(e) => {
                self.failure(&l.user, format!("ssh password: {}", e.audit_reason()));
                Ok(Self::reject())
            }
        }
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let Some(l) = self.parse_login(user) else {
            return Ok(Self::reject());
        };
        if self.key_registered(&l.user, offer.public_key).await {
            return Ok(Auth::Accept);
        }
        // Audited once at the end, and only if no later method succeeds:
        // clients offer every key they hold, most of them not for us.
        self.state
            .key_rejected(&l.user, hostkey::fingerprint(offer.public_key));
        Ok(Self::reject())
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let Some(l) = self.parse_login(user) else {
            return Ok(Self::reject());
        };
        if !self.key_registered(&l.user, key.public_key).await {
            return Ok(Self::reject());
        }
        let found = self.state.front.dac.users.find(&l.user).await;
        match found.map(|c| match c {
            Candidate::Known(u) => admit(&u),
            Candidate::Unknown { name } => Err(crate::users::LoginError::Failed(name)),
        }) {
            Ok(Ok(identity)) => {
                self.logged_in(identity);
                Ok(Auth::Accept)
            }
            Ok(Err(e)) | Err(e) => {
                self.failure(&l.user, format!("ssh public key: {}", e.audit_reason()));
                Ok(Self::reject())
            }
        }
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        self.authed.cancel();
        let (Some(who), Some(login)) = (self.state.identity.get(), &self.login) else {
            return Err(russh::Error::NotAuthenticated);
        };
        let access = self
            .state
            .decide(who, login.resource.as_deref(), login.login.as_deref());
        match &access {
            Access::Granted(g) => {
                self.state.span.record("resource", g.resource.name.as_str());
                self.state.live.set_resource(&g.resource.name);
                tracing::info!(resource = %g.resource.name, login = %g.account.username, policy = %g.policy.name, "ssh login granted");
            }
            Access::Refused(reason) => {
                tracing::info!(%reason, "ssh login refused access");
                self.state.denied(reason);
            }
            Access::Choose(names) => {
                tracing::info!(choices = names.len(), "ssh login named no resource: menu");
            }
        }
        let _ = self.state.access.set(access);
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        let state = self.state.clone();
        let handle = session.handle();
        let span = self.state.span.clone();
        tokio::spawn(relay::session_channel(state, channel, handle).instrument(span));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let text = format!("{host}:{port}");
        let decision = match self.state.current() {
            Some(Access::Granted(g)) => may_forward(&g.policy, &g.resource.name, host, port)
                .map(|_| g.policy.name.clone())
                .map_err(|e| (g.policy.name.clone(), e)),
            Some(Access::Refused(r)) => Err((String::new(), r.clone())),
            Some(Access::Choose(_)) => Err((
                String::new(),
                "name the resource in the login to forward ports".into(),
            )),
            None => Err((String::new(), "not logged in".into())),
        };
        let (allowed, policy, error) = match &decision {
            Ok(p) => (true, p.clone(), None),
            Err((p, e)) => (false, p.clone(), Some(e.clone())),
        };
        // Fail closed: an unrecorded forward does not open.
        let recorded = self.state.front.dac.auditor.check().is_ok()
            && self
                .state
                .emit(EventKind::Command {
                    channel: "direct-tcpip".into(),
                    text: text.clone(),
                    decision: if allowed {
                        Decision::Allow
                    } else {
                        Decision::Deny
                    },
                    policy,
                    error: error.clone(),
                })
                .is_ok();
        if !allowed || !recorded {
            tracing::info!(target = %text, reason = ?error, "port forward refused");
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        reply.accept().await;
        let state = self.state.clone();
        let (host, orig) = (host.to_string(), originator_address.to_string());
        let span = self.state.span.clone();
        tokio::spawn(
            relay::forward(state, channel, host, port, orig, originator_port).instrument(span),
        );
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }
}
