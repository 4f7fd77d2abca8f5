//! Per-session proxy credentials: a random token that `run` puts in its child's proxy URLs
//! (`http://egress:TOKEN@127.0.0.1:PORT`, `socks5h://egress:TOKEN@…`), so the listeners of one
//! run serve that child and refuse every other local user, who can reach loopback too.
//!
//! The HTTP listener checks `Proxy-Authorization: Basic` on every request, the SOCKS5
//! listener the RFC 1929 sub-negotiation; both compare in constant time, and both before any
//! policy decision or DNS lookup. The token is never logged or shown in `Debug` output.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use hyper::header::{HeaderMap, PROXY_AUTHORIZATION};

use crate::token;

/// The user name of the credentials. Fixed: only the password is secret, and a fixed name
/// lets a client that can only take a password (`--proxy-user :TOKEN` forms) still work.
pub const USER: &str = "egress";

/// Random bytes in a token: 128 bits, written as 32 lower-case hex digits (URL-safe, so it
/// goes into a proxy URL without percent-encoding).
const TOKEN_BYTES: usize = 16;

/// `egress:` and the hex token, the longest credentials we ever accept.
const CREDENTIALS_LEN: usize = USER.len() + 1 + 2 * TOKEN_BYTES;

/// Why an embedder's token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionTokenError {
    /// The random source failed.
    #[error("cannot generate the session token: {0}")]
    Random(#[from] io::Error),
    /// A given token is not `2 * 16` lower-case hex digits.
    #[error("a session token is 32 lower-case hex digits")]
    Malformed,
}

/// The credentials one proxy accepts: user [`USER`], password the token.
#[derive(Clone)]
pub struct SessionToken {
    /// `egress:<token>`: what a `Basic` header and an RFC 1929 request must carry.
    credentials: Arc<str>,
    /// Set when the first client without the credentials was refused (warned once).
    warned: Arc<AtomicBool>,
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

impl SessionToken {
    /// A fresh token from the kernel's random source.
    pub fn generate() -> Result<SessionToken, SessionTokenError> {
        let bytes = token::random_bytes::<TOKEN_BYTES>()?;
        Ok(Self::from_hex(&token::hex(&bytes)))
    }

    /// A token chosen by the embedder (for example one shared with a client it configures):
    /// 32 lower-case hex digits, as [`SessionToken::token`] returns them.
    pub fn parse(token: &str) -> Result<SessionToken, SessionTokenError> {
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if token.len() != 2 * TOKEN_BYTES || !token.bytes().all(hex) {
            return Err(SessionTokenError::Malformed);
        }
        Ok(Self::from_hex(token))
    }

    fn from_hex(token: &str) -> SessionToken {
        SessionToken {
            credentials: Arc::from(format!("{USER}:{token}")),
            warned: Arc::default(),
        }
    }

    /// The password, for the child's proxy URLs.
    pub fn token(&self) -> &str {
        &self.credentials[USER.len() + 1..]
    }

    /// Whether a request carries the credentials: exactly one `Proxy-Authorization` header,
    /// scheme `Basic` (any case), its base64 decoding `egress:<token>`. A second header is a
    /// refusal, not a second chance.
    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(PROXY_AUTHORIZATION).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => self.basic(value.as_bytes()),
            _ => false,
        }
    }

    /// `Basic <base64>` against the credentials, decoded on the stack.
    fn basic(&self, value: &[u8]) -> bool {
        let Some((scheme, encoded)) = split_scheme(value) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"basic") {
            return false;
        }
        // Longer than our credentials can encode to: refused without decoding.
        if encoded.len() > CREDENTIALS_LEN.div_ceil(3) * 4 {
            return false;
        }
        let mut decoded = [0u8; CREDENTIALS_LEN + 3];
        let engine = base64::engine::general_purpose::STANDARD;
        match engine.decode_slice(encoded, &mut decoded) {
            Ok(len) => token::matches(&self.credentials, &decoded[..len]),
            Err(_) => false,
        }
    }

    /// Whether an RFC 1929 request's user name and password are the credentials. Both are
    /// compared whatever the first one holds, so the time does not tell which was wrong.
    pub fn accepts(&self, user: &[u8], password: &[u8]) -> bool {
        let user_ok = token::matches(USER, user);
        let password_ok = token::matches(self.token(), password);
        user_ok & password_ok
    }

    /// True the first time it is called: the one refusal worth a warning (it is how a user
    /// learns their client cannot send proxy credentials), for all listeners sharing the
    /// token. Later ones are debug lines.
    pub fn first_refusal(&self) -> bool {
        !self.warned.swap(true, Ordering::Relaxed)
    }
}

/// `scheme SP credentials` of an authorization header value, surrounding blanks trimmed.
fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let value = value.trim_ascii();
    let space = value.iter().position(|&b| b == b' ' || b == b'\t')?;
    let (scheme, rest) = value.split_at(space);
    Some((scheme, rest.trim_ascii()))
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn basic(credentials: &str) -> String {
        let engine = base64::engine::general_purpose::STANDARD;
        format!("Basic {}", engine.encode(credentials))
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(PROXY_AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn generated_tokens_are_fresh_hex_and_never_shown() {
        let a = SessionToken::generate().unwrap();
        let b = SessionToken::generate().unwrap();
        assert_ne!(a.token(), b.token());
        assert_eq!(a.token().len(), 32);
        assert!(SessionToken::parse(a.token()).is_ok());
        assert!(!format!("{a:?}").contains(a.token()));
    }

    #[test]
    fn only_well_formed_tokens_are_taken() {
        assert_eq!(SessionToken::parse(TOKEN).unwrap().token(), TOKEN);
        for bad in [
            "",
            "0123",
            &TOKEN.to_uppercase(),
            &format!("{TOKEN}0"),
            "g".repeat(32).as_str(),
        ] {
            assert!(SessionToken::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn basic_header_table() {
        let session = SessionToken::parse(TOKEN).unwrap();
        let upper = TOKEN.to_uppercase();
        let good = basic(&format!("egress:{TOKEN}"));
        let cases: Vec<(String, bool)> = vec![
            (good.clone(), true),
            (format!("basic {}", &good[6..]), true),
            (format!("  BASIC   {}  ", &good[6..]), true),
            (basic(&format!("egress:{upper}")), false),
            (basic(&format!("egress:{}", &TOKEN[..31])), false),
            (basic(&format!("egress:{TOKEN}x")), false),
            (basic("egress:"), false),
            (basic(&format!("Egress:{TOKEN}")), false),
            (basic(&format!("other:{TOKEN}")), false),
            (basic(&format!(":{TOKEN}")), false),
            (basic(TOKEN), false),
            (format!("Bearer {TOKEN}"), false),
            (format!("Basic{}", &good[6..]), false),
            ("Basic".into(), false),
            ("Basic !!!!".into(), false),
            (format!("Basic {}", "QUFB".repeat(1000)), false),
            (format!("Basic {}", &good[6..good.len() - 2]), false),
        ];
        for (value, want) in cases {
            assert_eq!(session.authorizes(&headers(&[&value])), want, "{value:?}");
        }
        assert!(!session.authorizes(&HeaderMap::new()));
        assert!(!session.authorizes(&headers(&[&good, &good])));
        assert!(!session.authorizes(&headers(&["Basic eA==", &good])));
    }

    #[test]
    fn rfc1929_pairs() {
        let session = SessionToken::parse(TOKEN).unwrap();
        assert!(session.accepts(b"egress", TOKEN.as_bytes()));
        assert!(!session.accepts(b"egress", TOKEN.to_uppercase().as_bytes()));
        assert!(!session.accepts(b"egress", &TOKEN.as_bytes()[..16]));
        assert!(!session.accepts(b"egress", b""));
        assert!(!session.accepts(b"", TOKEN.as_bytes()));
        assert!(!session.accepts(b"root", TOKEN.as_bytes()));
        assert!(!session.accepts(b"egress\0", TOKEN.as_bytes()));
    }

    #[test]
    fn the_first_refusal_is_told_once_per_token_and_its_clones() {
        let session = SessionToken::parse(TOKEN).unwrap();
        let clone = session.clone();
        assert!(session.first_refusal());
        assert!(!clone.first_refusal());
        assert!(SessionToken::parse(TOKEN).unwrap().first_refusal());
    }
}
