//! Example role-assignment plugin: every *direct* group gives the role
//! `team:<group name>` (lower case, spaces as dashes); nested groups give
//! nothing. `prefix` in the configuration replaces `team:`.

use roster_plugin_sdk::prelude::*;

struct TeamRoles {
    prefix: String,
}

impl RoleAssigner for TeamRoles {
    fn init(config: &Config) -> Result<Self, Vec<ConfigError>> {
        let mut errors = config.unknown_keys(&["prefix"]);
        let prefix = config.str("prefix").unwrap_or_else(|e| {
            errors.push(e);
            None
        });
        if errors.is_empty() { Ok(TeamRoles { prefix: prefix.unwrap_or("team:").to_string() }) } else { Err(errors) }
    }

    fn assign(&mut self, user: &UserGroups<'_>) -> Result<Vec<String>, String> {
        let mut roles: Vec<String> = user
            .groups
            .iter()
            .filter(|m| m.is_direct())
            .map(|m| format!("{}{}", self.prefix, m.group.name.to_lowercase().replace(' ', "-")))
            .collect();
        roles.sort();
        roles.dedup();
        Ok(roles)
    }
}

roster_plugin_sdk::export_role_assigner!(TeamRoles);
