//! PEM files read once, checked for what they must hold, returned as PEM and DER.

use super::*;

/// One or more certificates read from a PEM file, checked to parse.
#[derive(Clone)]
pub struct PemCertificates {
    pub(super) pem: Vec<u8>,
    pub(super) der: Vec<CertificateDer<'static>>,
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
    pub(super) pem: Vec<u8>,
    pub(super) der: PrivateKeyDer<'static>,
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
