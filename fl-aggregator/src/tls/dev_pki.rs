//! A development PKI: a self-signed CA, server and client certificates (ECDSA P-256).

use super::*;

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

    pub(super) fn files(&self) -> [&Path; 5] {
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
