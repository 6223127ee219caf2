//! The library's one error type. Each variant knows whether it is the user's to fix
//! (configuration, usage, an environment that does not allow starting: exit 2) or a
//! failure while running (exit 1). Only `main` prints errors and maps exit codes.

use crate::policy::yaml::FileErrors;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A policy or scenario file with problems, each with its position and field.
    #[error("{0}")]
    Files(#[from] FileErrors),
    /// A command-line value or setting that is not allowed: what, and what is allowed.
    #[error("{0}")]
    Config(String),
    /// The environment does not allow starting: Docker or a port unreachable, a file
    /// missing, no runtime.
    #[error("{0}")]
    Environment(String),
    /// A failure while running.
    #[error("{0}")]
    Runtime(String),
}

impl Error {
    /// 2 for what the user must fix before starting, 1 for a failure while running.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Files(_) | Error::Config(_) | Error::Environment(_) => 2,
            Error::Runtime(_) => 1,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
