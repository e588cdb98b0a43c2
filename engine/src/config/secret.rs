//! Secret references: `{ env = "NAME" }` or `{ file = "path" }`, never a literal.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where a secret lives. The configuration names it; only [`SecretRef::resolve`]
/// ever reads it. A literal in the file is refused unless the file says
/// `allow_plaintext_secrets = true` (then it is accepted with a warning).
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env {
        env: String,
    },
    File {
        file: PathBuf,
    },
    /// Only with `allow_plaintext_secrets = true`.
    Plain(String),
}

thread_local! {
    /// Set by `Config::parse` for the file being parsed: serde gives a
    /// `Deserialize` impl no other way to see a setting of the same file.
    static ALLOW_PLAINTEXT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static PLAINTEXT_SEEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs `parse` with plaintext secrets allowed or not; returns its result
/// and how many plaintext secrets it accepted.
pub(crate) fn parsing_with<T>(allow_plaintext: bool, parse: impl FnOnce() -> T) -> (T, usize) {
    ALLOW_PLAINTEXT.with(|a| a.set(allow_plaintext));
    PLAINTEXT_SEEN.with(|n| n.set(0));
    let out = parse();
    ALLOW_PLAINTEXT.with(|a| a.set(false));
    (out, PLAINTEXT_SEEN.with(|n| n.replace(0)))
}

impl<'de> serde::Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Env { env: String },
            File { file: PathBuf },
            Plain(String),
        }
        let expecting = "a secret reference: { env = \"NAME\" } or { file = \"path\" } (plaintext secrets are not accepted; allow_plaintext_secrets = true at the top of the file accepts them, with a warning)";
        match Raw::deserialize(d).map_err(|_| serde::de::Error::custom(expecting))? {
            Raw::Env { env } => Ok(SecretRef::Env { env }),
            Raw::File { file } => Ok(SecretRef::File { file }),
            Raw::Plain(value) if ALLOW_PLAINTEXT.with(|a| a.get()) => {
                PLAINTEXT_SEEN.with(|n| n.set(n.get() + 1));
                Ok(SecretRef::Plain(value))
            }
            // The message never repeats the value.
            Raw::Plain(_) => Err(serde::de::Error::custom(expecting)),
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env { env } => write!(f, "{{ env = {env:?} }}"),
            SecretRef::File { file } => write!(f, "{{ file = {:?} }}", file.display()),
            SecretRef::Plain(_) => f.write_str("<plaintext secret, redacted>"),
        }
    }
}

/// A resolved secret. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable '{0}' is not set")]
    EnvMissing(String),
    #[error("cannot read secret file '{path}': {message}")]
    File { path: String, message: String },
    #[error("secret file '{0}' is empty")]
    Empty(String),
}

impl SecretRef {
    /// Reads the secret. Relative file paths are relative to the config file.
    pub fn resolve(&self, base_dir: &Path) -> Result<Secret, SecretError> {
        match self {
            SecretRef::Env { env } => std::env::var(env).map(Secret).map_err(|_| SecretError::EnvMissing(env.clone())),
            SecretRef::Plain(value) => Ok(Secret(value.clone())),
            SecretRef::File { file } => {
                let path = base_dir.join(file);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| SecretError::File { path: path.display().to_string(), message: e.to_string() })?;
                // Files written by `echo` end in a newline that is not part of the secret.
                let value = text.trim_end_matches(['\n', '\r']).to_string();
                if value.is_empty() {
                    return Err(SecretError::Empty(path.display().to_string()));
                }
                Ok(Secret(value))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret("hunter2".into());
        assert!(!format!("{s:?} {s}").contains("hunter2"));
    }

    #[test]
    fn env_secret_resolves_and_a_missing_variable_is_named() {
        // A name no other test uses, so parallel tests cannot race on it.
        // SAFETY: only this test touches this variable.
        unsafe { std::env::set_var("ROSTER_SECRET_TEST_4711", "from-env") };
        let r = SecretRef::Env { env: "ROSTER_SECRET_TEST_4711".into() };
        assert_eq!(r.resolve(std::path::Path::new(".")).expect("resolves").expose(), "from-env");
        let missing = SecretRef::Env { env: "ROSTER_SECRET_TEST_UNSET_4711".into() };
        let err = missing.resolve(std::path::Path::new(".")).expect_err("unset");
        assert!(err.to_string().contains("ROSTER_SECRET_TEST_UNSET_4711"), "{err}");
    }

    #[test]
    fn file_secret_drops_the_trailing_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("pw"), "s3cret\n").expect("write");
        let r = SecretRef::File { file: "pw".into() };
        assert_eq!(r.resolve(dir.path()).expect("resolves").expose(), "s3cret");
    }
}
