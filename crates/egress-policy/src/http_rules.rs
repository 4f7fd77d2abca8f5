//! Request-level policy: `[[http_rules]]` (host, methods, paths) and the HTTPS-inspection scope
//! (`mitm`, `[mitm] domains`). Both only narrow what the domain rules allow: an http rule is
//! checked after the domain rules let a request's host through, so an allow here never opens
//! a host.
//!
//! Hosts are matched with the domain rules' own matcher (one per rule, `[mitm] domains` as
//! one), so a pattern covers here exactly what it covers there. Paths are matched in normal
//! form ([`path`]); a host without http rules never pays for that.

mod path;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use path::PathError;
use path::{normalize, PathRule};

use crate::decision::{Decision, Reason};
use crate::host::Host;
use crate::matcher::{Matcher, RuleInfo, RuleRef};
use crate::pattern::{Pattern, PatternError, PatternKind};
use crate::spec::{Action, HttpRuleSpec, InspectionSpec, Mode, Origin};
use crate::target::Target;
use crate::PolicyError;

/// Hosts some patterns cover, matched like allow rules.
#[derive(Debug, Default)]
struct HostSet {
    matcher: Matcher,
    /// The first pattern inserted (an http rule's only one).
    first: Option<PatternKind>,
    port: Option<u16>,
}

impl HostSet {
    fn insert(&mut self, text: &str, origin: &Origin) -> Result<(), PolicyError> {
        let error = |error| PolicyError {
            origin: origin.clone(),
            pattern: text.to_string(),
            error,
        };
        let pattern = Pattern::parse(text, Action::Allow).map_err(error)?;
        let info = RuleInfo {
            pattern: pattern.to_string().into(),
            action: Action::Allow,
            origin: origin.clone(),
            managed: false,
        };
        self.matcher.insert(&pattern, info);
        if self.first.is_none() {
            self.port = pattern.port;
            self.first = Some(pattern.kind);
        }
        Ok(())
    }

    fn pattern(&self) -> &PatternKind {
        self.first.as_ref().unwrap_or(&PatternKind::Global)
    }

    fn contains(&self, target: &Target<'_>) -> bool {
        let m = match &target.host {
            Host::Ip(ip) => self.matcher.match_ip(ip.to_canonical(), target.port),
            Host::Name(name) => self.matcher.match_name(name, target.port),
        };
        m.allow.is_some()
    }
}

/// One compiled `[[http_rules]]` entry.
#[derive(Debug)]
struct HttpRule {
    host: HostSet,
    /// Upper case; empty for every method.
    methods: Box<[Box<str>]>,
    /// Empty for every path.
    paths: Box<[PathRule]>,
    info: RuleRef,
}

impl HttpRule {
    /// Methods are compared without case: an origin that takes `post` for `POST` must not let
    /// a deny rule be dodged by spelling.
    fn matches(&self, method: &str, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(path)))
    }
}

/// The request-level part of a policy generation.
#[derive(Debug, Default)]
pub(crate) struct HttpPolicy {
    mitm: bool,
    /// `[mitm] domains`; `None` puts every host in scope.
    scope: Option<HostSet>,
    rules: Vec<HttpRule>,
    specs: Vec<HttpRuleSpec>,
    warnings: Vec<String>,
}

/// Whether `method` is an HTTP method token (RFC 9110 section 5.6.2).
pub fn is_method_token(method: &str) -> bool {
    !method.is_empty()
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks one `paths` entry of an http rule the way the policy compiles it.
pub fn check_rule_path(path: &str) -> Result<(), PathError> {
    PathRule::parse(path).map(|_| ())
}

impl HttpPolicy {
    pub(crate) fn new(
        rules: &[HttpRuleSpec],
        inspection: &InspectionSpec,
        mode: Mode,
    ) -> Result<HttpPolicy, PolicyError> {
        let scope = match &inspection.domains {
            None => None,
            Some(domains) => {
                let mut set = HostSet::default();
                for (pattern, origin) in domains {
                    set.insert(pattern, origin)?;
                }
                Some(set)
            }
        };
        let compiled = rules.iter().map(compile_rule).collect::<Result<_, _>>()?;
        let mut policy = HttpPolicy {
            mitm: inspection.enabled,
            scope,
            rules: compiled,
            specs: rules.to_vec(),
            warnings: Vec::new(),
        };
        policy.warnings = policy.findings(mode);
        Ok(policy)
    }

    /// http rules HTTPS would not see, and `limited` mode without interception.
    fn findings(&self, mode: Mode) -> Vec<String> {
        let mut found = Vec::new();
        if mode == Mode::Limited && !self.mitm {
            found.push(
                "mode `limited` without mitm: every HTTPS tunnel (CONNECT, SOCKS5) is refused with mitm-required"
                    .to_string(),
            );
        }
        for rule in &self.rules {
            let why = if !self.mitm {
                "mitm is off"
            } else if !self.covers(&rule.host) {
                "its host is outside [mitm] domains"
            } else {
                continue;
            };
            found.push(format!(
                "http rule `{}` ({}): {why}, so HTTPS to it is not intercepted and the rule applies to plain HTTP only",
                rule.info.pattern, rule.info.origin
            ));
        }
        found
    }

    /// Whether interception's scope takes in the host a rule names, judged on the name the
    /// pattern is written around (`api.example.com` for `**.api.example.com`,
    /// `x.example.com` for `*.example.com`); `*`, globs and CIDRs count as covered.
    fn covers(&self, host: &HostSet) -> bool {
        let Some(scope) = &self.scope else {
            return true;
        };
        let sample = match host.pattern() {
            PatternKind::Exact(name) | PatternKind::ApexAndSubdomains(name) => name.clone(),
            PatternKind::Subdomains(name) => format!("x.{name}"),
            PatternKind::Ip(ip) => ip.to_string(),
            PatternKind::Global | PatternKind::Glob(_) | PatternKind::Cidr(_) => return true,
        };
        let port = host.port.unwrap_or(443);
        Target::parse_authority(&sample, Some(port)).is_ok_and(|t| scope.contains(&t))
    }

    pub(crate) fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub(crate) fn specs(&self) -> &[HttpRuleSpec] {
        &self.specs
    }

    pub(crate) fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Interception is on and `target` is in its scope.
    pub(crate) fn interceptable(&self, target: &Target<'_>) -> bool {
        self.mitm && self.scope.as_ref().is_none_or(|s| s.contains(target))
    }

    /// Interception is on and an explicit `[mitm] domains` pattern names `target`.
    pub(crate) fn named_in_scope(&self, target: &Target<'_>) -> bool {
        self.mitm && self.scope.as_ref().is_some_and(|s| s.contains(target))
    }

    /// Some http rule names the host.
    pub(crate) fn names(&self, target: &Target<'_>) -> bool {
        self.rules.iter().any(|r| r.host.contains(target))
    }

    /// The http rules' verdict on one request: deny beats allow, and a host some allow rule
    /// names gets only what an allow rule matches. `None` lets it go.
    pub(crate) fn check(&self, target: &Target<'_>, method: &str, path: &str) -> Option<Decision> {
        if self.rules.is_empty() {
            return None;
        }
        let mut named = self
            .rules
            .iter()
            .filter(|r| r.host.contains(target))
            .peekable();
        named.peek()?;
        let Ok(path) = normalize(path) else {
            return Some(Decision::block(Reason::InvalidRequest, None));
        };
        let mut allow_named = false;
        let mut allowed = false;
        for rule in named {
            let hit = rule.matches(method, &path);
            match rule.info.action {
                Action::Deny if hit => {
                    return Some(Decision::block(Reason::DenyRule, Some(rule.info.clone())))
                }
                Action::Deny => {}
                Action::Allow => {
                    allow_named = true;
                    allowed |= hit;
                }
            }
        }
        (allow_named && !allowed).then(|| Decision::block(Reason::NotAllowed, None))
    }
}

fn compile_rule(spec: &HttpRuleSpec) -> Result<HttpRule, PolicyError> {
    let error = |pattern: &str, error| PolicyError {
        origin: spec.origin.clone(),
        pattern: pattern.to_string(),
        error,
    };
    let mut host = HostSet::default();
    host.insert(&spec.host, &spec.origin)?;
    let methods = spec
        .methods
        .iter()
        .map(|m| {
            if is_method_token(m) {
                Ok(m.to_ascii_uppercase().into_boxed_str())
            } else {
                Err(error(m, PatternError::HttpMethod))
            }
        })
        .collect::<Result<_, _>>()?;
    let paths: Box<[PathRule]> = spec
        .paths
        .iter()
        .map(|p| PathRule::parse(p).map_err(|e| error(p, PatternError::HttpPath(e))))
        .collect::<Result<_, _>>()?;
    let host_text = host.matcher.rules()[0].pattern.clone();
    let info = RuleInfo {
        pattern: describe(&host_text, &spec.methods, &paths).into(),
        action: spec.action,
        origin: spec.origin.clone(),
        managed: false,
    };
    Ok(HttpRule {
        host,
        methods,
        paths,
        info: Arc::new(info),
    })
}

/// How a decision names an http rule: `api.example.com POST /repos/*/issues` (`*` for every
/// method, nothing for every path).
fn describe(host: &str, methods: &[String], paths: &[PathRule]) -> String {
    let methods = if methods.is_empty() {
        "*".to_string()
    } else {
        methods
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut text = format!("{host} {methods}");
    if !paths.is_empty() {
        let paths: Vec<String> = paths.iter().map(ToString::to_string).collect();
        text.push(' ');
        text.push_str(&paths.join(","));
    }
    text
}
