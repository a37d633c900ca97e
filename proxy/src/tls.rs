//! TLS termination: the certificate is served through a resolver whose key pair can be
//! swapped (SIGHUP) while connections stay open; new handshakes see the new certificate.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use mcp_edge_policies::config::TlsConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::SetupError;

/// Loads a PEM certificate chain and private key (RSA, PKCS#8 or SEC1 ECDSA).
pub fn load(tls: &TlsConfig) -> Result<CertifiedKey, SetupError> {
    let (cert, key) = (tls.cert.display().to_string(), tls.key.display().to_string());
    for path in [&tls.cert, &tls.key] {
        std::fs::metadata(path).map_err(|e| SetupError::Tls(format!("cannot read {}: {e}", path.display())))?;
    }
    let (chain, private_key) = pingora::tls::load_certs_and_key_files(&cert, &key)
        .map_err(|e| SetupError::Tls(format!("cannot read {cert} / {key}: {e}")))?
        .ok_or_else(|| SetupError::Tls(format!("no certificate in {cert} or no private key in {key}")))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&private_key)
        .map_err(|e| SetupError::Tls(format!("unsupported private key in {key}: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| SetupError::Tls(format!("{cert} and {key} do not belong together: {e}")))?;
    Ok(certified)
}

/// Serves whatever certificate was stored last.
pub struct Certificates(ArcSwap<CertifiedKey>);

impl Certificates {
    pub fn new(first: CertifiedKey) -> Arc<Certificates> {
        Arc::new(Certificates(ArcSwap::from_pointee(first)))
    }

    pub fn replace(&self, next: CertifiedKey) {
        self.0.store(Arc::new(next));
    }
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Certificates")
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}
