//! Configuration loads and reloads of `roster serve` (SIGHUP), on the record.
//!
//! A reload is validated while the running service carries on; only a
//! configuration that loads is swapped in. Either way every tenant's audit
//! chain gets a record: which of its settings changed (key names, never
//! values, since a file may hold plaintext secrets when it allows them), the
//! file's digest, and, for a refused file, why.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

use crate::config::{Config, ConfigError};
use crate::store::Store;

/// A loaded configuration and the TOML it came from, kept to tell what the
/// next reload changes (the file itself is overwritten by then).
#[derive(Clone)]
pub struct Snapshot {
    pub config: Config,
    table: toml::Table,
    /// SHA-256 of the file, unless it holds plaintext secrets: a digest of a
    /// known file around a weak password would let one test guesses.
    digest: Option<String>,
}

impl Snapshot {
    pub fn load(path: &Path) -> Result<Snapshot, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.display().to_string(), message: e.to_string() })?;
        let config = Config::parse(&text, path)?;
        let table = toml::from_str::<toml::Table>(&text).unwrap_or_default();
        let digest = (config.plaintext_secrets == 0).then(|| crate::util::sha256_hex(text.as_bytes()));
        Ok(Snapshot { config, table, digest })
    }

    /// The `[[tenant]]` table with this id.
    fn tenant(&self, id: &str) -> Option<&toml::Table> {
        self.table
            .get("tenant")
            .and_then(toml::Value::as_array)?
            .iter()
            .filter_map(toml::Value::as_table)
            .find(|t| t.get("id").and_then(toml::Value::as_str) == Some(id))
    }

    /// Top-level settings every tenant depends on (`[store]`, `[serve]`, `[[notify]]`, …).
    fn global(&self) -> toml::Table {
        self.table.iter().filter(|(k, _)| k.as_str() != "tenant").map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Keys whose values differ between two tables, dotted under `prefix`.
fn changed_keys(prefix: &str, old: &toml::Table, new: &toml::Table) -> Vec<String> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter().filter(|k| old.get(*k) != new.get(*k)).map(|k| format!("{prefix}{k}")).collect()
}

/// Records the configuration `roster serve` started with.
pub fn audit_load(store: &mut dyn Store, snapshot: &Snapshot, actor: &str) {
    for tenant in &snapshot.config.tenants {
        let detail = json!({
            "action": "config.load",
            "file": snapshot.config.path.display().to_string(),
            "sha256": snapshot.digest,
        });
        record(store, &tenant.id, actor, &detail);
    }
}

/// Records a reload that was applied: per tenant, what changed for it.
pub fn audit_applied(store: &mut dyn Store, old: &Snapshot, new: &Snapshot, actor: &str) {
    let global = changed_keys("", &old.global(), &new.global());
    let ids: BTreeSet<&str> = old.config.tenants.iter().chain(&new.config.tenants).map(|t| t.id.as_str()).collect();
    for id in ids {
        let (before, after) = (old.tenant(id), new.tenant(id));
        let tenant: Value = match (before, after) {
            (Some(b), Some(a)) => json!(changed_keys("tenant.", b, a)),
            (None, Some(_)) => json!("added"),
            (Some(_), None) => json!("removed"),
            (None, None) => continue,
        };
        let detail = json!({
            "action": "config.reload",
            "result": "applied",
            "file": new.config.path.display().to_string(),
            "sha256_before": old.digest,
            "sha256": new.digest,
            "changed": { "global": global, "tenant": tenant },
        });
        record(store, id, actor, &detail);
    }
}

/// Records a reload that was refused; the service keeps its configuration.
pub fn audit_refused(store: &mut dyn Store, current: &Snapshot, error: &ConfigError, actor: &str) {
    for tenant in &current.config.tenants {
        // Configuration errors name the place, never a value (secrets included).
        let detail = json!({
            "action": "config.reload",
            "result": "refused",
            "file": current.config.path.display().to_string(),
            "error": error.to_string(),
        });
        record(store, &tenant.id, actor, &detail);
    }
}

fn record(store: &mut dyn Store, tenant: &str, actor: &str, detail: &Value) {
    if let Err(e) = store.audit(tenant, "config", actor, detail) {
        tracing::error!(tenant, error = %e, "could not record the configuration change in the audit trail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).expect("toml")
    }

    #[test]
    fn changed_keys_name_added_removed_and_edited_settings() {
        let old = table("a = 1\nb = { x = 1 }\nc = 3\n");
        let new = table("a = 1\nb = { x = 2 }\nd = 4\n");
        assert_eq!(changed_keys("tenant.", &old, &new), ["tenant.b", "tenant.c", "tenant.d"]);
        assert!(changed_keys("", &old, &old).is_empty());
    }
}
