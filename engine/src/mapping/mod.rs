//! Mapping: source entries through the tenant's mapper plugin, in batches.
//!
//! A failed batch call (trap, deadline, memory cap, malformed output) is retried
//! one entry at a time on a fresh instance, so one bad entry is quarantined
//! with the plugin's own reason and the rest of the batch still maps.

pub mod memo;

use crate::plugin_host::{MapOutcome, MapperInstance, PluginError, PluginIdentity, Usage};
use crate::source::SourceEntry;

/// The result for one entry, with the entry handed back.
pub enum Mapped {
    Ok(MapOutcome),
    /// The plugin failed on this entry; the message names tenant and plugin.
    Failed(String),
}

pub struct MappingStage {
    instance: MapperInstance,
    batch: Vec<SourceEntry>,
    batch_size: usize,
    pub calls: u64,
}

impl MappingStage {
    pub fn new(instance: MapperInstance, batch_size: usize) -> Self {
        Self { instance, batch: Vec::with_capacity(batch_size), batch_size, calls: 0 }
    }

    /// Fuel and peak memory the plugin has used so far.
    pub fn usage(&self) -> Usage {
        self.instance.usage()
    }

    pub fn plugin(&self) -> &PluginIdentity {
        self.instance.identity()
    }

    /// Wall time spent inside the mapper so far.
    pub fn busy(&self) -> std::time::Duration {
        self.instance.busy()
    }

    /// Queues an entry; when the batch is full, maps it and returns the results.
    pub fn push(&mut self, entry: SourceEntry) -> Result<Vec<(SourceEntry, Mapped)>, PluginError> {
        self.batch.push(entry);
        if self.batch.len() >= self.batch_size { self.flush() } else { Ok(Vec::new()) }
    }

    /// Drops queued entries (the run was aborted).
    pub fn discard(&mut self) {
        self.batch.clear();
    }

    /// Maps whatever is queued. `Err` only for failures that are not about an
    /// entry (the plugin's configuration was rejected when it was re-created).
    pub fn flush(&mut self) -> Result<Vec<(SourceEntry, Mapped)>, PluginError> {
        if self.batch.is_empty() {
            return Ok(Vec::new());
        }
        let batch = std::mem::take(&mut self.batch);
        let refs: Vec<&SourceEntry> = batch.iter().collect();
        self.calls += 1;
        match self.instance.map_batch(&refs) {
            Ok(outcomes) => Ok(batch.into_iter().zip(outcomes.into_iter().map(Mapped::Ok)).collect()),
            Err(PluginError::Call { failure, .. }) if batch.len() > 1 => {
                tracing::warn!(plugin = %self.instance.identity(), %failure, entries = batch.len(), "batch failed; retrying its entries one by one");
                let mut out = Vec::with_capacity(batch.len());
                for entry in batch {
                    self.calls += 1;
                    let result = self.instance.map_batch(&[&entry]);
                    let mapped = match result {
                        Ok(mut o) if o.len() == 1 => Mapped::Ok(o.remove(0)),
                        Ok(_) => Mapped::Failed("plugin returned the wrong number of results".into()),
                        Err(e @ PluginError::Call { .. }) => Mapped::Failed(e.to_string()),
                        Err(e) => return Err(e),
                    };
                    out.push((entry, mapped));
                }
                Ok(out)
            }
            Err(e @ PluginError::Call { .. }) => {
                let entry = batch.into_iter().next();
                Ok(entry.map(|en| vec![(en, Mapped::Failed(e.to_string()))]).unwrap_or_default())
            }
            Err(e) => Err(e),
        }
    }
}
