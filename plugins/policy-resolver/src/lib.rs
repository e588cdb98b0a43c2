//! Roster's built-in conflict-resolution plugin, configured by the tenant's
//! `[tenant.conflicts]` table (the host passes the keys below; `unique` and
//! `correlate_on` decide what is a conflict and stay with the host).
//!
//! ```toml
//! on_duplicate = "keep-oldest"        # | "quarantine" | "suffix"
//! precedence = ["hr", "corp-ldap"]    # source order for the same person
//! on_app_edit = "quarantine"          # | "app" | "directory"
//! [attribute_precedence]
//! title = ["corp-ldap", "hr"]
//! "name.familyName" = ["app", "hr"]   # "app": the application's edit wins
//! ```
//!
//! * **Duplicate unique value**: an admin's choice wins; otherwise the oldest
//!   stored claimant (then the first source in configuration order) keeps the
//!   value and `keep-oldest` quarantines the rest, `suffix` renames them with a
//!   suffix derived from their anchor (`jdoe` → `jdoe-3fa2`, `j@x.org` →
//!   `j+3fa2@x.org`: the same on every run), `quarantine` holds everyone for
//!   review.
//! * **Same person in several sources**: merged into one user. Each attribute
//!   comes from the first source in its `attribute_precedence` list, else in
//!   `precedence`, that has a value; sources not listed come after, in
//!   configuration order. The user keeps the identity of the first source in
//!   `precedence` (an admin's choice wins).
//! * **Changed in the application and in the directory**: if the attribute's
//!   precedence (or `precedence`) lists `app`, the earlier of `app` and the
//!   source wins; otherwise `on_app_edit` decides, and by default a human does.

use std::collections::BTreeMap;

use roster_plugin_sdk::ConfigValue;
use roster_plugin_sdk::conflict_resolver::Claimant;
use roster_plugin_sdk::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDuplicate {
    KeepOldest,
    Quarantine,
    Suffix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnAppEdit {
    Quarantine,
    App,
    Directory,
}

pub struct Policy {
    on_duplicate: OnDuplicate,
    on_app_edit: OnAppEdit,
    precedence: Vec<String>,
    attribute_precedence: BTreeMap<String, Vec<String>>,
}

fn string_list(key: &str, v: &ConfigValue, errors: &mut Vec<ConfigError>) -> Vec<String> {
    let Some(items) = v.as_array() else {
        errors.push(ConfigError::new(key, format!("expected an array of source names, found {}", v.type_name())));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(s) => out.push(s.to_string()),
            None => errors.push(ConfigError::new(
                format!("{key}[{i}]"),
                format!("expected a source name, found {}", item.type_name()),
            )),
        }
    }
    out
}

impl Policy {
    pub fn compile(config: &Config) -> Result<Self, Vec<ConfigError>> {
        let mut errors = config.unknown_keys(&["on_duplicate", "on_app_edit", "precedence", "attribute_precedence"]);
        let on_duplicate = match config.str("on_duplicate") {
            Ok(None | Some("keep-oldest")) => OnDuplicate::KeepOldest,
            Ok(Some("quarantine")) => OnDuplicate::Quarantine,
            Ok(Some("suffix")) => OnDuplicate::Suffix,
            Ok(Some(other)) => {
                errors.push(ConfigError::new(
                    "on_duplicate",
                    format!("unknown policy '{other}' (expected keep-oldest, quarantine or suffix)"),
                ));
                OnDuplicate::KeepOldest
            }
            Err(e) => {
                errors.push(e);
                OnDuplicate::KeepOldest
            }
        };
        let on_app_edit = match config.str("on_app_edit") {
            Ok(None | Some("quarantine")) => OnAppEdit::Quarantine,
            Ok(Some("app")) => OnAppEdit::App,
            Ok(Some("directory")) => OnAppEdit::Directory,
            Ok(Some(other)) => {
                errors.push(ConfigError::new(
                    "on_app_edit",
                    format!("unknown policy '{other}' (expected quarantine, app or directory)"),
                ));
                OnAppEdit::Quarantine
            }
            Err(e) => {
                errors.push(e);
                OnAppEdit::Quarantine
            }
        };
        let precedence =
            config.get("precedence").map(|v| string_list("precedence", v, &mut errors)).unwrap_or_default();
        let mut attribute_precedence = BTreeMap::new();
        match config.get("attribute_precedence") {
            None => {}
            Some(ConfigValue::Table(t)) => {
                for (name, v) in t {
                    let key = format!("attribute_precedence.{name}");
                    attribute_precedence.insert(name.clone(), string_list(&key, v, &mut errors));
                }
            }
            Some(v) => errors.push(ConfigError::new(
                "attribute_precedence",
                format!("expected a table of attribute = [sources], found {}", v.type_name()),
            )),
        }
        if errors.is_empty() {
            Ok(Self { on_duplicate, on_app_edit, precedence, attribute_precedence })
        } else {
            Err(errors)
        }
    }

    /// Rank of a source in an order: listed ones by position, the rest after.
    fn rank(order: &[String], source: &str) -> usize {
        order.iter().position(|s| s == source).unwrap_or(order.len())
    }

    fn order_for<'s>(&'s self, attribute: &str) -> &'s [String] {
        self.attribute_precedence.get(attribute).map(Vec::as_slice).unwrap_or(&self.precedence)
    }

    pub fn decide(&self, c: &Conflict<'_>) -> Decision {
        if c.claimants.is_empty() {
            return Decision::Quarantine("conflict without claimants".into());
        }
        match c.kind {
            ConflictKind::DuplicateKey => self.duplicate(c),
            ConflictKind::SamePerson => self.merge(c),
            ConflictKind::AppEdit => self.app_edit(c),
        }
    }

    fn duplicate(&self, c: &Conflict<'_>) -> Decision {
        let chosen = c.claimants.iter().position(|k| k.chosen_by_admin);
        // Oldest stored first; new ones after, in the order the host listed them.
        let oldest = (0..c.claimants.len())
            .min_by_key(|&i| {
                let k = &c.claimants[i];
                (k.stored_since.is_none(), k.stored_since.unwrap_or(""), i)
            })
            .unwrap_or(0);
        match (self.on_duplicate, chosen) {
            (_, Some(i)) if self.on_duplicate != OnDuplicate::Suffix => Decision::Keep(i),
            (OnDuplicate::KeepOldest, _) => Decision::Keep(oldest),
            (OnDuplicate::Quarantine, _) => Decision::Quarantine(format!(
                "{} '{}' is claimed by {} (on_duplicate = \"quarantine\")",
                c.key,
                c.value,
                c.claimants.iter().map(describe).collect::<Vec<_>>().join(", ")
            )),
            (OnDuplicate::Suffix, _) => {
                let keeper = chosen.unwrap_or(oldest);
                Decision::Rename(
                    c.claimants
                        .iter()
                        .enumerate()
                        .map(
                            |(i, k)| {
                                if i == keeper { c.value.to_string() } else { with_suffix(c.key, c.value, k.anchor) }
                            },
                        )
                        .collect(),
                )
            }
        }
    }

    fn merge(&self, c: &Conflict<'_>) -> Decision {
        let primary = c.claimants.iter().position(|k| k.chosen_by_admin).unwrap_or_else(|| {
            (0..c.claimants.len())
                .min_by_key(|&i| (Self::rank(&self.precedence, c.claimants[i].source), i))
                .unwrap_or(0)
        });
        let mut names: Vec<&str> = c.claimants.iter().flat_map(|k| k.attributes.iter().map(|a| a.name)).collect();
        names.sort_unstable();
        names.dedup();
        let mut attributes = Vec::new();
        for name in names {
            let order = self.order_for(name);
            let mut ranked: Vec<usize> = (0..c.claimants.len()).collect();
            ranked.sort_by_key(|&i| (Self::rank(order, c.claimants[i].source), i));
            let winner = ranked.into_iter().find_map(|i| {
                let values: Vec<String> = c.claimants[i]
                    .attributes
                    .get(name)?
                    .values()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .filter(|v| !v.is_empty())
                    .collect();
                (!values.is_empty()).then_some(values)
            });
            if let Some(values) = winner {
                attributes.push((name.to_string(), values));
            }
        }
        Decision::Merge { primary, attributes }
    }

    fn app_edit(&self, c: &Conflict<'_>) -> Decision {
        let (Some(app), Some(dir)) =
            (c.claimants.iter().position(|k| k.source == "app"), c.claimants.iter().position(|k| k.source != "app"))
        else {
            return Decision::Quarantine("app edit conflict without both sides".into());
        };
        let order = self.order_for(c.key);
        if order.iter().any(|s| s == "app") {
            let app_first = Self::rank(order, "app") < Self::rank(order, c.claimants[dir].source);
            return Decision::Keep(if app_first { app } else { dir });
        }
        match self.on_app_edit {
            OnAppEdit::App => Decision::Keep(app),
            OnAppEdit::Directory => Decision::Keep(dir),
            OnAppEdit::Quarantine => Decision::Quarantine(format!(
                "{} was changed in the application to {:?} and in source '{}' to {:?} (on_app_edit = \"quarantine\")",
                c.key,
                c.claimants[app].first_str(c.key).unwrap_or(""),
                c.claimants[dir].source,
                c.claimants[dir].first_str(c.key).unwrap_or("")
            )),
        }
    }
}

fn describe(k: &Claimant<'_>) -> String {
    format!("'{}' in source '{}'", k.dn.unwrap_or(k.anchor), k.source)
}

/// `jdoe` → `jdoe-3fa2`; `j@x.com` → `j+3fa2@x.com`. Derived from the anchor
/// (FNV-1a) so the same object gets the same name on every run.
pub fn with_suffix(key: &str, value: &str, anchor: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in anchor.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let tag = format!("{:04x}", (h ^ (h >> 16)) & 0xffff);
    match (key, value.rsplit_once('@')) {
        ("email" | "emails", Some((local, domain))) => format!("{local}+{tag}@{domain}"),
        _ => format!("{value}-{tag}"),
    }
}

impl ConflictResolver for Policy {
    fn init(config: &Config) -> Result<Self, Vec<ConfigError>> {
        Self::compile(config)
    }

    fn resolve(&mut self, conflict: &Conflict<'_>) -> Decision {
        self.decide(conflict)
    }
}

roster_plugin_sdk::export_conflict_resolver!(Policy);

#[cfg(test)]
mod tests {
    use super::*;
    use roster_plugin_sdk::Attrs;

    fn policy(pairs: Vec<(&str, ConfigValue)>) -> Policy {
        Policy::compile(&Config::from_value(ConfigValue::Table(
            pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        )))
        .expect("valid")
    }

    fn list(items: &[&str]) -> ConfigValue {
        ConfigValue::Array(items.iter().map(|s| ConfigValue::Text(s.to_string())).collect())
    }

    fn claimant<'a>(source: &'a str, anchor: &'a str, packed: &'a [u8], since: Option<&'a str>) -> Claimant<'a> {
        Claimant {
            source,
            anchor,
            dn: None,
            attributes: Attrs::parse(packed).expect("attrs"),
            stored_since: since,
            chosen_by_admin: false,
        }
    }

    #[test]
    fn duplicates_by_policy() {
        let p1 = roster_wire::pack([("userName", ["jdoe"].as_slice())]);
        let conflict =
            |claimants| Conflict { kind: ConflictKind::DuplicateKey, key: "userName", value: "jdoe", claimants };
        let c =
            conflict(vec![claimant("a", "new", &p1, None), claimant("b", "old", &p1, Some("2024-01-01T00:00:00Z"))]);
        assert_eq!(policy(vec![]).decide(&c), Decision::Keep(1));
        assert!(
            matches!(policy(vec![("on_duplicate", ConfigValue::Text("quarantine".into()))]).decide(&c), Decision::Quarantine(r) if r.contains("'new' in source 'a'"))
        );
        let Decision::Rename(names) = policy(vec![("on_duplicate", ConfigValue::Text("suffix".into()))]).decide(&c)
        else {
            panic!()
        };
        assert_eq!(names[1], "jdoe");
        assert_eq!(names[0], with_suffix("userName", "jdoe", "new"));
        assert_ne!(names[0], "jdoe");
        let mut c = c;
        c.claimants[0].chosen_by_admin = true;
        assert_eq!(policy(vec![]).decide(&c), Decision::Keep(0));
    }

    #[test]
    fn same_person_merges_by_precedence() {
        let hr = roster_wire::pack([
            ("userName", ["jdoe"].as_slice()),
            ("title", ["Engineer"].as_slice()),
            ("custom.costCenter", ["CC1"].as_slice()),
        ]);
        let ldap = roster_wire::pack([
            ("userName", ["john.doe"].as_slice()),
            ("title", ["Senior Engineer"].as_slice()),
            ("phone", ["555"].as_slice()),
        ]);
        let c = Conflict {
            kind: ConflictKind::SamePerson,
            key: "email",
            value: "jdoe@x.org",
            claimants: vec![claimant("corp-ldap", "L1", &ldap, None), claimant("hr", "H1", &hr, None)],
        };
        let p = policy(vec![
            ("precedence", list(&["hr", "corp-ldap"])),
            (
                "attribute_precedence",
                ConfigValue::Table([("title".to_string(), list(&["corp-ldap", "hr"]))].into_iter().collect()),
            ),
        ]);
        let Decision::Merge { primary, attributes } = p.decide(&c) else { panic!() };
        assert_eq!(primary, 1, "hr comes first");
        let a: BTreeMap<_, _> = attributes.into_iter().collect();
        assert_eq!(a["userName"], ["jdoe"]);
        assert_eq!(a["title"], ["Senior Engineer"]);
        assert_eq!(a["phone"], ["555"], "only ldap has it");
        assert_eq!(a["custom.costCenter"], ["CC1"]);
    }

    #[test]
    fn app_edits() {
        let app = roster_wire::pack([("title", ["CTO"].as_slice())]);
        let dir = roster_wire::pack([("title", ["VP"].as_slice())]);
        let c = Conflict {
            kind: ConflictKind::AppEdit,
            key: "title",
            value: "Engineer",
            claimants: vec![claimant("app", "u", &app, None), claimant("corp", "u", &dir, None)],
        };
        assert!(
            matches!(policy(vec![]).decide(&c), Decision::Quarantine(r) if r.contains("\"CTO\"") && r.contains("\"VP\""))
        );
        assert_eq!(policy(vec![("on_app_edit", ConfigValue::Text("directory".into()))]).decide(&c), Decision::Keep(1));
        assert_eq!(policy(vec![("precedence", list(&["app", "corp"]))]).decide(&c), Decision::Keep(0));
        assert_eq!(
            policy(vec![
                ("precedence", list(&["app"])),
                (
                    "attribute_precedence",
                    ConfigValue::Table([("title".to_string(), list(&["corp", "app"]))].into_iter().collect())
                )
            ])
            .decide(&c),
            Decision::Keep(1)
        );
    }

    #[test]
    fn bad_policies_are_named() {
        let errors = Policy::compile(&Config::from_value(ConfigValue::Table(
            [
                ("on_duplicate".to_string(), ConfigValue::Text("newest".into())),
                ("precedence".to_string(), ConfigValue::Integer(1)),
            ]
            .into_iter()
            .collect(),
        )))
        .err()
        .expect("rejected");
        assert!(errors.iter().any(|e| e.key == "on_duplicate" && e.message.contains("newest")));
        assert!(errors.iter().any(|e| e.key == "precedence"));
    }
}
