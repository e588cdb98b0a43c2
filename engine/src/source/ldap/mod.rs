//! `kind = "ldap"` (placeholder)
use super::{ReadSummary, Sink, Source, SourceError};
use crate::config::{LdapSourceConfig, Secret};
use std::path::Path;
pub struct LdapSource {
    name: String,
}
impl LdapSource {
    pub fn new(config: &LdapSourceConfig, _base_dir: &Path, _pw: Option<Secret>) -> Result<Self, SourceError> {
        Ok(Self { name: config.name.clone() })
    }
}
impl Source for LdapSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn read(&mut self, _sink: &mut dyn Sink) -> Result<ReadSummary, SourceError> {
        todo!()
    }
}
