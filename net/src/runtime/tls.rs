//! The cluster's identity: a CA made for the cluster and one certificate
//! per node, and the mutual-TLS configurations QUIC runs on.
//!
//! `make_cluster` writes, under one directory: `ca.pem` and `ca.key` (keep
//! the key offline once every node has its certificate), and per node
//! `NODE.pem` and `NODE.key`; and `token-signing.key`, the key the FHIR
//! server's token endpoint signs access tokens with. Every certificate carries the cluster's name
//! (subject O) and the node's name (subject CN and a DNS SAN). A peer is
//! accepted only if its certificate chains to this cluster's CA: a node of
//! another cluster, or one with a self-made certificate, fails the
//! handshake, and the refusal is logged with rustls's reason.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::proto::wire::ALPN;

/// Why certificates could not be made or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A certificate or key is malformed.
    #[error("{path}: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Certificate generation failed.
    #[error("making certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// A node or cluster name that cannot be used.
    #[error("invalid name {0:?}: use letters, digits, '-', '_' and '.', at most 64")]
    BadName(String),
}

/// A node to make a certificate for: its name and the host names and IP
/// addresses it is reached at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The node's name (also a DNS SAN).
    pub name: String,
    /// Further SANs: host names or IP addresses.
    pub hosts: Vec<String>,
}

impl NodeSpec {
    /// Parses `NAME` or `NAME=host,ip,…`. Without hosts, the node is
    /// reachable as `localhost`, `127.0.0.1` and `::1`.
    pub fn parse(s: &str) -> Result<Self, TlsError> {
        let (name, hosts) = match s.split_once('=') {
            Some((n, h)) => (
                n,
                h.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(String::from)
                    .collect(),
            ),
            None => (
                s,
                vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            ),
        };
        check_name(name)?;
        Ok(Self {
            name: name.into(),
            hosts,
        })
    }
}

fn check_name(name: &str) -> Result<(), TlsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(TlsError::BadName(name.into()))
    }
}

fn write(path: &Path, contents: &str, secret: bool) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |op, source| TlsError::Io {
        op,
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| io("create", e))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| io("write", e))?;
    f.sync_all().map_err(|e| io("sync", e))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    })
}

/// The file [`make_cluster`] writes the cluster's token-signing key to.
pub const TOKEN_SIGNING_KEY: &str = "token-signing.key";

/// Makes a cluster CA (or reuses the one already in `out`), a certificate
/// and key for each node, and (unless one is there) the cluster's
/// token-signing key: an EC P-384 private key (PKCS#8 PEM) for the FHIR
/// server's built-in SMART token endpoint, the same on every node.
/// Returns the files written.
pub fn make_cluster(
    out: &Path,
    cluster: &str,
    nodes: &[NodeSpec],
) -> Result<Vec<PathBuf>, TlsError> {
    check_name(cluster)?;
    std::fs::create_dir_all(out).map_err(|source| TlsError::Io {
        op: "create directory",
        path: out.to_owned(),
        source,
    })?;
    let mut written = Vec::new();
    let (ca_pem, ca_key_pem) = (out.join("ca.pem"), out.join("ca.key"));
    let ca_key = if ca_key_pem.exists() {
        let pem = String::from_utf8(read(&ca_key_pem)?).map_err(|_| TlsError::Pem {
            path: ca_key_pem.clone(),
            detail: "not UTF-8".into(),
        })?;
        KeyPair::from_pem(&pem)?
    } else {
        KeyPair::generate()?
    };
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("Vigil cluster {cluster} CA"));
    dn.push(DnType::OrganizationName, cluster);
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = rcgen::date_time_ymd(2025, 1, 1);
    ca.not_after = rcgen::date_time_ymd(2045, 1, 1);
    if !ca_pem.exists() {
        let cert = ca.self_signed(&ca_key)?;
        write(&ca_pem, &cert.pem(), false)?;
        write(&ca_key_pem, &ca_key.serialize_pem(), true)?;
        written.extend([ca_pem.clone(), ca_key_pem.clone()]);
    }
    let issuer = Issuer::new(ca, ca_key);
    for n in nodes {
        check_name(&n.name)?;
        let mut sans = vec![n.name.clone()];
        sans.extend(n.hosts.iter().cloned());
        let mut p = CertificateParams::new(sans)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, n.name.clone());
        dn.push(DnType::OrganizationName, cluster);
        p.distinguished_name = dn;
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = rcgen::date_time_ymd(2025, 1, 1);
        p.not_after = rcgen::date_time_ymd(2045, 1, 1);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        let (cp, kp) = (
            out.join(format!("{}.pem", n.name)),
            out.join(format!("{}.key", n.name)),
        );
        write(&cp, &cert.pem(), false)?;
        write(&kp, &key.serialize_pem(), true)?;
        written.extend([cp, kp]);
    }
    let token_key = out.join(TOKEN_SIGNING_KEY);
    if !token_key.exists() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
        write(&token_key, &key.serialize_pem(), true)?;
        written.push(token_key);
    }
    Ok(written)
}

/// A node's certificate, key and the cluster CA, loaded from disk.
#[derive(Debug)]
pub struct Identity {
    /// The node's name.
    pub node: String,
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// Loads `ca.pem`, `NODE.pem` and `NODE.key` from `dir`.
    pub fn load(dir: &Path, node: &str) -> Result<Self, TlsError> {
        check_name(node)?;
        let pem = |name: String| -> Result<(PathBuf, Vec<u8>), TlsError> {
            let p = dir.join(name);
            let b = read(&p)?;
            Ok((p, b))
        };
        let bad = |path: &Path, e: rustls::pki_types::pem::Error| TlsError::Pem {
            path: path.to_owned(),
            detail: e.to_string(),
        };
        let (ca_path, ca) = pem("ca.pem".into())?;
        let ca = CertificateDer::from_pem_slice(&ca).map_err(|e| bad(&ca_path, e))?;
        let (cert_path, certs) = pem(format!("{node}.pem"))?;
        let chain = CertificateDer::pem_slice_iter(&certs)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&cert_path, e))?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                path: cert_path,
                detail: "no certificate".into(),
            });
        }
        let (key_path, key) = pem(format!("{node}.key"))?;
        let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| bad(&key_path, e))?;
        Ok(Self {
            node: node.into(),
            ca,
            chain,
            key,
        })
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca.clone())
            .map_err(|e| TlsError::Config(format!("cluster CA: {e}")))?;
        Ok(Arc::new(roots))
    }

    /// The QUIC server configuration: this node's certificate, and client
    /// certificates required and checked against the cluster CA.
    pub fn server_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots()?,
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        cfg.transport_config(transport);
        Ok(cfg)
    }

    /// The QUIC client configuration: the server must chain to the cluster
    /// CA; this node presents its own certificate.
    pub fn client_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
        cfg.transport_config(transport);
        Ok(cfg)
    }
}

/// Whether the certificate chain a peer presented (end-entity certificate
/// first, as [`peer_chain`] gives it) was made for node `name`: its name
/// (or one of its hosts) as a subject alternative name. The chain was
/// already checked against the cluster CA during the handshake; this binds
/// a name a message claims to the node that sent it, so no member can speak
/// for another. False for an empty chain or a name that is not a DNS name
/// or IP address.
pub fn peer_is(chain: &[CertificateDer<'_>], name: &str) -> bool {
    let Some(end_entity) = chain.first() else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(end_entity) else {
        return false;
    };
    let Ok(subject) = rustls::pki_types::ServerName::try_from(name) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&subject).is_ok()
}

/// The certificate chain the peer of `conn` presented in the handshake
/// (empty if it presented none, which mutual TLS never lets through).
pub fn peer_chain(conn: &quinn::Connection) -> Vec<CertificateDer<'static>> {
    conn.peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|chain| *chain)
        .unwrap_or_default()
}

/// The congestion window a replication connection starts with (quinn's
/// default is 12,000 bytes). Cubic grows its window only while the sender
/// is not application-limited, and a live tail nearly always is: with the
/// default window, a burst of commits over a 50 ms round trip queued for
/// several round trips (commit-to-durable p99 190-240 ms at half the
/// leader's top rate, against a p50 of 53 ms). 1 MiB carries ~20 MB/s at a
/// 50 ms round trip from the first packet, ~8x the live tail at the
/// leader's top rate; pacing still spreads each window over the round trip.
pub const INITIAL_WINDOW_BYTES: u64 = 1 << 20;

/// QUIC transport settings for a long, fat link: flow-control windows of
/// `window_bytes` (at least bandwidth × round trip), a congestion window
/// that starts at [`INITIAL_WINDOW_BYTES`] (at most `window_bytes`),
/// keep-alives well inside the idle timeout.
pub fn transport_config(window_bytes: u64, idle_timeout: Duration) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    let mut cubic = quinn::congestion::CubicConfig::default();
    cubic.initial_window(INITIAL_WINDOW_BYTES.min(window_bytes));
    t.congestion_controller_factory(Arc::new(cubic));
    let w = quinn::VarInt::from_u64(window_bytes).unwrap_or(quinn::VarInt::MAX);
    t.stream_receive_window(w);
    t.receive_window(w);
    t.send_window(window_bytes);
    t.max_concurrent_uni_streams(0u32.into());
    t.max_concurrent_bidi_streams(4u32.into());
    t.keep_alive_interval(Some(idle_timeout / 4));
    if let Ok(idle) = quinn::IdleTimeout::try_from(idle_timeout) {
        t.max_idle_timeout(Some(idle));
    }
    Arc::new(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_proves_its_own_node_name_and_hosts_only() {
        let d = tempfile::tempdir().expect("dir");
        let specs = [
            NodeSpec::parse("a=a.example,10.0.0.1").expect("spec"),
            NodeSpec::parse("b").expect("spec"),
        ];
        make_cluster(d.path(), "t", &specs).expect("certs");
        let a = Identity::load(d.path(), "a").expect("a");
        let b = Identity::load(d.path(), "b").expect("b");
        assert!(peer_is(&a.chain, "a"));
        assert!(peer_is(&a.chain, "a.example"), "a host it was made for");
        assert!(peer_is(&a.chain, "10.0.0.1"), "an address it was made for");
        assert!(!peer_is(&a.chain, "b"), "a cannot speak as b");
        assert!(!peer_is(&a.chain, "w"));
        assert!(peer_is(&b.chain, "b") && !peer_is(&b.chain, "a"));
        assert!(!peer_is(&[], "a"), "no certificate proves nothing");
        assert!(!peer_is(&a.chain, ""), "not a name");
        assert!(
            !peer_is(&[CertificateDer::from(vec![0u8; 16])], "a"),
            "garbage is no certificate"
        );
    }
}
