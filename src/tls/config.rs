//! Building rustls configurations from PEM files, with errors that name
//! the file. The crypto provider is always ring (the feature `tls` builds
//! rustls without aws-lc-rs), chosen explicitly so that another crate of
//! the process enabling a second provider changes nothing here.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad(what: &str, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {why}"))
}

fn read(path: &Path) -> io::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn certs(pem: &[u8], what: &str) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(what, format_args!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(bad(what, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// A server configuration from a certificate chain and its private key,
/// both PEM (the key PKCS#8, PKCS#1 or SEC1). `what_cert` and `what_key`
/// name them in errors (file names, usually).
pub fn server_config_pem(cert: &[u8], key: &[u8], what_cert: &str, what_key: &str) -> io::Result<Arc<ServerConfig>> {
    let chain = certs(cert, what_cert)?;
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| bad(what_key, format_args!("no usable PEM private key: {e}")))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(what_cert, e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad(&format!("{what_cert} with {what_key}"), e))?;
    Ok(Arc::new(config))
}

/// [`server_config_pem`] from two files: errors name the file.
pub fn server_config(cert_file: &Path, key_file: &Path) -> io::Result<Arc<ServerConfig>> {
    let cert = read(cert_file)?;
    let key = read(key_file)?;
    server_config_pem(&cert, &key, &cert_file.display().to_string(), &key_file.display().to_string())
}

/// A client configuration that trusts the CA certificates of `ca` (PEM)
/// and no others; `what` names it in errors. The server name to verify
/// is given per connection ([`Tls::client`](super::Tls::client)).
pub fn client_config_pem(ca: &[u8], what: &str) -> io::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca, what)? {
        roots.add(cert).map_err(|e| bad(what, format_args!("not a usable CA certificate: {e}")))?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(what, e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// [`client_config_pem`] from a file: errors name it.
pub fn client_config(ca_file: &Path) -> io::Result<Arc<ClientConfig>> {
    client_config_pem(&read(ca_file)?, &ca_file.display().to_string())
}
