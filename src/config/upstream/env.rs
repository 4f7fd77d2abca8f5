//! The proxy's own environment, read the way curl reads it: lower case before upper case, an
//! empty value as unset, `https_proxy` for tunnels, `http_proxy` for plain HTTP, `all_proxy`
//! as the fallback of both, `no_proxy` for the exceptions.
//!
//! One difference from curl: plain HTTP also reads `HTTP_PROXY` (after `http_proxy`), as Go's
//! `net/http` and Python's `urllib` do, because corporate setups often export only the upper
//! case names. curl skips it because of httpoxy: a CGI program gets a request's `Proxy:`
//! header as `HTTP_PROXY`. Like Go and Python, `HTTP_PROXY` is ignored when `REQUEST_METHOD`
//! is set, which is how a CGI environment shows itself.

use std::ffi::OsStr;
use std::fmt;

/// The variables read, in no particular order.
const NAMES: [&str; 9] = [
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "REQUEST_METHOD",
];

/// The proxy variables of an environment: what the CLI takes from its own at start, and what
/// tests pass as data. `Debug` lists the names only, never a value (they carry credentials).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    vars: Vec<(&'static str, String)>,
}

impl ProxyEnv {
    /// Keeps the proxy variables of `vars` (others, and values that are not UTF-8, are
    /// dropped).
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> ProxyEnv
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let vars = vars
            .into_iter()
            .filter_map(|(name, value)| {
                let name = NAMES.iter().find(|n| OsStr::new(n) == name.as_ref())?;
                Some((*name, value.as_ref().to_str()?.to_string()))
            })
            .collect();
        ProxyEnv { vars }
    }

    /// This process's proxy variables.
    pub fn from_process() -> ProxyEnv {
        ProxyEnv::from_vars(std::env::vars_os())
    }

    /// The first of `names` that is set and not empty, with its name.
    fn first(&self, names: &[&'static str]) -> Option<(&'static str, &str)> {
        names.iter().find_map(|name| {
            self.vars
                .iter()
                .find(|(n, v)| n == name && !v.is_empty())
                .map(|(n, v)| (*n, v.as_str()))
        })
    }

    /// The proxy for CONNECT tunnels and SOCKS5 CONNECT.
    pub(crate) fn tunnel(&self) -> Option<(&'static str, &str)> {
        self.first(&["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"])
    }

    /// The proxy for plain-HTTP requests.
    pub(crate) fn forward(&self) -> Option<(&'static str, &str)> {
        if self.first(&["REQUEST_METHOD"]).is_some() {
            self.first(&["http_proxy", "all_proxy", "ALL_PROXY"])
        } else {
            self.first(&["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"])
        }
    }

    /// The exceptions.
    pub(crate) fn no_proxy(&self) -> Option<(&'static str, &str)> {
        self.first(&["no_proxy", "NO_PROXY"])
    }
}

impl fmt::Debug for ProxyEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.vars.iter().map(|(name, _)| name))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (environment, tunnel variable, forward variable, no_proxy variable).
    #[test]
    fn precedence_follows_curl() {
        type Row = (
            &'static [(&'static str, &'static str)],
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
        );
        let rows: &[Row] = &[
            (&[], None, None, None),
            (
                &[("HTTPS_PROXY", "u"), ("https_proxy", "l")],
                Some("https_proxy"),
                None,
                None,
            ),
            (
                &[("HTTPS_PROXY", "u"), ("https_proxy", "")],
                Some("HTTPS_PROXY"),
                None,
                None,
            ),
            (
                &[("ALL_PROXY", "u"), ("all_proxy", "l")],
                Some("all_proxy"),
                Some("all_proxy"),
                None,
            ),
            (
                &[("ALL_PROXY", "a"), ("HTTPS_PROXY", "s")],
                Some("HTTPS_PROXY"),
                Some("ALL_PROXY"),
                None,
            ),
            (
                &[("http_proxy", "h"), ("HTTP_PROXY", "H")],
                None,
                Some("http_proxy"),
                None,
            ),
            (
                &[("HTTP_PROXY", "H"), ("all_proxy", "a")],
                Some("all_proxy"),
                Some("HTTP_PROXY"),
                None,
            ),
            (
                &[("HTTP_PROXY", "H"), ("REQUEST_METHOD", "GET")],
                None,
                None,
                None,
            ),
            (
                &[
                    ("HTTP_PROXY", "H"),
                    ("REQUEST_METHOD", "GET"),
                    ("ALL_PROXY", "a"),
                ],
                Some("ALL_PROXY"),
                Some("ALL_PROXY"),
                None,
            ),
            (
                &[("http_proxy", "h"), ("REQUEST_METHOD", "GET")],
                None,
                Some("http_proxy"),
                None,
            ),
            (
                &[("NO_PROXY", "u"), ("no_proxy", "l")],
                None,
                None,
                Some("no_proxy"),
            ),
            (
                &[("NO_PROXY", "u"), ("no_proxy", "")],
                None,
                None,
                Some("NO_PROXY"),
            ),
            (&[("Https_Proxy", "x"), ("PATH", "/bin")], None, None, None),
        ];
        for (vars, tunnel, forward, no_proxy) in rows {
            let env = ProxyEnv::from_vars(vars.iter().copied());
            let name = |got: Option<(&'static str, &str)>| got.map(|(n, _)| n);
            assert_eq!(name(env.tunnel()), *tunnel, "{vars:?}");
            assert_eq!(name(env.forward()), *forward, "{vars:?}");
            assert_eq!(name(env.no_proxy()), *no_proxy, "{vars:?}");
        }
    }

    #[test]
    fn debug_shows_names_not_values() {
        let env = ProxyEnv::from_vars([("HTTPS_PROXY", "http://u:hunter2@corp.test:1")]);
        assert_eq!(format!("{env:?}"), "[\"HTTPS_PROXY\"]");
        assert_eq!(
            env.tunnel(),
            Some(("HTTPS_PROXY", "http://u:hunter2@corp.test:1"))
        );
    }
}
