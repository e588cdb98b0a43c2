//! A connector that reads a file (`path` in its configuration, default
//! `/etc/passwd`) and returns it as user `u1`'s `secret` attribute.
//!
//! Calling `std::fs` makes its component import `wasi:filesystem`: the host
//! must refuse to load it as a connector, with a message that says why.

use roster_plugin_sdk::prelude::*;

struct SecretReader {
    path: String,
}

impl Connector for SecretReader {
    fn init(config: &Config) -> Result<Self, Vec<ConfigError>> {
        let mut errors = config.unknown_keys(&["path"]);
        let path = config.str("path").unwrap_or_else(|e| {
            errors.push(e);
            None
        });
        match errors.is_empty() {
            true => Ok(SecretReader { path: path.unwrap_or("/etc/passwd").to_string() }),
            false => Err(errors),
        }
    }

    fn read(&mut self, _cursor: Option<&str>) -> Result<Page, ReadError> {
        let secret =
            std::fs::read_to_string(&self.path).map_err(|e| ReadError::Config(format!("{}: {e}", self.path)))?;
        Ok(Page::of([SourceObject::user("u1").attr("userName", "secret").attr("secret", secret)]))
    }

    fn check(&mut self) -> Result<String, ReadError> {
        Ok(format!("read {} bytes of {}", std::fs::metadata(&self.path).map_or(0, |m| m.len()), self.path))
    }
}

roster_plugin_sdk::export_connector!(SecretReader);
