//! The "few lines of Rust" example: a complete Roster mapping plugin.
//! Users get `userName` = lowercased `uid`, their names and mail addresses; users
//! and groups get `displayName` (or else `cn`) UPPERCASED.

use roster_plugin_sdk::prelude::*;

struct Upper;

impl Mapper for Upper {
    fn init(config: &Config) -> Result<Self, Vec<ConfigError>> {
        let unknown = config.unknown_keys(&[]); // this plugin takes no settings
        if unknown.is_empty() { Ok(Upper) } else { Err(unknown) }
    }

    fn map(&mut self, entry: &Entry<'_>) -> MapResult {
        let display = entry.first_str("displayName").or(entry.first_str("cn"));
        let mut out = Output::for_entry(entry);
        if entry.is_user() {
            let Some(uid) = entry.first_str("uid") else {
                return MapResult::skip("no uid");
            };
            out.set("userName", uid.to_lowercase())
                .set_opt("name.givenName", entry.first_str("givenName"))
                .set_opt("name.familyName", entry.first_str("sn"))
                .set_all("emails", entry.values_str("mail").map(str::to_lowercase));
        } else if display.is_none() {
            return MapResult::error("group has neither displayName nor cn");
        }
        out.set_opt("displayName", display.map(str::to_uppercase)).finish()
    }
}

roster_plugin_sdk::export_mapper!(Upper);
