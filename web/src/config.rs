//! Configuration layering both binaries use: built-in defaults, then a TOML file (the
//! one given, else a default path if it exists), then prefixed environment variables
//! (`PATRON_EDGE__SYNC__BATCH=500`: `__` separates nesting), each layer overriding the
//! one before. Flags are applied by the caller last.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The layered sources did not parse.
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A value is out of range.
    #[error("configuration: {0}")]
    Invalid(String),
}

/// `defaults`, then `file` (or `default_file` if it exists), then the environment
/// variables starting with `env_prefix`.
pub fn layered<T: Serialize + DeserializeOwned>(
    defaults: T,
    file: Option<&Path>,
    default_file: &Path,
    env_prefix: &str,
) -> Result<T, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(defaults));
    match file {
        Some(f) => fig = fig.merge(Toml::file_exact(f)),
        None if default_file.exists() => fig = fig.merge(Toml::file_exact(default_file)),
        None => {}
    }
    fig = fig.merge(Env::prefixed(env_prefix).split("__"));
    Ok(fig.extract().map_err(Box::new)?)
}
