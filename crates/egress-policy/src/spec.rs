//! The inputs the policy is compiled from, independent of where they were written.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// What a domain rule does with a matching destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let the destination through (subject to the IP checks).
    Allow,
    /// Block the destination, whatever any allow rule says.
    Deny,
}

impl Action {
    /// As written in files and shown in `check` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// `full` lets every method and tunnel through the domain policy; `limited` only lets
/// GET, HEAD and OPTIONS over plain HTTP, so a sandbox can read but not upload or tunnel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every method and tunnel the domain policy allows.
    #[default]
    Full,
    /// Reads only: GET, HEAD and OPTIONS without a body, over plain HTTP.
    Limited,
}

impl Mode {
    /// As written in files and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Limited => "limited",
        }
    }
}

/// Where a rule was written, so every error and every decision can point back at it.
///
/// Non-exhaustive: new rule sources (an environment variable, the admin API) are expected,
/// and callers mostly display an origin rather than take it apart.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// A position in a config file (1-based line and column of the rule's key or value).
    File {
        /// The file as it was named when loaded.
        path: Arc<str>,
        /// 1-based line.
        line: u32,
        /// 1-based column.
        col: u32,
    },
    /// A command-line flag such as `--allow`.
    Flag(&'static str),
    /// Built through the library API.
    Api,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line, col } => write!(f, "{path}:{line}:{col}"),
            Origin::Flag(flag) => f.write_str(flag),
            Origin::Api => f.write_str("<api>"),
        }
    }
}

/// One domain rule as written: the pattern text is validated when the policy is compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    /// The pattern text as written.
    pub pattern: String,
    /// What the rule does with a match.
    pub action: Action,
    /// Where it was written.
    pub origin: Origin,
    /// Set by `requirements.toml`: administrator rules that user layers cannot override.
    pub managed: bool,
}

/// What the effective Unix-socket map says about a path (`none` entries are removed while
/// layering, so they never reach the policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnixAction {
    /// The socket at this path may be connected to.
    Allow,
    /// The socket at this path, under any name, may not be connected to.
    Deny,
}

impl UnixAction {
    /// As written in files.
    pub fn as_str(self) -> &'static str {
        match self {
            UnixAction::Allow => "allow",
            UnixAction::Deny => "deny",
        }
    }
}

/// One effective Unix-socket entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnixSocketSpec {
    /// The socket's path as written (absolute).
    pub path: PathBuf,
    /// Whether the socket may be reached.
    pub action: UnixAction,
    /// Where the entry was written.
    pub origin: Origin,
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`): a message that quotes what a
/// file or flag says stays one line, and cannot forge log lines.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.contains(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// How the proxy treats a name whose answers mix public and non-public addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MultiAnswer {
    /// Any non-public answer blocks the whole name (rebinding-safe).
    #[default]
    BlockIfAnyNonPublic,
    /// Non-public answers are dropped; the name is allowed if a public one remains.
    UsePublicOnly,
}

impl MultiAnswer {
    /// As written in files.
    pub fn as_str(self) -> &'static str {
        match self {
            MultiAnswer::BlockIfAnyNonPublic => "block-if-any-non-public",
            MultiAnswer::UsePublicOnly => "use-public-only",
        }
    }
}

/// One `[[http_rules]]` entry as written: what it does with requests to `host` whose method
/// and path match. Empty `methods` or `paths` match every method or path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRuleSpec {
    /// A host pattern, in the syntax of the domain rules.
    pub host: String,
    /// HTTP method tokens.
    pub methods: Vec<String>,
    /// Path prefixes (whole segments; `*` is one segment).
    pub paths: Vec<String>,
    /// Allow (only what some allow rule matches may go) or deny.
    pub action: Action,
    /// Where it was written.
    pub origin: Origin,
}

/// Which tunnels HTTPS inspection may open: `mitm` and `[mitm] domains`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InspectionSpec {
    /// Interception is configured.
    pub enabled: bool,
    /// The hosts it applies to, with where each pattern was written; `None` for every host.
    pub domains: Option<Vec<(String, Origin)>>,
}
