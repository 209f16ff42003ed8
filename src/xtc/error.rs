//! Errors of the XTC2 layer: every one names the file (when known) and the byte offset.

use std::fmt;
use std::path::{Path, PathBuf};

/// A malformed structure at a byte offset inside a buffer or file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    /// Absolute byte offset in the file (or buffer) of the offending structure.
    pub offset: u64,
    /// What was wrong.
    pub what: String,
}

impl FormatError {
    /// A new error at `offset`.
    pub fn new(offset: u64, what: impl Into<String>) -> Self {
        Self {
            offset,
            what: what.into(),
        }
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte {}: {}", self.offset, self.what)
    }
}

impl std::error::Error for FormatError {}

/// An error reading XTC2 data from a file.
#[derive(Debug, thiserror::Error)]
pub enum XtcError {
    /// The operating system failed a read or open.
    #[error("{}: I/O error at byte {offset}: {source}", path.display())]
    Io {
        path: PathBuf,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    /// The bytes do not follow the XTC2 layout.
    #[error("{}: {err}", path.display())]
    Format { path: PathBuf, err: FormatError },
    /// A run or file set could not be assembled (missing files, bad names).
    #[error("{0}")]
    Layout(String),
}

impl XtcError {
    /// Wraps an I/O error with the file and offset it happened at.
    pub fn io(path: &Path, offset: u64, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            offset,
            source,
        }
    }

    /// Wraps a format error with the file it was found in.
    pub fn format(path: &Path, err: FormatError) -> Self {
        Self::Format {
            path: path.to_path_buf(),
            err,
        }
    }
}

/// Result type of buffer-level parsing.
pub type FormatResult<T> = Result<T, FormatError>;
