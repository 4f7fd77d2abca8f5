use std::borrow::Cow;
use std::net::IpAddr;

use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A Mitm with a fresh generated CA under a temp dir (kept alive by the returned guard).
fn mitm(capacity: usize) -> (Arc<Mitm>, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let config = MitmConfig {
        enabled: true,
        ..MitmConfig::default()
    };
    let ca = Ca::load_from(&config, data.path()).unwrap();
    // The CA file as `upstream_ca`: the tests' machine may have no system roots.
    let cert = ca.paths_of().cert.clone();
    (
        Mitm::with_capacity(ca, Some(&cert), capacity).unwrap(),
        data,
    )
}

fn name(text: &str) -> Host<'static> {
    Host::Name(Cow::Owned(text.to_string()))
}

/// A client that trusts only `mitm`'s CA connects to a server using the configuration
/// minted for `minted`, asking for `asked`; returns what the handshake gave.
async fn handshake(
    mitm: &Mitm,
    minted: &Host<'_>,
    asked: ServerName<'static>,
) -> Result<Vec<u8>, String> {
    let server_config = mitm.server_config(minted).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
        if let Ok(mut tls) = acceptor.accept(tcp).await {
            let _ = tls.write_all(b"hello").await;
            let _ = tls.shutdown().await;
        }
    });
    let mut roots = RootCertStore::empty();
    roots.add(mitm.ca().cert_der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let result = match connector.connect(asked, tcp).await {
        Ok(mut tls) => {
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            let mut got = Vec::new();
            tls.read_to_end(&mut got).await.map_err(|e| e.to_string())?;
            Ok(got)
        }
        Err(err) => Err(err.to_string()),
    };
    server.await.unwrap();
    result
}

#[tokio::test]
async fn a_client_that_trusts_the_ca_accepts_the_leaf_for_its_name_only() {
    let (mitm, _data) = mitm(CAPACITY);
    let host = name("allowed.test");
    let asked = ServerName::try_from("allowed.test").unwrap();
    assert_eq!(handshake(&mitm, &host, asked).await.unwrap(), b"hello");
    let other = ServerName::try_from("other.test").unwrap();
    let err = handshake(&mitm, &host, other).await.unwrap_err();
    assert!(
        err.contains("NotValidForName") || err.contains("not valid for"),
        "{err}"
    );
    let sub = ServerName::try_from("sub.allowed.test").unwrap();
    assert!(handshake(&mitm, &host, sub).await.is_err());
}

#[tokio::test]
async fn an_ip_literal_gets_an_ip_address_san() {
    let (mitm, _data) = mitm(CAPACITY);
    for ip in ["127.0.0.1", "::1"] {
        let ip: IpAddr = ip.parse().unwrap();
        let asked = ServerName::IpAddress(ip.into());
        assert_eq!(
            handshake(&mitm, &Host::Ip(ip), asked).await.unwrap(),
            b"hello"
        );
        let wrong = ServerName::IpAddress("127.0.0.2".parse::<IpAddr>().unwrap().into());
        assert!(handshake(&mitm, &Host::Ip(ip), wrong).await.is_err());
        // The address as a DNS name is not what the certificate says.
        let as_name = ServerName::try_from("localhost").unwrap();
        assert!(handshake(&mitm, &Host::Ip(ip), as_name).await.is_err());
    }
}

#[test]
fn the_leaf_is_a_server_certificate_within_the_cas_validity() {
    let (mitm, _data) = mitm(CAPACITY);
    let config = mitm.server_config(&name("allowed.test")).unwrap();
    assert_eq!(
        config.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    // The minted chain, through the same path the handshake takes.
    let (leaf, ca) = chain_of(&mitm, &name("allowed.test"));
    assert_eq!(ca, mitm.ca().cert_der().to_vec());
    let (_, x509) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let eku = x509.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    assert!(!x509
        .basic_constraints()
        .unwrap()
        .is_some_and(|b| b.value.ca));
    let validity = x509.validity();
    let now = time::OffsetDateTime::now_utc();
    assert!(validity.not_before.to_datetime() < now);
    assert!(validity.not_after.to_datetime() <= mitm.ca().not_after());
    // Every leaf has its own serial, although they share the key.
    let (other, _) = chain_of(&mitm, &name("other.test"));
    let (_, other) = x509_parser::parse_x509_certificate(&other).unwrap();
    assert_ne!(other.serial, x509.serial);
    assert_eq!(
        other.public_key().raw,
        x509.public_key().raw,
        "one leaf key per process"
    );
}

/// The DER of the leaf and the CA that `host`'s configuration serves.
fn chain_of(mitm: &Mitm, host: &Host<'_>) -> (Vec<u8>, Vec<u8>) {
    let config = mitm.server_config(host).unwrap();
    let mut server = rustls::ServerConnection::new(config).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(mitm.ca().cert_der().clone()).unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let asked = ServerName::try_from(host.plain()).unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(client_config), asked).unwrap();
    while client.is_handshaking() || server.is_handshaking() {
        let mut buf = Vec::new();
        client.write_tls(&mut buf).unwrap();
        server.read_tls(&mut buf.as_slice()).unwrap();
        server.process_new_packets().unwrap();
        let mut buf = Vec::new();
        server.write_tls(&mut buf).unwrap();
        client.read_tls(&mut buf.as_slice()).unwrap();
        client.process_new_packets().unwrap();
    }
    let chain = client.peer_certificates().unwrap();
    (chain[0].to_vec(), chain[1].to_vec())
}

#[test]
fn a_cached_host_gets_the_same_config_and_the_cache_stays_bounded() {
    let (mitm, _data) = mitm(4);
    let first = mitm.server_config(&name("a.test")).unwrap();
    let again = mitm.server_config(&name("a.test")).unwrap();
    assert!(Arc::ptr_eq(&first, &again), "a cached host is minted again");
    let ip = mitm
        .server_config(&Host::Ip("10.0.0.1".parse().unwrap()))
        .unwrap();
    let ip_again = mitm
        .server_config(&Host::Ip("10.0.0.1".parse().unwrap()))
        .unwrap();
    assert!(Arc::ptr_eq(&ip, &ip_again));
    assert!(!Arc::ptr_eq(&ip, &first));
    for i in 0..10 {
        mitm.server_config(&name(&format!("h{i}.test"))).unwrap();
        assert!(mitm.leaves.len() <= 4);
    }
    assert_eq!(mitm.leaves.len(), 4);
    let evicted = mitm.server_config(&name("a.test")).unwrap();
    assert!(
        !Arc::ptr_eq(&first, &evicted),
        "the least recently used host was kept"
    );
}

#[test]
fn the_longest_ipv6_text_fits_the_key_buffer() {
    let mut buf = [0u8; 45];
    let longest: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
        .parse()
        .unwrap();
    let host = Host::Ip(longest);
    assert_eq!(leaf::cache_key(&host, &mut buf), longest.to_string());
}

#[test]
fn origin_configs_offer_what_was_asked() {
    let (mitm, _data) = mitm(CAPACITY);
    assert_eq!(
        mitm.client_config(Alpn::H2AndHttp1).alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    assert_eq!(
        mitm.client_config(Alpn::Http1).alpn_protocols,
        [b"http/1.1".to_vec()]
    );
    assert!(Arc::ptr_eq(
        &mitm.client_config(Alpn::Http1),
        &mitm.client_config(Alpn::Http1)
    ));
}

#[test]
fn a_bad_upstream_ca_is_named() {
    let data = tempfile::tempdir().unwrap();
    let config = MitmConfig {
        enabled: true,
        ..MitmConfig::default()
    };
    let ca = Ca::load_from(&config, data.path()).unwrap();
    let missing = data.path().join("missing.pem");
    let err = Mitm::with_ca(ca, Some(&missing)).unwrap_err();
    assert!(matches!(err, MitmError::UpstreamCa { .. }), "{err}");
    assert!(err.to_string().contains("missing.pem"), "{err}");
}
