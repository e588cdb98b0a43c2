//! Example custom-attributes plugin: `badge` = `B-` + the entry's
//! `employeeNumber` (or the first 8 characters of its anchor), and
//! `nameLength`, an integer, when the tenant declares them.

use roster_plugin_sdk::prelude::*;

struct Badge {
    prefix: String,
    badge: bool,
    name_length: bool,
}

impl CustomAttributes for Badge {
    fn init(config: &Config, schema: &[AttributeDecl]) -> Result<Self, Vec<ConfigError>> {
        let mut errors = config.unknown_keys(&["prefix"]);
        let prefix = config.str("prefix").unwrap_or_else(|e| {
            errors.push(e);
            None
        });
        if !errors.is_empty() {
            return Err(errors);
        }
        let declared = |n: &str| schema.iter().any(|d| d.name == n);
        Ok(Badge {
            prefix: prefix.unwrap_or("B-").to_string(),
            badge: declared("badge"),
            name_length: declared("nameLength"),
        })
    }

    fn compute(&mut self, user: &MappedUser<'_>) -> Result<Vec<(String, Vec<String>)>, String> {
        let mut out = Vec::new();
        if self.badge {
            let id = user
                .entry
                .first_str("employeeNumber")
                .map(str::to_string)
                .unwrap_or_else(|| user.entry.anchor().chars().take(8).collect());
            out.push(("badge".to_string(), vec![format!("{}{id}", self.prefix)]));
        }
        if self.name_length {
            let name = user.mapped.get("userName").and_then(|a| a.first()).ok_or("the mapper gave no userName")?;
            out.push(("nameLength".to_string(), vec![name.len().to_string()]));
        }
        Ok(out)
    }
}

roster_plugin_sdk::export_custom_attributes!(Badge);
