//! TLS material for a federation: development certificates and validated loading of PEM files.
//!
//! [`generate_dev_pki`] makes a small private PKI for development and tests: a self-signed CA,
//! a server certificate for the aggregator's host names and addresses, and a client
//! certificate for optional mutual TLS, all signed by that CA (ECDSA P-256). Production
//! deployments bring certificates from their own CA and load them with the same helpers.
//!
//! The loaders ([`load_certificates`], [`load_ca`], [`load_private_key`], [`load_identity`])
//! read a file once, check that it holds what it should (parsed with rustls' PEM reader, keys
//! matched against their certificate) and return both the PEM bytes (what tonic's TLS
//! configuration takes) and the DER values (what rustls takes). Their errors name the file and
//! what was wrong: missing, not PEM, no certificate, no private key, key and certificate that
//! do not belong together.
//!
//! [`server_config`] and [`client_config`] build rustls configurations (with the `ring`
//! provider) from loaded material, with or without client authentication.
//!
//! ```no_run
//! use std::path::Path;
//! use fl_aggregator::tls::{DevPkiOptions, generate_dev_pki_with, load_ca, load_identity};
//!
//! let options = DevPkiOptions { overwrite: true, ..DevPkiOptions::default() };
//! let pki = generate_dev_pki_with(Path::new("certs"), &options)?;
//! let server = load_identity(&pki.server_cert, &pki.server_key)?;
//! let ca = load_ca(&pki.ca_cert)?;
//! let config = fl_aggregator::tls::server_config(&server, Some(&ca))?; // mutual TLS
//! # Ok::<(), fl_aggregator::tls::TlsError>(())
//! ```

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

mod dev_pki;
mod pem;

pub use dev_pki::*;
pub use pem::*;

/// File name of the development CA certificate.
pub const CA_CERT: &str = "ca.pem";
/// File name of the server certificate.
pub const SERVER_CERT: &str = "server.pem";
/// File name of the server's private key.
pub const SERVER_KEY: &str = "server.key";
/// File name of the client certificate.
pub const CLIENT_CERT: &str = "client.pem";
/// File name of the client's private key.
pub const CLIENT_KEY: &str = "client.key";

/// Seconds from the Unix epoch to 9999-12-31T23:59:59Z, the last instant X.509 can express.
const MAX_X509_TIME: u64 = 253_402_300_799;

/// What went wrong generating or loading TLS material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// No host names or addresses were given for the server certificate.
    #[error("no hosts given for the server certificate (for example localhost, 127.0.0.1, ::1)")]
    NoHosts,
    /// A host is neither an IP address nor a valid DNS name.
    #[error("host {host:?} cannot go in a certificate: {reason}")]
    InvalidHost {
        /// The host as given.
        host: String,
        /// Why it was refused.
        reason: String,
    },
    /// The requested validity period ends beyond what X.509 can express.
    #[error("certificate validity of {days} days is too long")]
    ValidityTooLong {
        /// The requested validity, in whole days.
        days: u64,
    },
    /// A file to be generated exists and overwriting was not asked for.
    #[error("{} already exists; set overwrite (--force) to replace it", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// Certificate or key generation failed.
    #[error("could not generate the {what}: {source}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// A file to be loaded does not exist.
    #[error("{what} file {} does not exist", path.display())]
    Missing {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file is not PEM text.
    #[error("{} is not a PEM file: {reason}", path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A PEM file holds no certificate, or one that cannot be used.
    #[error("{} holds no usable certificate: {reason}", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// What was found instead, or why the certificate was refused.
        reason: String,
    },
    /// A PEM file holds no private key, or one that cannot be used.
    #[error("{} holds no usable private key: {reason}", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
        /// What was found instead, or why the key was refused.
        reason: String,
    },
    /// A private key does not belong to the certificate it is paired with.
    #[error("private key {} does not match certificate {}: {reason}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' explanation.
        reason: String,
    },
    /// rustls refused to build a configuration from loaded material.
    #[error("invalid TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3) presenting `identity`.
/// With `client_ca`, clients must present a certificate issued by it (mutual TLS).
pub fn server_config(
    identity: &PemIdentity,
    client_ca: Option<&PemCertificates>,
) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(ca.root_store()?), provider)
                    .build()
                    .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(identity.certs.der.clone(), identity.key.der.clone_key())
        .map_err(TlsError::Config)
}

/// A rustls client configuration (ring provider, TLS 1.2 and 1.3) trusting `ca`, presenting
/// `identity` when the server asks for a client certificate.
pub fn client_config(
    ca: &PemCertificates,
    identity: Option<&PemIdentity>,
) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(ca.root_store()?);
    match identity {
        Some(id) => builder
            .with_client_auth_cert(id.certs.der.clone(), id.key.der.clone_key())
            .map_err(TlsError::Config),
        None => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use rustls::pki_types::ServerName;
    use rustls::{ClientConnection, Connection, ServerConnection};

    use super::*;

    fn hosts() -> Vec<String> {
        DevPkiOptions::default().hosts
    }

    /// Moves every pending TLS record from `from` to `to` and lets `to` process them.
    fn transfer(from: &mut Connection, to: &mut Connection) -> Result<usize, rustls::Error> {
        let mut buf = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut buf).unwrap();
        }
        let mut rest = &buf[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).unwrap();
            to.process_new_packets()?;
        }
        Ok(buf.len())
    }

    /// Runs a handshake over in-memory buffers, then sends a message each way.
    fn handshake(
        client: ClientConfig,
        server: ServerConfig,
        name: &str,
    ) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let mut client = Connection::Client(ClientConnection::new(Arc::new(client), name)?);
        let mut server = Connection::Server(ServerConnection::new(Arc::new(server))?);
        for _ in 0..10 {
            let sent = transfer(&mut client, &mut server)? + transfer(&mut server, &mut client)?;
            if !client.is_handshaking() && !server.is_handshaking() && sent == 0 {
                break;
            }
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());

        client.writer().write_all(b"update chunk").unwrap();
        transfer(&mut client, &mut server)?;
        let mut got = [0u8; 12];
        server.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"update chunk");
        server.writer().write_all(b"ack").unwrap();
        transfer(&mut server, &mut client)?;
        let mut got = [0u8; 3];
        client.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ack");

        match (client, server) {
            (Connection::Client(c), Connection::Server(s)) => Ok((c, s)),
            _ => unreachable!(),
        }
    }

    #[test]
    fn generated_files_parse_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        let pki = generate_dev_pki(&out, &hosts()).unwrap();
        assert_eq!(pki.ca_cert, out.join("ca.pem"));
        for path in pki.files() {
            assert!(path.is_file(), "{}", path.display());
        }
        assert_eq!(load_ca(&pki.ca_cert).unwrap().der().len(), 1);
        let server = load_identity(&pki.server_cert, &pki.server_key).unwrap();
        assert_eq!(server.certs.der().len(), 1);
        assert!(
            server
                .certs
                .pem()
                .starts_with(b"-----BEGIN CERTIFICATE-----")
        );
        assert!(server.key.pem().starts_with(b"-----BEGIN PRIVATE KEY-----"));
        load_identity(&pki.client_cert, &pki.client_key).unwrap();
        assert!(!format!("{server:?}").contains("PRIVATE KEY"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for key in [&pki.server_key, &pki.client_key] {
                let mode = fs::metadata(key).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", key.display());
            }
        }
    }

    #[test]
    fn refuses_to_overwrite_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let pki = generate_dev_pki(dir.path(), &hosts()).unwrap();
        let before = fs::read(&pki.server_key).unwrap();

        let err = generate_dev_pki(dir.path(), &hosts()).unwrap_err();
        assert!(matches!(err, TlsError::AlreadyExists { .. }), "{err}");
        assert!(err.to_string().contains("ca.pem"), "{err}");
        assert_eq!(
            fs::read(&pki.server_key).unwrap(),
            before,
            "nothing was touched"
        );

        // One stray file is enough to refuse, and nothing else is written.
        let other = tempfile::tempdir().unwrap();
        fs::write(other.path().join(CLIENT_KEY), "mine").unwrap();
        let err = generate_dev_pki(other.path(), &hosts()).unwrap_err();
        assert!(err.to_string().contains("client.key"), "{err}");
        assert!(!other.path().join(CA_CERT).exists());

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&pki.server_key, fs::Permissions::from_mode(0o644)).unwrap();
        }
        let options = DevPkiOptions {
            overwrite: true,
            ..DevPkiOptions::default()
        };
        generate_dev_pki_with(dir.path(), &options).unwrap();
        assert_ne!(fs::read(&pki.server_key).unwrap(), before);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&pki.server_key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn bad_hosts_and_validity_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            generate_dev_pki(dir.path(), &[]),
            Err(TlsError::NoHosts)
        ));
        for bad in ["", " localhost", "bad host", "ünïcode.example"] {
            let err = generate_dev_pki(dir.path(), &["localhost".into(), bad.into()]).unwrap_err();
            assert!(
                matches!(&err, TlsError::InvalidHost { host, .. } if host == bad),
                "{bad:?}: {err}"
            );
        }
        let options = DevPkiOptions {
            validity: Duration::from_secs(u64::MAX),
            ..DevPkiOptions::default()
        };
        assert!(matches!(
            generate_dev_pki_with(dir.path(), &options),
            Err(TlsError::ValidityTooLong { .. })
        ));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn handshake_in_memory_with_and_without_client_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let pki = generate_dev_pki(dir.path(), &hosts()).unwrap();
        let ca = load_ca(&pki.ca_cert).unwrap();
        let server_id = load_identity(&pki.server_cert, &pki.server_key).unwrap();
        let client_id = load_identity(&pki.client_cert, &pki.client_key).unwrap();

        // Server authentication only, for every name in the certificate.
        for name in hosts() {
            let (client, server) = handshake(
                client_config(&ca, None).unwrap(),
                server_config(&server_id, None).unwrap(),
                &name,
            )
            .unwrap();
            assert!(server.peer_certificates().is_none());
            assert_eq!(
                client.peer_certificates().unwrap()[0],
                server_id.certs.der()[0]
            );
        }

        // Mutual TLS: the server sees the client's certificate.
        let (_, server) = handshake(
            client_config(&ca, Some(&client_id)).unwrap(),
            server_config(&server_id, Some(&ca)).unwrap(),
            "localhost",
        )
        .unwrap();
        assert_eq!(
            server.peer_certificates().unwrap()[0],
            client_id.certs.der()[0]
        );

        // Mutual TLS required, but the client has no certificate.
        assert!(
            handshake(
                client_config(&ca, None).unwrap(),
                server_config(&server_id, Some(&ca)).unwrap(),
                "localhost",
            )
            .is_err()
        );
        // A name the certificate does not cover.
        assert!(
            handshake(
                client_config(&ca, None).unwrap(),
                server_config(&server_id, None).unwrap(),
                "agg.example",
            )
            .is_err()
        );
    }

    #[test]
    fn certificates_from_another_ca_are_rejected() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        let ours = generate_dev_pki(ours.path(), &hosts()).unwrap();
        let theirs = generate_dev_pki(theirs.path(), &hosts()).unwrap();
        let our_ca = load_ca(&ours.ca_cert).unwrap();
        let their_server = load_identity(&theirs.server_cert, &theirs.server_key).unwrap();
        let their_client = load_identity(&theirs.client_cert, &theirs.client_key).unwrap();
        let our_server = load_identity(&ours.server_cert, &ours.server_key).unwrap();

        // A server certificate from another CA.
        assert!(
            handshake(
                client_config(&our_ca, None).unwrap(),
                server_config(&their_server, None).unwrap(),
                "localhost",
            )
            .is_err()
        );
        // A client certificate from another CA.
        assert!(
            handshake(
                client_config(&our_ca, Some(&their_client)).unwrap(),
                server_config(&our_server, Some(&our_ca)).unwrap(),
                "localhost",
            )
            .is_err()
        );
    }

    #[test]
    fn loading_errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let pki = generate_dev_pki(dir.path(), &hosts()).unwrap();

        let missing = dir.path().join("nope.pem");
        let err = load_certificates(&missing).unwrap_err();
        assert!(matches!(err, TlsError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("nope.pem"), "{err}");

        let text = dir.path().join("text.pem");
        fs::write(&text, "just some text\n").unwrap();
        for err in [
            load_certificates(&text).unwrap_err(),
            load_private_key(&text).unwrap_err(),
        ] {
            assert!(matches!(err, TlsError::NotPem { .. }), "{err}");
            assert!(err.to_string().contains("text.pem"), "{err}");
        }

        let truncated = dir.path().join("truncated.pem");
        let pem = fs::read_to_string(&pki.server_cert).unwrap();
        fs::write(&truncated, &pem[..pem.len() / 2]).unwrap();
        let err = load_certificates(&truncated).unwrap_err();
        assert!(matches!(err, TlsError::NotPem { .. }), "{err}");

        // A key where a certificate belongs, and the other way round.
        let err = load_certificates(&pki.server_key).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("server.key"), "{err}");
        let err = load_private_key(&pki.server_cert).unwrap_err();
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
        assert!(err.to_string().contains("server.pem"), "{err}");

        // A key that belongs to another certificate.
        let err = load_identity(&pki.server_cert, &pki.client_key).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("client.key"), "{err}");
    }
}
