//! What can stop a crate from being read.

use std::fmt;
use std::path::PathBuf;

/// A crate, or the workspace, could not be read.
#[derive(Debug)]
pub enum Error {
    /// A file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A `mod name;` whose file is in none of the places rustc would look.
    ModuleNotFound {
        /// The module's name.
        module: String,
        /// The file that declares it.
        declared_in: PathBuf,
        /// The declaration's line.
        line: u32,
        /// The places looked at.
        tried: Vec<PathBuf>,
    },
    /// A crate directory without `src/lib.rs` or `src/main.rs`.
    NoRoot {
        /// The directory.
        dir: PathBuf,
    },
    /// No workspace `Cargo.toml` above the current directory.
    NoWorkspace,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Error::ModuleNotFound {
                module,
                declared_in,
                line,
                tried,
            } => {
                write!(
                    f,
                    "{}:{line}: no file for module `{module}` (looked at",
                    declared_in.display()
                )?;
                for path in tried {
                    write!(f, " {}", path.display())?;
                }
                write!(f, ")")
            }
            Error::NoRoot { dir } => {
                write!(f, "{}: neither src/lib.rs nor src/main.rs", dir.display())
            }
            Error::NoWorkspace => write!(
                f,
                "no Cargo.toml with a [workspace] section here or in any parent directory"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}
