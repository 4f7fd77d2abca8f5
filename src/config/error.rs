//! Errors that point at the file, line and column that caused them.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use crate::policy::{escape_controls, Origin};

/// Why the configuration could not be loaded.
///
/// `Display` is always exactly one line, prefixed with `path:line:col:` whenever a position is
/// known, so `validate` output can be followed by editors and CI annotations.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why, from the operating system.
        reason: String,
    },
    /// A problem at a known position in a file.
    #[error("{path}:{line}:{col}: {message}")]
    At {
        /// The file (or the name a text in memory was given).
        path: Arc<str>,
        /// 1-based line.
        line: u32,
        /// 1-based column.
        col: u32,
        /// What is wrong there.
        message: String,
    },
    /// A problem without a single position (a flag, an unknown profile).
    #[error("{0}")]
    Invalid(String),
}

impl ConfigError {
    pub(super) fn read(path: &Path, err: &io::Error) -> Self {
        // io::Error's Display ends in " (os error N)", which says nothing to a user.
        let text = err.to_string();
        let reason = match text.rfind(" (os error ") {
            Some(cut) if text.ends_with(')') => text[..cut].to_string(),
            _ => text,
        };
        ConfigError::Read {
            path: path.display().to_string(),
            reason,
        }
    }

    /// An error about a value that came from `origin`: a file position when there is one,
    /// otherwise the flag's name leads the message.
    pub(super) fn at_origin(origin: &Origin, message: impl fmt::Display) -> Self {
        match origin {
            Origin::File { path, line, col } => ConfigError::At {
                path: Arc::clone(path),
                line: *line,
                col: *col,
                message: one_line(&message.to_string()),
            },
            other => ConfigError::Invalid(one_line(&format!("{other}: {message}"))),
        }
    }
}

/// One configuration file's name and text, kept so byte offsets become line and column.
pub(super) struct Source {
    pub(super) path: Arc<str>,
    pub(super) text: String,
    /// Byte offset of every line's start: every value of a file gets its origin, so a long
    /// domain list must not rescan the text for each one.
    line_starts: Vec<usize>,
}

impl Source {
    pub(super) fn new(path: &str, text: String) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Source {
            path: Arc::from(path),
            text,
            line_starts,
        }
    }

    /// Where the byte span starts, 1-based.
    pub(super) fn origin(&self, span: &Range<usize>) -> Origin {
        let (line, col) = self.line_col(span.start);
        Origin::File {
            path: Arc::clone(&self.path),
            line,
            col,
        }
    }

    pub(super) fn error(&self, span: &Range<usize>, message: impl fmt::Display) -> ConfigError {
        ConfigError::at_origin(&self.origin(span), message)
    }

    /// A TOML error, at its own span when it has one, else at `fallback`.
    pub(super) fn toml_error(&self, err: &toml::de::Error, fallback: &Range<usize>) -> ConfigError {
        let span = err.span().unwrap_or_else(|| fallback.clone());
        self.error(&span, err.message())
    }

    /// 1-based line and column (in characters) of a byte offset; offsets past the end or
    /// inside a character are clamped so a slightly-off span never panics.
    fn line_col(&self, offset: usize) -> (u32, u32) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        // The number of line starts at or before the offset is the 1-based line.
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = self.line_starts[line - 1];
        let col = self.text[line_start..offset].chars().count() + 1;
        (saturate(line), saturate(col))
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Errors are one line each, even when a library message spans several or quotes a value
/// with a control character in it (a lone `\r` survives `lines()`).
fn one_line(message: &str) -> String {
    let joined = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    escape_controls(&joined).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_offsets_become_one_based_line_and_column() {
        let src = Source::new("a.toml", "ab\ncdé = 1\r\nx".to_string());
        let cases = [
            (0, (1, 1)),
            (1, (1, 2)),
            (3, (2, 1)),
            // é is two bytes; the `=` after it is the 5th character.
            (8, (2, 5)),
            (6, (2, 3)), // inside é: clamped to its start
            (13, (3, 1)),
            (99, (3, 2)),
        ];
        for (offset, want) in cases {
            assert_eq!(src.line_col(offset), want, "offset {offset}");
        }
    }

    #[test]
    fn display_is_one_line_with_position() {
        let src = Source::new("dev.toml", "x = 1\ny = 2\n".to_string());
        let err = src.error(&(6..7), "first\n  second\n");
        assert_eq!(err.to_string(), "dev.toml:2:1: first; second");
        let flag = ConfigError::at_origin(&Origin::Flag("--allow"), "bad");
        assert_eq!(flag.to_string(), "--allow: bad");
        // Found by `fuzz/` (config): a lone carriage return survived `lines()`.
        let err = src.error(&(0..1), "unknown variant `a\rb`\u{1b}[2J");
        assert_eq!(
            err.to_string(),
            "dev.toml:1:1: unknown variant `a\\rb`\\u{1b}[2J"
        );
    }

    #[test]
    fn read_errors_name_the_file_without_os_error_codes() {
        let err = io::Error::from_raw_os_error(2);
        let got = ConfigError::read(Path::new("policy/x.toml"), &err);
        assert_eq!(
            got.to_string(),
            "cannot read policy/x.toml: No such file or directory"
        );
        let custom = io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        );
        assert_eq!(
            ConfigError::read(Path::new("b.toml"), &custom).to_string(),
            "cannot read b.toml: stream did not contain valid UTF-8"
        );
    }
}
