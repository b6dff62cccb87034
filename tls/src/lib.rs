//! TLS for Lathe's ports and clients: PEM files (`--tls-cert`, `--tls-key`, `--tls-client-ca`,
//! `--ca`, `--cert`, `--key`) turned into rustls configurations.
//!
//! Everything here uses rustls' aws-lc-rs provider explicitly — the one ractor_cluster's
//! tokio-rustls already builds — so no second crypto library is compiled and no process-wide
//! default provider has to be installed.
//!
//! ```text
//! lathe-node  --tls-cert/--tls-key [--tls-client-ca]  →  server_config  →  REST accept loop
//! lathe, lathe-agent  --ca [--cert --key]              →  client_config  →  https:// requests
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[cfg(feature = "ureq")]
mod ureq_connector;
#[cfg(feature = "ureq")]
pub use ureq_connector::UreqTls;

pub use rustls;

/// What went wrong reading a PEM file or building a configuration; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The crypto provider of every Lathe TLS configuration.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Every certificate of a PEM file (a chain: leaf first).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.to_path_buf(),
            reason: format!("not PEM certificates ({e})"),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certificates)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Invalid {
        path: path.to_path_buf(),
        reason: format!("no PEM private key ({e})"),
    })
}

/// The certificates of a PEM file as trust anchors.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(path)? {
        roots.add(certificate).map_err(|e| TlsError::Invalid {
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate ({e})"),
        })?;
    }
    Ok(roots)
}

/// A certificate chain and its key, as a server or a client presents them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// A server's TLS settings: its identity, and the CA its clients' certificates must chain to
/// (mutual TLS) when one is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    pub identity: Identity,
    pub client_ca: Option<PathBuf>,
}

impl ServerTlsFiles {
    /// Reads the files and builds the configuration (HTTP/1.1 only, as the REST port speaks).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let chain = read_certificates(&self.identity.certificate)?;
        let key = read_private_key(&self.identity.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(&self.identity.certificate, e))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(read_roots(ca)?),
                    provider(),
                )
                .build()
                .map_err(|e| invalid(ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| invalid(&self.identity.key, e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A client's TLS settings: the CA that signed the servers' certificates, and an identity to
/// present when the server asks for one (mutual TLS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    pub ca: Option<PathBuf>,
    pub identity: Option<Identity>,
}

impl ClientTlsFiles {
    /// Reads the files and builds the configuration. Without a CA no server is trusted: an
    /// `https://` address then needs `--ca`.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let roots = match &self.ca {
            Some(ca) => read_roots(ca)?,
            None => RootCertStore::empty(),
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid {
                path: PathBuf::new(),
                reason: e.to_string(),
            })?
            .with_root_certificates(roots);
        let config = match &self.identity {
            Some(identity) => builder
                .with_client_auth_cert(
                    read_certificates(&identity.certificate)?,
                    read_private_key(&identity.key)?,
                )
                .map_err(|e| invalid(&identity.key, e))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// The cluster transport's TLS: every node presents `identity` and accepts only peers whose
/// certificate chains to `ca`, in both directions (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTlsFiles {
    pub identity: Identity,
    pub ca: PathBuf,
}

impl ClusterTlsFiles {
    /// The accepting side: requires a client certificate from the CA; no ALPN.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let files = ServerTlsFiles {
            identity: self.identity.clone(),
            client_ca: Some(self.ca.clone()),
        };
        let mut config = Arc::unwrap_or_clone(files.server_config()?);
        config.alpn_protocols.clear();
        Ok(Arc::new(config))
    }

    /// The connecting side: trusts the CA only, presents the identity.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        ClientTlsFiles {
            ca: Some(self.ca.clone()),
            identity: Some(self.identity.clone()),
        }
        .client_config()
    }
}

fn invalid(path: &Path, error: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_file_is_named() {
        let dir = std::env::temp_dir().join(format!("lathe-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem").unwrap();
        let missing = dir.join("missing.pem");
        let error = read_certificates(&missing).unwrap_err().to_string();
        assert!(
            error.starts_with("cannot read ") && error.contains("missing.pem"),
            "{error}"
        );
        let error = read_certificates(&empty).unwrap_err().to_string();
        assert!(
            error.contains("empty.pem") && error.contains("no PEM certificate"),
            "{error}"
        );
        let error = read_private_key(&empty).unwrap_err().to_string();
        assert!(error.contains("no PEM private key"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
