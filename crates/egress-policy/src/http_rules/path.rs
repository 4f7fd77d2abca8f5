//! Request paths by identity, not spelling: `/repos/x/y/../y/%69ssues` and `//repos/x/y/issues`
//! are `/repos/x/y/issues`, so a rule cannot be dodged by respelling a path the origin reads as
//! the same. What stays ambiguous (origins disagree on an encoded `/`, a `\`, a `;` parameter,
//! NUL, a `%25` that a second decoding turns into an escape) is refused, never guessed.

use std::borrow::Cow;
use std::fmt::{self, Write};

/// Why a path cannot be matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// It does not start with `/`.
    #[error("a path begins with `/`")]
    NotAbsolute,
    /// `%` not followed by two hex digits.
    #[error("`%` must be followed by two hex digits")]
    BadEscape,
    /// An encoded `/`, `\`, `;`, `%` or control, a `\` or `;`, a raw control or non-ASCII byte: origins
    /// split or decode these differently.
    #[error("an encoded `/`, `\\`, `;` or `%`, a `\\`, `;`, NUL or a non-ASCII byte makes the path ambiguous")]
    Ambiguous,
    /// A rule's `*` that is not a whole segment.
    #[error("`*` matches one whole segment (`/repos/*/issues`), not part of one")]
    PartialWildcard,
}

/// A path in its normal form: percent-escapes of unreserved characters decoded, other escapes
/// in upper case, dot segments removed, repeated and trailing `/` collapsed. `/` for the root.
/// Borrowed when the input already is normal, which real clients' paths almost always are.
pub(crate) fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let mut plain = true;
    for b in path.bytes() {
        match b {
            b'\\' | b';' => return Err(PathError::Ambiguous),
            b'%' => plain = false,
            0..=0x20 | 0x7f.. => return Err(PathError::Ambiguous),
            _ => {}
        }
    }
    if plain && is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path)?;
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    if out.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    let mut normal = String::with_capacity(decoded.len());
    for s in out {
        normal.push('/');
        normal.push_str(s);
    }
    Ok(Cow::Owned(normal))
}

/// No empty, `.` or `..` segment and no trailing `/` (the root aside).
fn is_normal(path: &str) -> bool {
    path == "/" || path[1..].split('/').all(|s| !matches!(s, "" | "." | ".."))
}

/// Decodes the escapes of unreserved characters and upper-cases the others.
fn decode(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(char::from(bytes[i]));
            i += 1;
            continue;
        }
        let hex = |j: usize| bytes.get(j).and_then(|b| char::from(*b).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return Err(PathError::BadEscape);
        };
        let b = u8::try_from(hi * 16 + lo).expect("two hex digits");
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            b'/' | b'\\' | b';' | b'%' | 0..=0x1f | 0x7f => return Err(PathError::Ambiguous),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
        i += 3;
    }
    Ok(out)
}

/// One segment of a rule's path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// `*`: exactly one segment, whatever it says.
    Any,
    /// A segment in normal form, compared byte for byte (paths are case-sensitive).
    Literal(Box<str>),
}

/// A `paths` entry: it matches a request path that begins with its whole segments, so
/// `/repos` matches `/repos` and `/repos/a`, not `/reposx`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PathRule {
    segments: Box<[Segment]>,
}

impl PathRule {
    /// Parses a rule's path; it must be unambiguous itself.
    pub(crate) fn parse(text: &str) -> Result<PathRule, PathError> {
        if text.contains('?') {
            return Err(PathError::Ambiguous);
        }
        let normal = normalize(text)?;
        let segments = segments(&normal)
            .map(|s| match s {
                "*" => Ok(Segment::Any),
                s if s.contains('*') => Err(PathError::PartialWildcard),
                s => Ok(Segment::Literal(s.into())),
            })
            .collect::<Result<_, _>>()?;
        Ok(PathRule { segments })
    }

    /// Whether `normal` (a path from [`normalize`]) begins with this rule's segments.
    pub(crate) fn matches(&self, normal: &str) -> bool {
        let mut request = segments(normal);
        self.segments.iter().all(|rule| match request.next() {
            None => false,
            Some(s) => match rule {
                Segment::Any => true,
                Segment::Literal(l) => **l == *s,
            },
        })
    }
}

impl fmt::Display for PathRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for s in self.segments.iter() {
            match s {
                Segment::Any => f.write_str("/*")?,
                Segment::Literal(l) => write!(f, "/{l}")?,
            }
        }
        Ok(())
    }
}

/// The segments of a normal path (none for `/`).
fn segments(normal: &str) -> impl Iterator<Item = &str> {
    normal.split('/').filter(|s| !s.is_empty())
}
