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

/// How to generate a development PKI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPkiOptions {
    /// Host names and IP addresses the server certificate is valid for.
    pub hosts: Vec<String>,
    /// Replace existing files instead of refusing.
    pub overwrite: bool,
    /// How long the certificates are valid from now.
    pub validity: Duration,
}

impl Default for DevPkiOptions {
    /// `localhost`, `127.0.0.1` and `::1`, no overwriting, valid for 365 days.
    fn default() -> Self {
        Self {
            hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            overwrite: false,
            validity: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// The files of a development PKI.
///
/// The CA's private key is not kept: no further certificates can be issued from this CA,
/// so a stolen development directory cannot mint new identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPki {
    /// The self-signed CA certificate (`ca.pem`): clients and (for mutual TLS) the server trust it.
    pub ca_cert: PathBuf,
    /// The server certificate (`server.pem`).
    pub server_cert: PathBuf,
    /// The server's private key (`server.key`, mode 0600).
    pub server_key: PathBuf,
    /// The client certificate (`client.pem`).
    pub client_cert: PathBuf,
    /// The client's private key (`client.key`, mode 0600).
    pub client_key: PathBuf,
}

impl DevPki {
    fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join(CA_CERT),
            server_cert: dir.join(SERVER_CERT),
            server_key: dir.join(SERVER_KEY),
            client_cert: dir.join(CLIENT_CERT),
            client_key: dir.join(CLIENT_KEY),
        }
    }

    fn files(&self) -> [&Path; 5] {
        [
            &self.ca_cert,
            &self.server_cert,
            &self.server_key,
            &self.client_cert,
            &self.client_key,
        ]
    }
}

/// Generates a development PKI for `hosts` in `out_dir` (created if missing), valid for 365
/// days, refusing to overwrite existing files. See [`generate_dev_pki_with`].
pub fn generate_dev_pki(out_dir: &Path, hosts: &[String]) -> Result<DevPki, TlsError> {
    let options = DevPkiOptions {
        hosts: hosts.to_vec(),
        ..DevPkiOptions::default()
    };
    generate_dev_pki_with(out_dir, &options)
}

/// Generates a development PKI in `out_dir`: `ca.pem`, `server.pem`, `server.key`,
/// `client.pem` and `client.key`. Keys are written with mode 0600 on unix.
///
/// Unless `options.overwrite` is set, nothing is written if any of the five files exists.
pub fn generate_dev_pki_with(out_dir: &Path, options: &DevPkiOptions) -> Result<DevPki, TlsError> {
    let window = validity_window(options.validity)?;
    let server_params = server_params(&options.hosts)?;

    let pki = DevPki::in_dir(out_dir);
    if !options.overwrite
        && let Some(existing) = pki.files().into_iter().find(|p| p.exists())
    {
        return Err(TlsError::AlreadyExists {
            path: existing.to_path_buf(),
        });
    }

    let generate = |what| move |source| TlsError::Generate { what, source };

    // The CA.
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "daofl development CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "daofl");
    ca_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    set_validity(&mut ca_params, window);
    let ca_key = KeyPair::generate().map_err(generate("CA key"))?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(generate("CA certificate"))?;
    let issuer = Issuer::new(ca_params, ca_key);

    // The server.
    let mut server_params = server_params;
    set_validity(&mut server_params, window);
    let server_key = KeyPair::generate().map_err(generate("server key"))?;
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .map_err(generate("server certificate"))?;

    // The client.
    let mut client_params = CertificateParams::new(vec!["daofl-client".to_owned()])
        .map_err(generate("client certificate"))?;
    client_params
        .distinguished_name
        .push(DnType::CommonName, "daofl client");
    client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    client_params.use_authority_key_identifier_extension = true;
    set_validity(&mut client_params, window);
    let client_key = KeyPair::generate().map_err(generate("client key"))?;
    let client_cert = client_params
        .signed_by(&client_key, &issuer)
        .map_err(generate("client certificate"))?;

    fs::create_dir_all(out_dir).map_err(|source| TlsError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let overwrite = options.overwrite;
    write_file(&pki.ca_cert, ca_cert.pem().as_bytes(), false, overwrite)?;
    write_file(
        &pki.server_key,
        server_key.serialize_pem().as_bytes(),
        true,
        overwrite,
    )?;
    write_file(
        &pki.server_cert,
        server_cert.pem().as_bytes(),
        false,
        overwrite,
    )?;
    write_file(
        &pki.client_key,
        client_key.serialize_pem().as_bytes(),
        true,
        overwrite,
    )?;
    write_file(
        &pki.client_cert,
        client_cert.pem().as_bytes(),
        false,
        overwrite,
    )?;
    Ok(pki)
}

/// Server certificate parameters for `hosts`, each host checked on its own so an error can
/// name it.
fn server_params(hosts: &[String]) -> Result<CertificateParams, TlsError> {
    let first = hosts.first().ok_or(TlsError::NoHosts)?;
    for host in hosts {
        let invalid = |reason: String| TlsError::InvalidHost {
            host: host.clone(),
            reason,
        };
        if host.is_empty() || host.trim() != host {
            return Err(invalid("empty or surrounded by whitespace".into()));
        }
        CertificateParams::new(vec![host.clone()]).map_err(|e| invalid(e.to_string()))?;
        rustls::pki_types::ServerName::try_from(host.as_str())
            .map_err(|e| invalid(e.to_string()))?;
    }
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(|e| TlsError::InvalidHost {
        host: hosts.join(", "),
        reason: e.to_string(),
    })?;
    params
        .distinguished_name
        .push(DnType::CommonName, first.as_str());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Seconds since the Unix epoch from an hour ago (tolerating clock skew between machines) to
/// `validity` from now.
fn validity_window(validity: Duration) -> Result<(u64, u64), TlsError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    match now.checked_add(validity.as_secs()) {
        Some(end) if end <= MAX_X509_TIME => Ok((now.saturating_sub(3600), end)),
        _ => Err(TlsError::ValidityTooLong {
            days: validity.as_secs() / 86_400,
        }),
    }
}

/// Sets a certificate's validity to a window from [`validity_window`].
fn set_validity(params: &mut CertificateParams, (start, end): (u64, u64)) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs(start);
    params.not_after = epoch + Duration::from_secs(end);
}

/// Writes `contents` to `path`; `private` files get mode 0600 on unix, from creation on.
fn write_file(
    path: &Path,
    contents: &[u8],
    private: bool,
    overwrite: bool,
) -> Result<(), TlsError> {
    let io_err = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            TlsError::AlreadyExists {
                path: path.to_path_buf(),
            }
        } else {
            io_err(source)
        }
    })?;
    // An overwritten file keeps its old mode: tighten it before writing the secret.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_err)
}

/// One or more certificates read from a PEM file, checked to parse.
#[derive(Clone)]
pub struct PemCertificates {
    pem: Vec<u8>,
    der: Vec<CertificateDer<'static>>,
}

impl PemCertificates {
    /// The file's PEM text, as read.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// The certificates, in file order (for a chain: the end-entity certificate first).
    pub fn der(&self) -> &[CertificateDer<'static>] {
        &self.der
    }

    /// A rustls root store holding these certificates (see [`load_ca`]).
    pub fn root_store(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in &self.der {
            roots.add(cert.clone()).map_err(TlsError::Config)?;
        }
        Ok(roots)
    }
}

impl fmt::Debug for PemCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemCertificates")
            .field("certificates", &self.der.len())
            .finish_non_exhaustive()
    }
}

/// A private key read from a PEM file. `Debug` does not print it.
pub struct PemPrivateKey {
    pem: Vec<u8>,
    der: PrivateKeyDer<'static>,
}

impl PemPrivateKey {
    /// The file's PEM text, as read.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// The key.
    pub fn der(&self) -> &PrivateKeyDer<'static> {
        &self.der
    }
}

impl Clone for PemPrivateKey {
    fn clone(&self) -> Self {
        Self {
            pem: self.pem.clone(),
            der: self.der.clone_key(),
        }
    }
}

impl fmt::Debug for PemPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemPrivateKey").finish_non_exhaustive()
    }
}

/// A certificate chain and the private key that belongs to it.
#[derive(Debug, Clone)]
pub struct PemIdentity {
    /// The certificate chain, end-entity certificate first.
    pub certs: PemCertificates,
    /// Its private key.
    pub key: PemPrivateKey,
}

/// Reads a PEM file, mapping a missing file and other IO errors.
fn read_pem_file(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = fs::read(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            TlsError::Missing {
                what,
                path: path.to_path_buf(),
            }
        } else {
            TlsError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    // Check the whole file is well-formed PEM with at least one section.
    let mut kinds = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes) {
        let (kind, _) = section.map_err(|e| TlsError::NotPem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        kinds.push(kind);
    }
    if kinds.is_empty() {
        return Err(TlsError::NotPem {
            path: path.to_path_buf(),
            reason: "no \"-----BEGIN ...-----\" section found".into(),
        });
    }
    Ok(bytes)
}

/// The PEM section kinds in `bytes`, for error messages.
fn describe_sections(bytes: &[u8]) -> String {
    let kinds: Vec<String> = <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes)
        .filter_map(Result::ok)
        .map(|(kind, _)| format!("{kind:?}"))
        .collect();
    format!("found only {}", kinds.join(", "))
}

/// Reads one or more certificates from a PEM file.
pub fn load_certificates(path: &Path) -> Result<PemCertificates, TlsError> {
    let pem = read_pem_file(path, "certificate")?;
    let der = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NotPem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if der.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
            reason: describe_sections(&pem),
        });
    }
    Ok(PemCertificates { pem, der })
}

/// Reads CA certificates (trust anchors) from a PEM file, checking each can serve as one.
pub fn load_ca(path: &Path) -> Result<PemCertificates, TlsError> {
    let certs = load_certificates(path)?;
    let mut roots = RootCertStore::empty();
    for cert in certs.der() {
        roots
            .add(cert.clone())
            .map_err(|e| TlsError::NoCertificate {
                path: path.to_path_buf(),
                reason: format!("not usable as a trust anchor: {e}"),
            })?;
    }
    Ok(certs)
}

/// Reads a private key (PKCS#8, PKCS#1 or SEC1) from a PEM file.
pub fn load_private_key(path: &Path) -> Result<PemPrivateKey, TlsError> {
    let pem = read_pem_file(path, "private key")?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_path_buf(),
            reason: describe_sections(&pem),
        },
        other => TlsError::NotPem {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    Ok(PemPrivateKey { pem, der })
}

/// Reads a certificate chain and its private key, checking the key is supported and belongs
/// to the end-entity certificate.
pub fn load_identity(cert: &Path, key: &Path) -> Result<PemIdentity, TlsError> {
    let certs = load_certificates(cert)?;
    let private_key = load_private_key(key)?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs.der.clone(), private_key.der.clone_key(), &provider).map_err(
        |e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                reason: e.to_string(),
            },
            rustls::Error::General(_) => TlsError::NoPrivateKey {
                path: key.to_path_buf(),
                reason: e.to_string(),
            },
            other => TlsError::NoCertificate {
                path: cert.to_path_buf(),
                reason: other.to_string(),
            },
        },
    )?;
    Ok(PemIdentity {
        certs,
        key: private_key,
    })
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
