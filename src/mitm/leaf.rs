//! Leaf certificates for intercepted hosts, minted on first use and kept in a bounded LRU.
//!
//! One key pair per process signs for every leaf (as mitmproxy does), so minting costs one
//! ECDSA signature and no key generation. The name is always the CONNECT target's, never a
//! client-chosen SNI: a client cannot make the proxy mint for a name the policy did not see.

use std::io::Write as _;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::ResolvesServerCert;
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::ServerConfig;
use time::{Duration, OffsetDateTime};

use super::ca::{random_serial, Ca};
use super::MitmError;
use crate::policy::Host;

/// How many hosts' leaves are kept: more than a build or a crawl touches, bounded memory.
pub const CAPACITY: usize = 1024;

/// ALPN offered to the client: HTTP/2 first, as origins prefer.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The longest leaf validity clients accept for any server certificate (Apple: 825 days;
/// 397 is the public limit); never past the CA's own end.
const LEAF_DAYS: i64 = 397;

/// The leaf key and the cache of server configurations, by canonical host.
pub(super) struct Leaves {
    key: KeyPair,
    signing: Arc<dyn SigningKey>,
    provider: Arc<CryptoProvider>,
    cache: Mutex<LruCache<Box<str>, Arc<ServerConfig>>>,
}

impl Leaves {
    /// A fresh leaf key, and an empty cache of `capacity` hosts.
    pub(super) fn new(provider: Arc<CryptoProvider>, capacity: usize) -> Result<Self, MitmError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| MitmError::LeafKey(e.to_string()))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = provider.key_provider.load_private_key(der)?;
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Ok(Leaves {
            key,
            signing,
            provider,
            cache: Mutex::new(LruCache::new(capacity)),
        })
    }

    /// The configuration for `host`: cached, or minted now and cached.
    pub(super) fn get(&self, ca: &Ca, host: &Host<'_>) -> Result<Arc<ServerConfig>, MitmError> {
        let mut ip_text = [0u8; 45];
        let key = cache_key(host, &mut ip_text);
        if let Some(config) = self.lock().get(key) {
            return Ok(Arc::clone(config));
        }
        // Minted outside the lock: other hosts' lookups do not wait for a signature. Two
        // first connections to one host may both mint; the second insert wins, both work.
        let config = self.mint(ca, host)?;
        self.lock().put(key.into(), Arc::clone(&config));
        ::metrics::counter!(crate::metrics::MITM_LEAVES_MINTED).increment(1);
        Ok(config)
    }

    /// How many hosts are cached.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Box<str>, Arc<ServerConfig>>> {
        // A panic while holding it cannot leave the cache inconsistent (lru's own operations
        // do not panic midway), so a poisoned lock is still usable.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Signs a leaf for `host` and builds the server configuration around it.
    fn mint(&self, ca: &Ca, host: &Host<'_>) -> Result<Arc<ServerConfig>, MitmError> {
        let failed = |reason: String| MitmError::Mint {
            host: host.plain(),
            reason,
        };
        let (san, common_name) = match host {
            Host::Ip(ip) => (SanType::IpAddress(*ip), ip.to_string()),
            Host::Name(name) => {
                let dns = name
                    .to_string()
                    .try_into()
                    .map_err(|e: rcgen::Error| failed(e.to_string()))?;
                (SanType::DnsName(dns), name.to_string())
            }
        };
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![san];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = (now + Duration::days(LEAF_DAYS)).min(ca.not_after());
        let serial = random_serial().map_err(|e| failed(e.to_string()))?;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let leaf = params
            .signed_by(&self.key, ca.issuer())
            .map_err(|e| failed(e.to_string()))?;
        let chain = vec![leaf.der().clone(), ca.cert_der().clone()];
        let resolver: Arc<dyn ResolvesServerCert> = Arc::new(SingleCertAndKey::from(
            CertifiedKey::new(chain, Arc::clone(&self.signing)),
        ));
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// The cache key: the canonical name itself, or the address written into `buf` (no
/// allocation either way). Names never parse as addresses, so the two cannot collide.
pub(super) fn cache_key<'a>(host: &'a Host<'_>, buf: &'a mut [u8; 45]) -> &'a str {
    match host {
        Host::Name(name) => name,
        Host::Ip(ip) => write_ip(*ip, buf),
    }
}

fn write_ip(ip: IpAddr, buf: &mut [u8; 45]) -> &str {
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // 45 bytes hold the longest IPv6 text (an IPv4-mapped form), so this cannot fail.
    let _ = write!(cursor, "{ip}");
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}
