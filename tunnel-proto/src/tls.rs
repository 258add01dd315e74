//! TLS 1.3 set-up on rustls with the ring provider, chosen explicitly so that
//! a second provider compiled in elsewhere can never make a builder panic.
//!
//! Server: certificate and key from PEM files, or generated with rcgen on
//! first start and persisted (key file mode 0600). Agent: verifies the server
//! by a CA file (normal WebPKI validation, name checked) or by the pinned
//! SHA-256 fingerprint of the server's end-entity certificate. There is no
//! "skip verification" mode.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{ring, CryptoProvider},
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
};
use sha2::{Digest, Sha256};

pub use rustls::pki_types::CertificateDer as CertDer;

/// ALPN protocol id of the NOVA tunnel.
pub const ALPN: &[u8] = b"nova/2";

/// Why TLS material could not be loaded or built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid fingerprint {0:?}: expected 64 hex digits (SHA-256), colons allowed")]
    Fingerprint(String),
}

/// The crypto provider every config here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// A server certificate chain and its private key.
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ServerIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl ServerIdentity {
    /// SHA-256 fingerprint of the end-entity certificate, as agents pin it.
    pub fn fingerprint(&self) -> String {
        self.chain
            .first()
            .map(|c| fingerprint(c))
            .unwrap_or_default()
    }

    /// Reads every certificate of a PEM file; at least one is required.
    pub fn chain_from_pem_file(cert: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| pem_err(cert, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(cert, e))?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                path: cert.into(),
                what: "no certificate found".into(),
            });
        }
        Ok(chain)
    }

    /// Loads a chain and key from PEM files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = Self::chain_from_pem_file(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e))?;
        Ok(Self { chain, key })
    }

    /// Loads `cert.pem`/`key.pem` from `dir`, generating a self-signed pair
    /// for `names` on first use. Returns whether it was generated now.
    pub fn load_or_generate(dir: &Path, names: &[String]) -> Result<(Self, bool), TlsError> {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        if cert.exists() && key.exists() {
            return Ok((Self::from_pem_files(&cert, &key)?, false));
        }
        let ck = rcgen::generate_simple_self_signed(names.to_vec())?;
        fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
        write_private(&key, ck.signing_key.serialize_pem().as_bytes())?;
        fs::write(&cert, ck.cert.pem()).map_err(|e| write_err(&cert, e))?;
        Ok((Self::from_pem_files(&cert, &key)?, true))
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path).map_err(|e| write_err(path, e))?;
    f.write_all(data).map_err(|e| write_err(path, e))
}

fn pem_err(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    match e {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Read {
            path: path.into(),
            source,
        },
        other => TlsError::Pem {
            path: path.into(),
            what: other.to_string(),
        },
    }
}

fn write_err(path: &Path, source: std::io::Error) -> TlsError {
    TlsError::Write {
        path: path.into(),
        source,
    }
}

/// Lower-case hex SHA-256 of a DER certificate.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

/// Parses a fingerprint as operators paste it: hex, any case, optional
/// colons, optional `sha256:` prefix.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], TlsError> {
    let t = s.trim();
    let t = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .unwrap_or(t);
    let hex: String = t.chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&hex, &mut out).map_err(|_| TlsError::Fingerprint(s.to_string()))?;
    Ok(out)
}

/// Server configuration: TLS 1.3 only, ALPN `nova/2`.
pub fn server_config(id: ServerIdentity) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_alpn(id, &[ALPN])
}

/// A TLS 1.3 server config for another protocol on the same certificate
/// (the database front ends: `postgresql` for clients that send ALPN).
pub fn server_config_alpn(
    id: ServerIdentity,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(id.chain, id.key)?;
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// How an agent decides to trust a server.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// Accept only end-entity certificates with one of these SHA-256 digests.
    Pinned(Vec<[u8; 32]>),
    /// Validate the chain against the CAs in this PEM file, name checked.
    CaFile(PathBuf),
}

/// The agent's provider: [`provider`] with AES-128-GCM first. Both ends of
/// a tunnel are NOVA, and the server follows the client's order, so this
/// picks the tunnel's cipher. AES-128-GCM is TLS 1.3's mandatory suite and
/// the first choice of Go and BoringSSL on AES hardware; its 10 AES rounds
/// against AES-256's 14 are the difference in the tunnel's bulk cost.
/// Other TLS (the database and web front ends) keeps the client's choice.
fn tunnel_client_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let mut p = ring::default_provider();
    p.cipher_suites = vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

/// Agent configuration: TLS 1.3 only, ALPN `nova/2`.
pub fn client_config(trust: &ServerTrust) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(tunnel_client_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut cfg = match trust {
        ServerTrust::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| pem_err(path, e))? {
                roots
                    .add(cert.map_err(|e| pem_err(path, e))?)
                    .map_err(TlsError::Rustls)?;
            }
            if roots.is_empty() {
                return Err(TlsError::Pem {
                    path: path.clone(),
                    what: "no CA certificate found".into(),
                });
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        ServerTrust::Pinned(pins) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pins: pins.clone(),
                provider: provider(),
            }))
            .with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(cfg))
}

/// Trusts a server by the digest of its certificate. The handshake signature
/// is still verified, so the server must hold the pinned certificate's key.
#[derive(Debug)]
struct PinnedVerifier {
    pins: Vec<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if self.pins.contains(&digest) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate fingerprint {} does not match the pinned fingerprint",
                hex::encode(digest)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_persist_and_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let (a, generated) = ServerIdentity::load_or_generate(dir.path(), &names).expect("gen");
        assert!(generated);
        let (b, generated) = ServerIdentity::load_or_generate(dir.path(), &names).expect("load");
        assert!(!generated);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("key.pem"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key must not be group/world readable");
        }
    }

    #[test]
    fn fingerprint_formats() {
        let hex = "AB".repeat(32);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(
            parse_fingerprint(&hex).expect("hex"),
            parse_fingerprint(&format!("sha256:{colons}")).expect("colons")
        );
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    /// Runs a handshake in memory; returns the cipher suite the agent got.
    fn negotiated(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> rustls::CipherSuite {
        let name = ServerName::try_from("localhost").expect("name");
        let mut srv = rustls::ServerConnection::new(server).expect("server conn");
        let mut cli = rustls::ClientConnection::new(client, name).expect("client conn");
        for _ in 0..10 {
            if !cli.is_handshaking() && !srv.is_handshaking() {
                break;
            }
            let mut wire = Vec::new();
            cli.write_tls(&mut wire).expect("client write");
            srv.read_tls(&mut wire.as_slice()).expect("server read");
            srv.process_new_packets().expect("server process");
            wire.clear();
            srv.write_tls(&mut wire).expect("server write");
            cli.read_tls(&mut wire.as_slice()).expect("client read");
            cli.process_new_packets().expect("client process");
        }
        assert!(!cli.is_handshaking(), "handshake finished");
        cli.negotiated_cipher_suite().expect("suite").suite()
    }

    #[test]
    fn a_tunnel_runs_on_aes_128_gcm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (id, _) = ServerIdentity::load_or_generate(dir.path(), &["localhost".to_string()])
            .expect("identity");
        let pin = parse_fingerprint(&id.fingerprint()).expect("pin");
        let suite = negotiated(
            server_config(id).expect("server config"),
            client_config(&ServerTrust::Pinned(vec![pin])).expect("client config"),
        );
        assert_eq!(suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    }
}
