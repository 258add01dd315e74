//! Why an SSH session or channel could not reach its target. The display
//! text is what the user reads (after `novas: `), so each says what to do.

use crate::route::RouteError;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The login name named no ssh resource (client side).
    #[error("no ssh resource named {name:?}{hint}")]
    UnknownResource { name: String, hint: String },
    /// No policy lets the user reach the resource, or not as that login.
    #[error("{0}")]
    Denied(String),
    /// No agent, or the agent could not dial the target (agent side).
    #[error("cannot reach the target: {0}")]
    Route(RouteError),
    /// The target's host key differs from the pinned one (target side).
    #[error("host key of {resource} changed (expected {expected}, got {got}); if the change is expected, ask an admin to run `novas ssh-hostkey forget {resource}`")]
    HostKeyChanged {
        resource: String,
        expected: String,
        got: String,
    },
    /// The SSH handshake with the target failed (target side).
    #[error("SSH handshake with the target failed: {0}")]
    TargetHandshake(String),
    /// The target refused the stored credentials (target side).
    #[error("login to the target failed: {0}; ask an admin to check the resource's account")]
    TargetLogin(String),
    /// The store could not be read (NOVAS side, fail closed).
    #[error("the NOVAS store is unavailable ({0}); try again later")]
    Store(String),
    /// Auditing is unavailable and the session is fail-closed (NOVAS side).
    #[error("auditing is unavailable, so the session is refused; try again later")]
    Audit,
}
