//! Which log lines are written: the command's default, or `RUST_LOG`.
//!
//! `RUST_LOG` is read as `target=level` directives, comma-separated, with an optional bare
//! level (tracing-subscriber's `Targets`): what anyone sets it to for a proxy. The span and
//! field filters of `EnvFilter` are not supported: they pulled a regex engine into the binary,
//! and without it `.text` went from 7.56 to 7.12 MB and the peak RSS under
//! `integration/profile.py`'s loads from 9.40 to 8.96 MiB (cold page cache for both). A value
//! that names only targets keeps the command's default level for the rest, so
//! `RUST_LOG=egress_proxy::decision=debug` adds the allowed decisions without silencing every
//! warning.

use tracing_subscriber::filter::Targets;

/// The filter for `rust_log` (the variable's value, if set) over `default` (a valid
/// directive list). A value that cannot be parsed is reported and the default used.
pub fn build(rust_log: Option<&str>, default: &str) -> Targets {
    let fallback: Targets = default.parse().unwrap_or_default();
    let Some(value) = rust_log.filter(|value| !value.trim().is_empty()) else {
        return fallback;
    };
    match value.parse::<Targets>() {
        Ok(targets) if targets.default_level().is_some() => targets,
        Ok(targets) => match fallback.default_level() {
            Some(level) => targets.with_default(level),
            None => targets,
        },
        Err(error) => {
            eprintln!(
                "warning: RUST_LOG={value:?} is not a list of `target=level` directives \
                 ({error}); logging with {default:?}"
            );
            fallback
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::super::run::DEFAULT_LOG_FILTER as RUN;
    use super::*;

    #[test]
    fn rust_log_over_the_default() {
        let decision = "egress_proxy::decision";
        let other = "egress_proxy::net::relay";
        // (RUST_LOG, default, target, level, written)
        let cases = [
            (None, "info", other, Level::INFO, true),
            (None, "info", other, Level::DEBUG, false),
            (None, RUN, decision, Level::WARN, false),
            (None, RUN, other, Level::WARN, true),
            (None, RUN, other, Level::INFO, false),
            (Some(""), RUN, other, Level::WARN, true),
            (Some("  "), "info", other, Level::INFO, true),
            (Some("debug"), "info", other, Level::DEBUG, true),
            (Some("debug"), RUN, decision, Level::DEBUG, true),
            (Some("off"), "info", other, Level::ERROR, false),
            // Only a target named: the rest keeps the default level.
            (
                Some("egress_proxy::decision=debug"),
                "info",
                decision,
                Level::DEBUG,
                true,
            ),
            (
                Some("egress_proxy::decision=debug"),
                "info",
                other,
                Level::INFO,
                true,
            ),
            (
                Some("egress_proxy::decision=debug"),
                "info",
                other,
                Level::DEBUG,
                false,
            ),
            (
                Some("egress_proxy::decision=debug"),
                RUN,
                other,
                Level::WARN,
                true,
            ),
            (
                Some("egress_proxy::decision=debug"),
                RUN,
                other,
                Level::INFO,
                false,
            ),
            // A prefix covers the modules under it; the longest match wins.
            (
                Some("egress_proxy=trace,egress_proxy::net=error"),
                "info",
                other,
                Level::WARN,
                false,
            ),
            (
                Some("egress_proxy=trace,egress_proxy::net=error"),
                "info",
                decision,
                Level::TRACE,
                true,
            ),
            (
                Some("warn,hyper=off"),
                "info",
                "hyper::proto",
                Level::ERROR,
                false,
            ),
            // Not understood: the default, whole.
            (Some("egress_proxy=loud"), "info", other, Level::INFO, true),
            (
                Some("egress_proxy=loud"),
                "info",
                other,
                Level::DEBUG,
                false,
            ),
            (Some("[span{id=1}]=debug"), RUN, other, Level::WARN, true),
            (
                Some("[span{id=1}]=debug"),
                RUN,
                decision,
                Level::WARN,
                false,
            ),
        ];
        for (rust_log, default, target, level, written) in cases {
            let filter = build(rust_log, default);
            assert_eq!(
                filter.would_enable(target, &level),
                written,
                "RUST_LOG={rust_log:?} over {default:?}: {target} at {level}"
            );
        }
    }
}
