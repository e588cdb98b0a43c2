//! `kind = "ldif"`: RFC 2849 content records from a file. (placeholder)
use super::{ReadSummary, Sink, Source, SourceError};
use crate::config::LdifSourceConfig;
use std::path::Path;
pub struct LdifSource {
    name: String,
}
impl LdifSource {
    pub fn new(config: &LdifSourceConfig, _base_dir: &Path) -> Result<Self, SourceError> {
        Ok(Self { name: config.name.clone() })
    }
}
impl Source for LdifSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn read(&mut self, _sink: &mut dyn Sink) -> Result<ReadSummary, SourceError> {
        todo!()
    }
}
