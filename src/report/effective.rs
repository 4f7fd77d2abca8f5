//! The effective policy as `validate` and `/config` show it: its JSON document, the upstream
//! lines, the inspection state and every warning.

use serde::Serialize;

use crate::config::{Chosen, Config, ResolveAt, UpstreamConfig};
use crate::policy::{Policy, UnixAction};

#[derive(Serialize)]
pub(crate) struct JsonRule<'a> {
    pattern: &'a str,
    action: &'static str,
    origin: String,
    managed: bool,
}

#[derive(Serialize)]
struct JsonUnix {
    path: String,
    action: UnixAction,
    origin: String,
}

#[derive(Serialize)]
struct JsonPolicy<'a> {
    enabled: bool,
    mode: &'static str,
    proxy_url: String,
    socks_url: String,
    admin_url: String,
    enable_socks5: bool,
    enable_socks5_udp: bool,
    allow_local_binding: bool,
    allow_upstream_proxy: bool,
    /// As written (an IPv6 spelling of IPv4 addresses is not rewritten).
    public_ranges: Vec<String>,
    dangerously_allow_non_loopback_proxy: bool,
    dangerously_allow_non_loopback_admin: bool,
    dangerously_allow_all_unix_sockets: bool,
    dns_servers: Vec<String>,
    dns_timeout_ms: u128,
    dns_multi_answer: &'static str,
    upstream: JsonUpstream,
    run: JsonRun,
    rules: Vec<JsonRule<'a>>,
    unix_sockets: Vec<JsonUnix>,
    mitm: JsonMitm<'a>,
    http_rules: Vec<JsonHttpRule<'a>>,
    warnings: Vec<String>,
}

/// `mitm` / `[mitm]`: whether tunnels can be intercepted, where, and with which CA.
#[derive(Serialize)]
struct JsonMitm<'a> {
    enabled: bool,
    /// `null` for every host.
    domains: Option<Vec<&'a str>>,
    /// `generated`, or `files`.
    ca: &'static str,
    ca_cert: Option<String>,
    ca_key: Option<String>,
    upstream_ca: Option<String>,
}

#[derive(Serialize)]
struct JsonHttpRule<'a> {
    host: &'a str,
    methods: &'a [String],
    paths: &'a [String],
    action: &'static str,
    origin: String,
}

fn mitm_json(config: &Config) -> JsonMitm<'_> {
    let m = &config.mitm;
    let shown = |p: &std::path::Path| p.display().to_string();
    JsonMitm {
        enabled: m.enabled,
        domains: m
            .domains
            .as_ref()
            .map(|d| d.iter().map(|(p, _)| p.as_str()).collect()),
        ca: if m.ca.is_some() { "files" } else { "generated" },
        ca_cert: m.ca.as_ref().map(|ca| shown(&ca.cert)),
        ca_key: m.ca.as_ref().map(|ca| shown(&ca.key)),
        upstream_ca: m.upstream_ca.as_deref().map(shown),
    }
}

/// What `validate` says about HTTPS inspection, when it is on: where, and with which CA.
pub fn mitm_line(config: &Config) -> Option<String> {
    let m = &config.mitm;
    if !m.enabled {
        return None;
    }
    let scope = match &m.domains {
        None => "every host".to_string(),
        Some(domains) => domains
            .iter()
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let ca = match &m.ca {
        None => "generated CA".to_string(),
        Some(ca) => format!("CA {} + {}", ca.cert.display(), ca.key.display()),
    };
    let upstream = match &m.upstream_ca {
        None => String::new(),
        Some(path) => format!(", upstream_ca {}", path.display()),
    };
    Some(format!("mitm: on for {scope}; {ca}{upstream}"))
}

/// The http rules as `validate` lists them: action, host, methods (`*` for all), paths.
pub fn http_rule_lines(policy: &Policy) -> Vec<String> {
    policy
        .http_rules()
        .iter()
        .map(|r| {
            let list = |items: &[String], all: &str| {
                if items.is_empty() {
                    all.to_string()
                } else {
                    items.join(",")
                }
            };
            format!(
                "  {:<5}  {}  {}  {}  {}",
                r.action.as_str(),
                r.host,
                list(&r.methods, "*"),
                list(&r.paths, "/"),
                r.origin
            )
        })
        .collect()
}

/// `[run]`: what `run` does with the command.
#[derive(Serialize)]
struct JsonRun {
    isolate: bool,
}

#[derive(Serialize)]
struct JsonChosen {
    /// Without the password.
    url: String,
    from: String,
}

#[derive(Serialize)]
struct JsonUpstream {
    tunnel: Option<JsonChosen>,
    forward: Option<JsonChosen>,
    no_proxy: Vec<String>,
    resolve: &'static str,
    ca_file: Option<String>,
    off: Option<String>,
}

fn upstream_json(u: &UpstreamConfig) -> JsonUpstream {
    let chosen = |c: &Option<Chosen>| {
        c.as_ref().map(|c| JsonChosen {
            url: c.url.to_string(),
            from: c.from.clone(),
        })
    };
    JsonUpstream {
        tunnel: chosen(&u.tunnel),
        forward: chosen(&u.forward),
        no_proxy: u.no_proxy.entries().to_vec(),
        resolve: u.resolve.as_str(),
        ca_file: u.ca_file.as_ref().map(|p| p.display().to_string()),
        off: u.off.clone(),
    }
}

/// What `validate` says about the upstream: which applies to what, and where names are
/// resolved. Never a password.
pub fn upstream_lines(u: &UpstreamConfig) -> Vec<String> {
    if !u.is_active() {
        let why = u.off.as_ref().map_or_else(
            || "none (no `[upstream] url`, HTTPS_PROXY, HTTP_PROXY or ALL_PROXY)".to_string(),
            |off| format!("off ({off})"),
        );
        return vec![format!("upstream: {why}; every connection is direct")];
    }
    let via = |c: &Option<Chosen>| {
        c.as_ref().map_or("direct".to_string(), |c| {
            format!("via {} ({})", c.url, c.from)
        })
    };
    let mut lines = vec![
        format!("upstream: tunnels (CONNECT, SOCKS5 CONNECT) {}", via(&u.tunnel)),
        format!("upstream: plain HTTP {}", via(&u.forward)),
        match u.resolve {
            ResolveAt::Local => "upstream: names are resolved and checked here, then sent to the upstream by name (resolve = \"local\")".to_string(),
            ResolveAt::Upstream => "upstream: names are resolved by the upstream, not here; IP addresses are still checked here (resolve = \"upstream\")".to_string(),
        },
    ];
    let exceptions = if u.no_proxy.is_all() {
        "every destination (no_proxy = *)".to_string()
    } else {
        let mut list = vec!["localhost and loopback addresses".to_string()];
        list.extend(u.no_proxy.entries().iter().cloned());
        list.join(", ")
    };
    lines.push(format!(
        "upstream: direct for {exceptions}; SOCKS5 UDP is never chained"
    ));
    lines
}

/// The compiled rules as `validate --json`, `/config` and `/patterns` list them.
pub(crate) fn rules_json(policy: &Policy) -> Vec<JsonRule<'_>> {
    policy
        .rules()
        .iter()
        .map(|r| JsonRule {
            pattern: &r.pattern,
            action: r.action.as_str(),
            origin: r.origin.to_string(),
            managed: r.managed,
        })
        .collect()
}

/// The effective policy as `validate --json` prints it and `/config` serves it.
pub fn effective_json(config: &Config, policy: &Policy) -> String {
    let doc = JsonPolicy {
        enabled: config.enabled,
        // The running mode: `POST /mode` changes the policy, not the files.
        mode: policy.options().mode.as_str(),
        proxy_url: format!("http://{}", config.proxy_addr),
        socks_url: format!("socks5://{}", config.socks_addr),
        admin_url: format!("http://{}", config.admin_addr),
        enable_socks5: config.enable_socks5,
        enable_socks5_udp: config.enable_socks5_udp,
        allow_local_binding: config.allow_local_binding,
        allow_upstream_proxy: config.allow_upstream_proxy,
        public_ranges: config
            .public_ranges
            .declared()
            .iter()
            .map(|r| r.written().to_string())
            .collect(),
        dangerously_allow_non_loopback_proxy: config.dangerously_allow_non_loopback_proxy,
        dangerously_allow_non_loopback_admin: config.dangerously_allow_non_loopback_admin,
        dangerously_allow_all_unix_sockets: config.dangerously_allow_all_unix_sockets,
        dns_servers: config.dns.servers.iter().map(ToString::to_string).collect(),
        dns_timeout_ms: config.dns.timeout.as_millis(),
        dns_multi_answer: config.dns.multi_answer.as_str(),
        upstream: upstream_json(&config.upstream),
        run: JsonRun {
            isolate: config.run.isolate,
        },
        rules: rules_json(policy),
        unix_sockets: config
            .unix_sockets
            .iter()
            .map(|u| JsonUnix {
                path: u.path.display().to_string(),
                action: u.action,
                origin: u.origin.to_string(),
            })
            .collect(),
        mitm: mitm_json(config),
        http_rules: policy
            .http_rules()
            .iter()
            .map(|r| JsonHttpRule {
                host: &r.host,
                methods: &r.methods,
                paths: &r.paths,
                action: r.action.as_str(),
                origin: r.origin.to_string(),
            })
            .collect(),
        warnings: warnings(config, policy),
    };
    serde_json::to_string(&doc).expect("plain data serialises")
}

/// Every warning about the effective policy: the configuration's, the compiled rules', and
/// an admin token file others can read.
pub fn warnings(config: &Config, policy: &Policy) -> Vec<String> {
    let token = config
        .admin
        .token_file
        .as_deref()
        .and_then(crate::token::exposure_warning);
    config
        .warnings
        .iter()
        .chain(policy.warnings())
        .chain(policy.http_warnings())
        .cloned()
        .chain(token)
        .collect()
}
