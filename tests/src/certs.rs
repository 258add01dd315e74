//! A test CA and a server certificate it signs, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest, Sha256};

/// PEM files of a CA and of a server certificate signed by it.
pub struct CaFiles {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// SHA-256 of the server certificate's DER, lower-case hex.
    pub server_fingerprint: String,
}

/// Generates a CA and a server certificate for `names` (IP addresses become
/// IP SANs) into `dir`.
pub fn generate(dir: &Path, names: &[&str]) -> CaFiles {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "nova-e2e test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "nova-e2e server");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &issuer).expect("server cert");

    let files = CaFiles {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("server-cert.pem"),
        server_key: dir.join("server-key.pem"),
        server_fingerprint: hex::encode(Sha256::digest(cert.der().as_ref())),
    };
    std::fs::write(&files.ca_cert, ca_cert.pem()).expect("write ca");
    std::fs::write(&files.server_cert, cert.pem()).expect("write cert");
    std::fs::write(&files.server_key, key.serialize_pem()).expect("write key");
    files
}
