//! MD5 password authentication, client side (for upstreams still set to
//! `md5` in pg_hba.conf).

use md5::{Digest, Md5};

/// The PasswordMessage text answering AuthenticationMD5Password:
/// `"md5" + md5hex(md5hex(password + user) + salt)`.
pub fn md5_password(user: &str, password: &str, salt: [u8; 4]) -> String {
    let inner = hex::encode(
        Md5::new()
            .chain_update(password)
            .chain_update(user)
            .finalize(),
    );
    let outer = Md5::new().chain_update(inner).chain_update(salt).finalize();
    format!("md5{}", hex::encode(outer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_postgres() {
        // Computed independently with Python's hashlib:
        // md5(md5("secret" + "postgres").hexdigest() + salt).
        assert_eq!(
            md5_password("postgres", "secret", [0x2a, 0x3d, 0x8f, 0xe0]),
            "md5218d781c0e587343aa659fd45a109c0a"
        );
    }
}
