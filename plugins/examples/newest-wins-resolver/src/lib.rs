//! Example conflict-resolution plugin, the opposite of the built-in default:
//! for a duplicate the newest claimant wins (not yet stored beats stored, then
//! the latest `stored-since`), the same person in two sources is held for
//! review, and the application's edits always win.

use roster_plugin_sdk::prelude::*;

struct NewestWins;

impl ConflictResolver for NewestWins {
    fn init(config: &Config) -> Result<Self, Vec<ConfigError>> {
        let errors = config.unknown_keys(&[]);
        if errors.is_empty() { Ok(NewestWins) } else { Err(errors) }
    }

    fn resolve(&mut self, c: &Conflict<'_>) -> Decision {
        match c.kind {
            ConflictKind::DuplicateKey => {
                let newest = (0..c.claimants.len())
                    .max_by_key(|&i| {
                        let k = &c.claimants[i];
                        (k.stored_since.is_none(), k.stored_since.unwrap_or(""), i)
                    })
                    .unwrap_or(0);
                Decision::Keep(newest)
            }
            ConflictKind::SamePerson => Decision::Quarantine(format!(
                "{} '{}' is in {} sources: a human decides",
                c.key,
                c.value,
                c.claimants.len()
            )),
            ConflictKind::AppEdit => match c.claimants.iter().position(|k| k.source == "app") {
                Some(app) => Decision::Keep(app),
                None => Decision::Quarantine("no application side".into()),
            },
        }
    }
}

roster_plugin_sdk::export_conflict_resolver!(NewestWins);
