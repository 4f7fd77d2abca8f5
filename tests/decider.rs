//! The embedding hook through real listeners: an embedder's decider is asked only about
//! destinations no rule matched, and a yes never opens what the engine refuses for other
//! reasons (deny rules, local addresses, the proxy itself, DNS).

mod support;

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use egress_proxy::config::{self, Sources};
use egress_proxy::decider::{DeciderOptions, Question};
use egress_proxy::server::Server;
use support::fake_dns::{Answer, FakeDns};
use support::origin::HttpOrigin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The audit log, kept in memory.
#[derive(Clone, Default)]
struct Audit(Arc<Mutex<Vec<u8>>>);

impl Write for Audit {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Audit {
    fn decisions(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["event"] == "decision")
            .collect()
    }
}

struct Proxy {
    server: Server,
    audit: Audit,
    asked: Arc<Mutex<Vec<Question>>>,
    _dns: FakeDns,
}

impl Proxy {
    /// A proxy whose decider answers `answer` after `delay`, under `extra` policy text.
    async fn start(extra: &str, answer: bool, delay: Duration) -> Proxy {
        let dns = FakeDns::start([
            ("asked.test", Answer::A(vec![Ipv4Addr::LOCALHOST])),
            ("ruled.test", Answer::A(vec![Ipv4Addr::LOCALHOST])),
        ]);
        let text = format!(
            "allowed_domains = [\"ruled.test\"]\ndenied_domains = [\"evil.test\"]\n{extra}\n[dns]\nservers = [\"{}\"]\ntimeout_ms = 500\n",
            dns.addr
        );
        let config = config::load_texts(&[("policy.toml", &text)], None, &Sources::default())
            .expect("the test policy loads");
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&asked);
        let decider = move |question: Question| {
            log.lock().unwrap().push(question);
            async move {
                tokio::time::sleep(delay).await;
                answer
            }
        };
        let options = DeciderOptions {
            cache_for: Duration::from_secs(60),
            timeout: Duration::from_millis(300),
        };
        let audit = Audit::default();
        let server = Server::builder(config)
            .ephemeral()
            .audit(Box::new(audit.clone()))
            .decider(Arc::new(decider), options)
            .start()
            .await
            .expect("the proxy starts");
        Proxy {
            server,
            audit,
            asked,
            _dns: dns,
        }
    }

    fn asked(&self) -> Vec<String> {
        let asked = self.asked.lock().unwrap();
        asked
            .iter()
            .map(|q| format!("{} {}:{}", q.protocol, q.host, q.port))
            .collect()
    }

    /// `CONNECT authority`: the status and `x-proxy-reason`.
    async fn connect(&self, authority: &str) -> (u16, String) {
        self.head(format!(
            "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
        ))
        .await
    }

    /// A plain-HTTP `method url` without a body: the status and `x-proxy-reason`.
    async fn request(&self, method: &str, url: &str) -> (u16, String) {
        self.head(format!(
            "{method} {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ))
        .await
    }

    /// Sends `request` and reads the head of the answer.
    async fn head(&self, request: String) -> (u16, String) {
        let mut stream = TcpStream::connect(self.server.http_addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let reason = head
            .lines()
            .find_map(|l| l.strip_prefix("x-proxy-reason: "))
            .unwrap_or("")
            .to_string();
        (status, reason)
    }

    /// A SOCKS5 CONNECT to `name:port`: the reply code.
    async fn socks(&self, name: &str, port: u16) -> u8 {
        let addr = self.server.socks_addr.expect("socks5 is on");
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&[5, 1, 0]).await.unwrap();
        let mut method = [0u8; 2];
        stream.read_exact(&mut method).await.unwrap();
        let mut request = vec![5, 1, 0, 3, name.len() as u8];
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(&port.to_be_bytes());
        stream.write_all(&request).await.unwrap();
        let mut reply = [0u8; 2];
        stream.read_exact(&mut reply).await.unwrap();
        reply[1]
    }
}

#[tokio::test]
async fn a_yes_opens_only_what_no_rule_matched_and_the_audit_says_who_decided() {
    let origin = HttpOrigin::start();
    let port = origin.addr.port();
    let proxy = Proxy::start("allow_local_binding = true", true, Duration::ZERO).await;
    let asked_dest = format!("asked.test:{port}");
    assert_eq!(proxy.connect(&asked_dest).await, (200, String::new()));
    assert_eq!(proxy.connect(&asked_dest).await.0, 200);
    assert_eq!(proxy.socks("asked.test", port).await, 0x00);
    assert_eq!(
        proxy.asked(),
        [format!("connect asked.test:{port}")],
        "one question per destination while its answer stands, across listeners"
    );
    // Decided by the rules: never asked, whatever the decider would say.
    assert_eq!(proxy.connect(&format!("ruled.test:{port}")).await.0, 200);
    assert_eq!(
        proxy.connect("evil.test:443").await,
        (403, "deny-rule".into())
    );
    assert_eq!(
        proxy.connect("bad_host!:443").await,
        (400, "invalid-host".into())
    );
    assert_eq!(proxy.asked().len(), 1, "{:?}", proxy.asked());

    let by: Vec<(String, String)> = proxy
        .audit
        .decisions()
        .iter()
        .map(|d| {
            let host = d["host"].as_str().unwrap_or("").to_string();
            (host, d["decided_by"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(by[0], ("asked.test".into(), "decider".into()));
    assert!(
        by.contains(&("ruled.test".into(), "policy".into())),
        "{by:?}"
    );
    assert!(
        by.contains(&("evil.test".into(), "policy".into())),
        "{by:?}"
    );
}

#[tokio::test]
async fn a_yes_never_opens_local_addresses_the_proxy_itself_or_a_failed_lookup() {
    let proxy = Proxy::start("", true, Duration::ZERO).await;
    // Asked, allowed, and still refused by the checks after the rules.
    assert_eq!(
        proxy.connect("asked.test:443").await,
        (403, "dns-non-public:loopback".into()),
        "a decider's yes is not an exact rule: no local exception"
    );
    assert_eq!(
        proxy.connect("127.0.0.1:9").await,
        (403, "non-public-ip:loopback".into())
    );
    assert_eq!(
        proxy.connect("unknown.test:443").await,
        (502, "dns-failed".into())
    );
    let local = Proxy::start("allow_local_binding = true", true, Duration::ZERO).await;
    let own_port = local.server.http_addr.port();
    assert_eq!(
        local.connect(&format!("asked.test:{own_port}")).await,
        (403, "self-connection".into())
    );
    assert_eq!(proxy.asked().len(), 3, "{:?}", proxy.asked());
}

#[tokio::test]
async fn a_no_or_a_late_answer_denies_as_not_allowed() {
    let no = Proxy::start("", false, Duration::ZERO).await;
    assert_eq!(
        no.connect("asked.test:443").await,
        (403, "not-allowed".into())
    );
    assert_eq!(no.socks("asked.test", 443).await, 0x02);
    assert_eq!(no.asked().len(), 1, "the no is kept too");
    let decided_by = &no.audit.decisions()[0]["decided_by"];
    assert_eq!(decided_by, "decider");

    let slow = Proxy::start("allow_local_binding = true", true, Duration::from_secs(5)).await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        slow.connect("asked.test:443").await,
        (403, "not-allowed".into())
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the timeout"
    );
    assert_eq!(slow.connect("asked.test:443").await.1, "not-allowed");
    assert_eq!(slow.asked().len(), 2, "a timeout is not kept: asked again");
}

/// A request an http rule refuses is no destination that no rule matched: the decider is not
/// asked about it (its yes would change nothing), while a request the http rules let through
/// to an unlisted host is asked about.
#[tokio::test]
async fn an_http_rule_refusal_is_not_asked_about() {
    let rules = "allow_local_binding = true\n[[http_rules]]\nhost = \"asked.test\"\nmethods = [\"GET\"]\naction = \"allow\"\n";
    let proxy = Proxy::start(rules, true, Duration::ZERO).await;
    let origin = HttpOrigin::start();
    let url = format!("http://asked.test:{}/", origin.addr.port());
    assert_eq!(
        proxy.request("POST", &url).await,
        (403, "not-allowed".into())
    );
    assert!(proxy.asked().is_empty(), "{:?}", proxy.asked());
    assert_eq!(proxy.request("GET", &url).await.0, 200);
    assert_eq!(proxy.asked().len(), 1, "{:?}", proxy.asked());
    assert_eq!(origin.request_count(), 1);
}

#[tokio::test]
async fn limited_mode_refuses_before_the_decider_is_asked() {
    let proxy = Proxy::start("mode = \"limited\"", true, Duration::ZERO).await;
    assert_eq!(
        proxy.connect("asked.test:443").await,
        (403, "mitm-required".into())
    );
    assert!(proxy.asked().is_empty());
}
