//! The access core: who may reach which resource, as which account, and
//! which statements they may run.
//!
//! - [`sql`]: statement classification with sqlparser.
//! - [`policy`]: the policy file, `authorize` and per-statement `check`.
//! - [`ssh`]: SSH login choice and port-forward decisions.
//! - [`password`]: argon2 hashing of NOVAS user passwords.

pub mod password;
pub mod policy;
pub mod sql;
pub mod ssh;

pub(crate) use policy::glob;
pub use policy::{Denied, Identity, Permit, Policies, Policy, StatementDecision};
pub use sql::{SqlDialect, StatementKind};
pub use ssh::{choose_login, may_forward, ssh_logins};
