//! The child's proxy environment: which variables `run` sets, and to what.

use std::net::SocketAddr;

use crate::session::{self, SessionToken};

/// What one variable of the child's environment is set to. `<creds>@` is `egress:<token>@`
/// with session credentials, and nothing without.
#[derive(Clone, Copy, Debug)]
enum Value {
    /// `http://<creds>@127.0.0.1:<http>`
    HttpUrl,
    /// `socks5h://<creds>@127.0.0.1:<socks>`, or the HTTP URL when SOCKS5 is off.
    SocksUrl,
    /// `<creds>@127.0.0.1:<http>` (rsync's `USER:PASS@HOST:PORT`)
    HttpAuthority,
    /// `127.0.0.1`
    HttpHost,
    /// `<http>`
    HttpPort,
    /// The user name of the credentials; not set without them.
    User,
    /// The token; not set without credentials.
    Password,
    /// `--no-proxy LIST`, else the empty string.
    NoProxy,
    /// The CA bundle's path (system roots plus the local CA); not set without HTTPS
    /// inspection.
    CaBundle,
    Fixed(&'static str),
}

/// The environment of SPEC section 8, set on top of the inherited one: the only place the
/// child's proxy variables are named. npm reads `npm_config_<key>` for its config keys
/// `proxy`, `https-proxy` and `noproxy` only; an `npm_config_http_proxy` makes every npm
/// command warn "Unknown env config", so it is not set.
const CHILD_ENV: &[(&str, Value)] = &[
    ("HTTP_PROXY", Value::HttpUrl),
    ("HTTPS_PROXY", Value::HttpUrl),
    ("http_proxy", Value::HttpUrl),
    ("https_proxy", Value::HttpUrl),
    ("WS_PROXY", Value::HttpUrl),
    ("WSS_PROXY", Value::HttpUrl),
    ("ws_proxy", Value::HttpUrl),
    ("wss_proxy", Value::HttpUrl),
    ("GRPC_PROXY", Value::HttpUrl),
    ("grpc_proxy", Value::HttpUrl),
    ("DOCKER_HTTP_PROXY", Value::HttpUrl),
    ("DOCKER_HTTPS_PROXY", Value::HttpUrl),
    ("YARN_HTTP_PROXY", Value::HttpUrl),
    ("YARN_HTTPS_PROXY", Value::HttpUrl),
    ("npm_config_proxy", Value::HttpUrl),
    ("npm_config_https_proxy", Value::HttpUrl),
    ("NPM_CONFIG_PROXY", Value::HttpUrl),
    ("NPM_CONFIG_HTTPS_PROXY", Value::HttpUrl),
    ("BUNDLE_HTTP_PROXY", Value::HttpUrl),
    ("BUNDLE_HTTPS_PROXY", Value::HttpUrl),
    ("PIP_PROXY", Value::HttpUrl),
    ("ALL_PROXY", Value::SocksUrl),
    ("all_proxy", Value::SocksUrl),
    ("FTP_PROXY", Value::SocksUrl),
    ("ftp_proxy", Value::SocksUrl),
    ("RSYNC_PROXY", Value::HttpAuthority),
    ("CLOUDSDK_PROXY_TYPE", Value::Fixed("http")),
    ("CLOUDSDK_PROXY_ADDRESS", Value::HttpHost),
    ("CLOUDSDK_PROXY_PORT", Value::HttpPort),
    ("CLOUDSDK_PROXY_USERNAME", Value::User),
    ("CLOUDSDK_PROXY_PASSWORD", Value::Password),
    ("NODE_USE_ENV_PROXY", Value::Fixed("1")),
    ("ELECTRON_GET_USE_PROXY", Value::Fixed("true")),
    ("EGRESS_PROXY_ACTIVE", Value::Fixed("1")),
    ("NO_PROXY", Value::NoProxy),
    ("no_proxy", Value::NoProxy),
    ("npm_config_noproxy", Value::NoProxy),
    ("NPM_CONFIG_NOPROXY", Value::NoProxy),
    ("BUNDLE_NO_PROXY", Value::NoProxy),
    ("SSL_CERT_FILE", Value::CaBundle),
    ("REQUESTS_CA_BUNDLE", Value::CaBundle),
    ("CURL_CA_BUNDLE", Value::CaBundle),
    ("NODE_EXTRA_CA_CERTS", Value::CaBundle),
    ("GIT_SSL_CAINFO", Value::CaBundle),
    ("PIP_CERT", Value::CaBundle),
    ("CARGO_HTTP_CAINFO", Value::CaBundle),
    ("AWS_CA_BUNDLE", Value::CaBundle),
    ("DENO_CERT", Value::CaBundle),
    // npm gives its own `ca` to every request, so Node's NODE_EXTRA_CA_CERTS does not reach
    // it: its `cafile` key does.
    ("npm_config_cafile", Value::CaBundle),
    ("NPM_CONFIG_CAFILE", Value::CaBundle),
];

/// What the child's environment is made from besides the listeners.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Extras<'a> {
    /// `--no-proxy LIST`, or the isolated run's default.
    pub no_proxy: Option<&'a str>,
    /// This run's proxy credentials.
    pub session: Option<&'a SessionToken>,
    /// The CA bundle's path, with HTTPS inspection.
    pub ca_bundle: Option<&'a str>,
}

/// Every variable of [`CHILD_ENV`] with its value for these listeners and extras.
pub(super) fn child_env(
    http: SocketAddr,
    socks: Option<SocketAddr>,
    extras: Extras<'_>,
) -> Vec<(&'static str, String)> {
    let Extras {
        no_proxy,
        session,
        ca_bundle,
    } = extras;
    let creds = session.map_or_else(String::new, |s| format!("{}:{}@", session::USER, s.token()));
    let http_url = format!("http://{creds}{http}");
    let socks_url = socks.map_or_else(
        || http_url.clone(),
        |addr| format!("socks5h://{creds}{addr}"),
    );
    CHILD_ENV
        .iter()
        .filter_map(|&(name, value)| {
            let value = match value {
                Value::HttpUrl => http_url.clone(),
                Value::SocksUrl => socks_url.clone(),
                Value::HttpAuthority => format!("{creds}{http}"),
                Value::HttpHost => http.ip().to_string(),
                Value::HttpPort => http.port().to_string(),
                Value::User => session.map(|_| session::USER.to_string())?,
                Value::Password => session.map(|s| s.token().to_string())?,
                Value::NoProxy => no_proxy.unwrap_or("").to_string(),
                Value::CaBundle => ca_bundle?.to_string(),
                Value::Fixed(text) => text.to_string(),
            };
            Some((name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_follow_the_listeners() {
        let http: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let socks: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        let env = child_env(http, Some(socks), Extras::default());
        let get = |name: &str| {
            env.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
                .unwrap()
        };
        assert_eq!(get("HTTPS_PROXY"), "http://127.0.0.1:4000");
        assert_eq!(get("all_proxy"), "socks5h://127.0.0.1:4001");
        assert_eq!(get("RSYNC_PROXY"), "127.0.0.1:4000");
        assert_eq!(get("CLOUDSDK_PROXY_ADDRESS"), "127.0.0.1");
        assert_eq!(get("CLOUDSDK_PROXY_PORT"), "4000");
        assert_eq!(get("NO_PROXY"), "");
        assert!(!env
            .iter()
            .any(|(n, _)| n.starts_with("CLOUDSDK_PROXY_USER")));
        assert!(!env.iter().any(|(n, _)| *n == "CLOUDSDK_PROXY_PASSWORD"));
        let ca_vars = CHILD_ENV
            .iter()
            .filter(|(_, v)| matches!(v, Value::CaBundle));
        assert_eq!(ca_vars.count(), 11);
        assert!(
            !env.iter()
                .any(|(n, _)| *n == "SSL_CERT_FILE" || *n == "DENO_CERT"),
            "CA variables without HTTPS inspection"
        );
        let no_proxy = Extras {
            no_proxy: Some("a.test,b.test"),
            ..Extras::default()
        };
        let env = child_env(http, None, no_proxy);
        assert!(env
            .iter()
            .any(|(n, v)| *n == "FTP_PROXY" && v == "http://127.0.0.1:4000"));
        assert!(env
            .iter()
            .any(|(n, v)| *n == "BUNDLE_NO_PROXY" && v == "a.test,b.test"));
        let session = SessionToken::parse("0123456789abcdef0123456789abcdef").unwrap();
        let with_session = Extras {
            session: Some(&session),
            ..Extras::default()
        };
        let env = child_env(http, Some(socks), with_session);
        let get = |name: &str| {
            env.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
                .unwrap()
        };
        let creds = "egress:0123456789abcdef0123456789abcdef@";
        assert_eq!(get("HTTPS_PROXY"), format!("http://{creds}127.0.0.1:4000"));
        assert_eq!(get("ALL_PROXY"), format!("socks5h://{creds}127.0.0.1:4001"));
        assert_eq!(get("RSYNC_PROXY"), format!("{creds}127.0.0.1:4000"));
        assert_eq!(get("CLOUDSDK_PROXY_ADDRESS"), "127.0.0.1");
        assert_eq!(get("CLOUDSDK_PROXY_USERNAME"), "egress");
        assert_eq!(get("CLOUDSDK_PROXY_PASSWORD"), session.token());
        let everything = Extras {
            session: Some(&session),
            ca_bundle: Some("/tmp/egress-proxy-ca-1/ca-bundle.pem"),
            ..Extras::default()
        };
        let env = child_env(http, None, everything);
        assert!(env
            .iter()
            .any(|(n, v)| *n == "ftp_proxy" && *v == format!("http://{creds}127.0.0.1:4000")));
        for name in [
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
            "PIP_CERT",
        ] {
            assert!(env
                .iter()
                .any(|(n, v)| *n == name && v == "/tmp/egress-proxy-ca-1/ca-bundle.pem"));
        }
        assert_eq!(env.len(), CHILD_ENV.len());
        let mut names: Vec<_> = CHILD_ENV.iter().map(|(n, _)| n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CHILD_ENV.len(), "a variable is listed twice");
    }
}
