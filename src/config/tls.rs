//! The TLS settings of a [`Config`]: certificate chain and key, trust
//! anchors, the server name a client checks, client certificates, ALPN,
//! the lowest version. PEM is parsed and checked when set (a bad one is
//! refused at once, naming the file and why); the rustls configuration is
//! built once per server or connect ([`Config::tls_params`]), never per
//! connection. The provider is ring: it builds with a C compiler alone.
//!
//! No system roots: sockserv talks between services that bring their own
//! CA, so a client without one is refused.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

use super::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::proto::handshake::Role;
use crate::proto::tls::{tls_error, TlsParams};

/// Whether a TLS server asks for client certificates (mutual TLS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A client may present one (checked against the CA when it does).
    Optional,
    /// A client must present one the CA signed.
    Required,
}

/// The lowest TLS version a connection accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only (the default).
    #[default]
    Tls13,
}

impl TlsVersion {
    /// The version's wire number: 0x0303 for 1.2, 0x0304 for 1.3.
    pub fn number(self) -> u16 {
        match self {
            TlsVersion::Tls12 => 0x0303,
            TlsVersion::Tls13 => 0x0304,
        }
    }
}

/// A certificate chain and its private key.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// The TLS part of a [`Config`].
#[derive(Clone, Default)]
pub(crate) struct TlsSettings {
    /// TLS for `sockserv_conn_from_fd`; `tls://` addresses imply it.
    pub(crate) on: bool,
    identity: Option<Arc<Identity>>,
    ca: Option<Arc<RootCertStore>>,
    server_name: Option<String>,
    client_auth: TlsClientAuth,
    alpn: Vec<Vec<u8>>,
    min_version: TlsVersion,
    /// Built by [`Config::prepare_tls`] for the connections of one server
    /// or connect.
    prepared: Option<TlsParams>,
}

impl std::fmt::Debug for TlsSettings {
    // The private key stays out of any debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("on", &self.on)
            .field("certificate", &self.identity.is_some())
            .field("ca", &self.ca.as_ref().map(|ca| ca.len()))
            .field("server_name", &self.server_name)
            .field("client_auth", &self.client_auth)
            .field("alpn", &self.alpn)
            .field("min_version", &self.min_version)
            .finish()
    }
}

fn invalid(detail: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, detail)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::io(
            format_args!("reading the {what} file {}", path.display()),
            &e,
        )
    })
}

fn parse_chain(pem: &[u8], source: &str) -> Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("{source}: bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(format!(
            "{source}: no certificate in it (expected -----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(chain)
}

fn parse_key(pem: &[u8], source: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        invalid(format!(
            "{source}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"
        ))
    })
}

impl Config {
    /// The certificate chain (leaf first) and private key this end
    /// presents, as PEM. Checked now: bad PEM, or a key that does not
    /// belong to the leaf certificate, is refused.
    pub fn set_tls_cert_pem(&mut self, chain_pem: &[u8], key_pem: &[u8]) -> Result<()> {
        let chain = parse_chain(chain_pem, "the certificate chain")?;
        let key = parse_key(key_pem, "the private key")?;
        self.set_identity(chain, key, "the certificate chain", "the private key")
    }

    /// As [`Config::set_tls_cert_pem`], read from files (an unreadable
    /// one: `ErrorKind::Io`, naming it).
    pub fn set_tls_cert_files(
        &mut self,
        chain_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<()> {
        let (chain_path, key_path) = (chain_path.as_ref(), key_path.as_ref());
        let chain_source = format!("the certificate file {}", chain_path.display());
        let key_source = format!("the key file {}", key_path.display());
        let chain = parse_chain(&read_file(chain_path, "certificate")?, &chain_source)?;
        let key = parse_key(&read_file(key_path, "key")?, &key_source)?;
        self.set_identity(chain, key, &chain_source, &key_source)
    }

    fn set_identity(
        &mut self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        chain_source: &str,
        key_source: &str,
    ) -> Result<()> {
        let signing = provider()
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| invalid(format!("{key_source}: unusable private key: {e}")))?;
        rustls::sign::CertifiedKey::new(chain.clone(), signing)
            .keys_match()
            .map_err(|e| {
                invalid(format!(
                    "{key_source} does not belong to the first certificate of {chain_source}: {e}"
                ))
            })?;
        self.tls.identity = Some(Arc::new(Identity { chain, key }));
        Ok(())
    }

    /// The trust anchors (PEM, one or more CA certificates) the peer's
    /// certificate must chain to. Replaces any set before.
    pub fn set_tls_ca_pem(&mut self, ca_pem: &[u8]) -> Result<()> {
        self.set_ca(ca_pem, "the CA certificates")
    }

    /// As [`Config::set_tls_ca_pem`], read from a file.
    pub fn set_tls_ca_file(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let pem = read_file(path, "CA")?;
        self.set_ca(&pem, &format!("the CA file {}", path.display()))
    }

    fn set_ca(&mut self, pem: &[u8], source: &str) -> Result<()> {
        let mut roots = RootCertStore::empty();
        for cert in parse_chain(pem, source)? {
            roots
                .add(cert)
                .map_err(|e| invalid(format!("{source}: not a usable CA certificate: {e}")))?;
        }
        self.tls.ca = Some(Arc::new(roots));
        Ok(())
    }

    /// The name a client checks the server's certificate for (a DNS name
    /// or an IP address); by default the host of the address connected to.
    pub fn set_tls_server_name(&mut self, name: &str) -> Result<()> {
        ServerName::try_from(name.to_string())
            .map_err(|e| invalid(format!("\"{name}\" is no DNS name or IP address: {e}")))?;
        self.tls.server_name = Some(name.to_string());
        Ok(())
    }

    /// Whether a server asks clients for certificates; other than
    /// [`TlsClientAuth::None`] needs a CA ([`Config::set_tls_ca_pem`]),
    /// checked when the server is made.
    pub fn set_tls_client_auth(&mut self, mode: TlsClientAuth) {
        self.tls.client_auth = mode;
    }

    /// Adds an ALPN protocol (in order of preference); a server then
    /// refuses clients that offer none of them.
    pub fn add_tls_alpn(&mut self, protocol: &[u8]) -> Result<()> {
        if protocol.is_empty() || protocol.len() > 255 {
            return Err(invalid(format!(
                "an ALPN protocol name is 1 to 255 bytes, not {}",
                protocol.len()
            )));
        }
        self.tls.alpn.push(protocol.to_vec());
        Ok(())
    }

    /// The lowest TLS version accepted (default 1.3).
    pub fn set_tls_min_version(&mut self, version: TlsVersion) {
        self.tls.min_version = version;
    }

    /// TLS on connections made from a descriptor (`tls://` addresses
    /// imply it).
    pub fn set_tls(&mut self, on: bool) {
        self.tls.on = on;
    }

    /// Whether TLS is on (for descriptors; `tls://` addresses turn it on).
    pub fn tls(&self) -> bool {
        self.tls.on
    }

    /// The rustls configuration for a connection in `role`, when TLS is on
    /// (`None` when off). Build it once per server or connect: each call
    /// makes a new one. `host` is the host connected to, a client's
    /// default server name.
    pub(crate) fn tls_params(&self, role: Role, host: Option<&str>) -> Result<Option<TlsParams>> {
        if !self.tls.on {
            return Ok(None);
        }
        let t = &self.tls;
        let versions: &[&SupportedProtocolVersion] = match t.min_version {
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let fail = |e: rustls::Error| tls_error(&e, None).with_kind(ErrorKind::InvalidArgument);
        match role {
            Role::Server => {
                let Some(identity) = &t.identity else {
                    return Err(invalid(
                        "a TLS server needs a certificate and key: set them with sockserv_config_set_tls_cert".into(),
                    ));
                };
                let builder = ServerConfig::builder_with_provider(provider())
                    .with_protocol_versions(versions)
                    .map_err(fail)?;
                let builder = match (t.client_auth, &t.ca) {
                    (TlsClientAuth::None, _) => builder.with_no_client_auth(),
                    (_, None) => {
                        return Err(invalid(
                            "client certificates are asked for but no CA is set to check them: set one with sockserv_config_set_tls_ca".into(),
                        ))
                    }
                    (mode, Some(ca)) => {
                        let verifier =
                            WebPkiClientVerifier::builder_with_provider(ca.clone(), provider());
                        let verifier = if mode == TlsClientAuth::Optional {
                            verifier.allow_unauthenticated()
                        } else {
                            verifier
                        };
                        let verifier = verifier
                            .build()
                            .map_err(|e| invalid(format!("the CA cannot verify clients: {e}")))?;
                        builder.with_client_cert_verifier(verifier)
                    }
                };
                let mut config = builder
                    .with_single_cert(identity.chain.clone(), identity.key.clone_key())
                    .map_err(fail)?;
                config.alpn_protocols = t.alpn.clone();
                // No resumption: clients build a config per connect, so a
                // ticket would never be used; sending none saves bytes.
                config.send_tls13_tickets = 0;
                Ok(Some(TlsParams::Server(Arc::new(config))))
            }
            Role::Client => {
                let Some(ca) = &t.ca else {
                    return Err(invalid(
                        "no trust anchors: set one with sockserv_config_set_tls_ca".into(),
                    ));
                };
                let name = match (&t.server_name, host) {
                    (Some(name), _) => name.clone(),
                    (None, Some(host)) => host.to_string(),
                    (None, None) => {
                        return Err(invalid(
                            "no server name to check the certificate for: set one with sockserv_config_set_tls_server_name".into(),
                        ))
                    }
                };
                let name = ServerName::try_from(name.clone()).map_err(|e| {
                    invalid(format!("\"{name}\" is no DNS name or IP address: {e}"))
                })?;
                let builder = ClientConfig::builder_with_provider(provider())
                    .with_protocol_versions(versions)
                    .map_err(fail)?
                    .with_root_certificates(ca.clone());
                let mut config = match &t.identity {
                    Some(id) => builder
                        .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                        .map_err(fail)?,
                    None => builder.with_no_client_auth(),
                };
                config.alpn_protocols = t.alpn.clone();
                config.resumption = rustls::client::Resumption::disabled();
                Ok(Some(TlsParams::Client(Arc::new(config), name)))
            }
        }
    }
}

impl Config {
    /// Builds the rustls configuration once for every connection made
    /// from this (copied) config: a server's at bind, a client's per
    /// connect. TLS off: nothing.
    pub(crate) fn prepare_tls(&mut self, role: Role, host: Option<&str>) -> Result<()> {
        self.tls.prepared = None;
        self.tls.prepared = self.tls_params(role, host)?;
        Ok(())
    }

    /// What a new session's TLS layer is made from: the prepared
    /// configuration, or one built now (a config never prepared).
    pub(crate) fn session_tls(&self, role: Role, host: Option<&str>) -> Result<Option<TlsParams>> {
        match &self.tls.prepared {
            Some(p) => Ok(Some(p.clone())),
            None => self.tls_params(role, host),
        }
    }
}
