//! Roster's built-in role-assignment plugin: ordered rules from the tenant's
//! `[tenant.roles]` table.
//!
//! ```toml
//! [tenant.roles]
//! highest_only = false          # true: keep only the role(s) of the highest priority
//!
//! [[tenant.roles.rule]]
//! group = "cn=admins,ou=groups,dc=example,dc=org"   # a DN, an anchor or a display name
//! role = "admin"
//! priority = 100
//!
//! [[tenant.roles.rule]]
//! pattern = "eng-*"             # display names, `*` and `?`, case-insensitive
//! role = "engineer"
//! priority = 50
//! ```
//!
//! A user gets the role of every rule matching any group they are in, directly
//! or through nested groups. Roles come out highest priority first (ties by
//! name): the first is the primary role in SCIM.

use roster_plugin_sdk::ConfigValue;
use roster_plugin_sdk::prelude::*;
use roster_plugin_sdk::role_assigner::GroupRef;

#[derive(Debug, Clone)]
enum Matcher {
    /// Lower-cased, DN-normalised: matches a group's anchor, DN or display name.
    Group(String),
    /// Lower-cased glob over display names.
    Pattern(String),
}

#[derive(Debug, Clone)]
struct Rule {
    matcher: Matcher,
    role: String,
    priority: i64,
}

pub struct RuleRoles {
    highest_only: bool,
    rules: Vec<Rule>,
    /// Per group of the current batch (by [`Membership::index`]): the rules it
    /// matches, worked out the first time a user of the batch is in it. Most
    /// users share their groups, so this turns rules × groups × users checks
    /// (each lower-casing a name and normalising a DN) into rules × groups.
    matching: Vec<Option<Vec<usize>>>,
}

impl RuleRoles {
    pub fn compile(config: &Config) -> Result<Self, Vec<ConfigError>> {
        let mut errors = config.unknown_keys(&["highest_only", "rule"]);
        let highest_only = config.bool("highest_only").unwrap_or_else(|e| {
            errors.push(e);
            None
        });
        let mut rules = Vec::new();
        match config.get("rule") {
            None => {}
            Some(ConfigValue::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match compile_rule(i, item) {
                        Ok(rule) => rules.push(rule),
                        Err(mut e) => errors.append(&mut e),
                    }
                }
            }
            Some(other) => errors.push(ConfigError::new(
                "rule",
                format!("expected an array of tables ([[roles.rule]]), found {}", other.type_name()),
            )),
        }
        if errors.is_empty() {
            Ok(Self { highest_only: highest_only.unwrap_or(false), rules, matching: Vec::new() })
        } else {
            Err(errors)
        }
    }

    /// The indices of the rules `group` matches.
    fn rules_matching(rules: &[Rule], group: &GroupRef) -> Vec<usize> {
        let name = group.name.to_lowercase();
        let dn = group.dn.as_deref().map(normalise_dn);
        let matches = |rule: &Rule| match &rule.matcher {
            Matcher::Group(want) => {
                group.anchor.eq_ignore_ascii_case(want) || name == *want || dn.as_ref().is_some_and(|dn| dn == want)
            }
            Matcher::Pattern(p) => glob(p, &name),
        };
        rules.iter().enumerate().filter(|(_, r)| matches(r)).map(|(i, _)| i).collect()
    }

    pub fn roles(&mut self, user: &UserGroups<'_>) -> Vec<String> {
        let Self { highest_only, rules, matching } = self;
        // Each role with its highest priority. A user has a handful of roles,
        // so a vector searched in place beats a map.
        let mut best: Vec<(&str, i64)> = Vec::new();
        for m in &user.groups {
            if matching.len() <= m.index {
                matching.resize(m.index + 1, None);
            }
            let matched = matching[m.index].get_or_insert_with(|| Self::rules_matching(rules, m.group));
            for rule in matched.iter().map(|&i| &rules[i]) {
                match best.iter_mut().find(|(role, _)| *role == rule.role) {
                    Some((_, p)) => *p = (*p).max(rule.priority),
                    None => best.push((rule.role.as_str(), rule.priority)),
                }
            }
        }
        let top = best.iter().map(|(_, p)| *p).max().unwrap_or(0);
        best.retain(|(_, p)| !*highest_only || *p == top);
        best.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        best.into_iter().map(|(role, _)| role.to_string()).collect()
    }
}

fn compile_rule(i: usize, item: &ConfigValue) -> Result<Rule, Vec<ConfigError>> {
    let key = |k: &str| format!("rule[{i}].{k}");
    let Some(table) = item.as_table() else {
        return Err(vec![ConfigError::new(
            format!("rule[{i}]"),
            format!("expected a table, found {}", item.type_name()),
        )]);
    };
    let mut errors = Vec::new();
    for k in table.keys() {
        if !["group", "pattern", "role", "priority"].contains(&k.as_str()) {
            errors
                .push(ConfigError::new(key(k), format!("unknown key '{k}' (expected group, pattern, role, priority)")));
        }
    }
    let text = |k: &str, errors: &mut Vec<ConfigError>| match table.get(k) {
        None => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                errors.push(ConfigError::new(key(k), format!("expected a string, found {}", v.type_name())));
                None
            }
        },
    };
    let group = text("group", &mut errors);
    let pattern = text("pattern", &mut errors);
    let role = text("role", &mut errors);
    let priority = match table.get("priority") {
        None => 0,
        Some(v) => v.as_integer().unwrap_or_else(|| {
            errors.push(ConfigError::new(key("priority"), format!("expected an integer, found {}", v.type_name())));
            0
        }),
    };
    let role = match role {
        Some(r) if !r.trim().is_empty() => r,
        Some(_) => {
            errors.push(ConfigError::new(key("role"), "`role` is empty"));
            String::new()
        }
        None => {
            errors.push(ConfigError::new(format!("rule[{i}]"), "missing `role`"));
            String::new()
        }
    };
    let matcher = match (group, pattern) {
        (Some(g), None) => Some(Matcher::Group(normalise_dn(&g))),
        (None, Some(p)) => Some(Matcher::Pattern(p.to_lowercase())),
        _ => {
            errors.push(ConfigError::new(format!("rule[{i}]"), "give exactly one of `group` and `pattern`"));
            None
        }
    };
    match matcher {
        Some(matcher) if errors.is_empty() => Ok(Rule { matcher, role, priority }),
        _ => Err(errors),
    }
}

/// Lower case, no spaces around `,` `=` `+`: enough to compare a DN written
/// in the configuration with the one the directory returns.
fn normalise_dn(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    for part in dn.trim().split(',') {
        if !out.is_empty() {
            out.push(',');
        }
        let part = part.trim();
        match part.split_once('=') {
            Some((k, v)) => {
                out.push_str(&k.trim().to_lowercase());
                out.push('=');
                out.push_str(&v.trim().to_lowercase());
            }
            None => out.push_str(&part.to_lowercase()),
        }
    }
    out
}

/// Glob with `*` and `?` (callers lowercase both sides).
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl RoleAssigner for RuleRoles {
    fn init(config: &Config) -> Result<Self, Vec<ConfigError>> {
        Self::compile(config)
    }

    fn prepare(&mut self, groups: &[GroupRef]) {
        self.matching.clear();
        self.matching.resize(groups.len(), None);
    }

    fn assign(&mut self, user: &UserGroups<'_>) -> Result<Vec<String>, String> {
        Ok(self.roles(user))
    }
}

roster_plugin_sdk::export_role_assigner!(RuleRoles);

#[cfg(test)]
mod tests {
    use super::*;
    use roster_plugin_sdk::Attrs;
    use roster_plugin_sdk::role_assigner::Membership;

    fn rule(fields: &[(&str, ConfigValue)]) -> ConfigValue {
        ConfigValue::Table(fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    fn text(s: &str) -> ConfigValue {
        ConfigValue::Text(s.into())
    }

    fn config(highest_only: bool) -> Config {
        Config::from_value(ConfigValue::Table(
            [
                ("highest_only".to_string(), ConfigValue::Boolean(highest_only)),
                (
                    "rule".to_string(),
                    ConfigValue::Array(vec![
                        rule(&[
                            ("group", text("CN=Admins, OU=groups,dc=x")),
                            ("role", text("admin")),
                            ("priority", ConfigValue::Integer(100)),
                        ]),
                        rule(&[
                            ("pattern", text("eng-*")),
                            ("role", text("engineer")),
                            ("priority", ConfigValue::Integer(50)),
                        ]),
                        rule(&[("group", text("All-Staff")), ("role", text("employee"))]),
                    ]),
                ),
            ]
            .into_iter()
            .collect(),
        ))
    }

    fn group(name: &str) -> GroupRef {
        GroupRef { anchor: format!("a-{name}"), dn: Some(format!("cn={name},ou=groups,dc=x")), name: name.into() }
    }

    #[test]
    fn dn_pattern_and_name_rules_with_priorities() {
        let groups = [group("admins"), group("eng-core"), group("all-staff"), group("sales")];
        let empty = roster_wire::pack::<&str, &str>([]);
        let user = UserGroups {
            anchor: "u1",
            attributes: Attrs::parse(&empty).expect("attrs"),
            groups: groups
                .iter()
                .enumerate()
                .map(|(i, g)| Membership { group: g, depth: i as u32 + 1, index: i })
                .collect(),
        };
        assert_eq!(RuleRoles::compile(&config(false)).expect("valid").roles(&user), ["admin", "engineer", "employee"]);
        assert_eq!(RuleRoles::compile(&config(true)).expect("valid").roles(&user), ["admin"]);
        let sales_only = UserGroups { groups: vec![Membership { group: &groups[3], depth: 1, index: 3 }], ..user };
        assert!(RuleRoles::compile(&config(false)).expect("valid").roles(&sales_only).is_empty());
    }

    #[test]
    fn a_batch_works_out_each_group_once_and_the_next_batch_afresh() {
        let mut plugin = RuleRoles::compile(&config(false)).expect("valid");
        let empty = roster_wire::pack::<&str, &str>([]);
        fn user<'a>(empty: &'a [u8], groups: &[&'a GroupRef]) -> UserGroups<'a> {
            UserGroups {
                anchor: "u",
                attributes: Attrs::parse(empty).expect("attrs"),
                groups: groups.iter().enumerate().map(|(i, g)| Membership { group: *g, depth: 1, index: i }).collect(),
            }
        }
        let first = [group("admins"), group("sales")];
        plugin.prepare(&first);
        assert_eq!(plugin.roles(&user(&empty, &[&first[0], &first[1]])), ["admin"]);
        assert_eq!(plugin.roles(&user(&empty, &[&first[0]])), ["admin"]);
        // The next batch puts other groups at the same positions: nothing of
        // the first batch's answers may leak into it.
        let second = [group("eng-web"), group("all-staff")];
        plugin.prepare(&second);
        assert_eq!(plugin.roles(&user(&empty, &[&second[0], &second[1]])), ["engineer", "employee"]);
    }

    #[test]
    fn bad_rules_are_named() {
        let bad = Config::from_value(ConfigValue::Table(
            [(
                "rule".to_string(),
                ConfigValue::Array(vec![
                    rule(&[("group", text("g")), ("pattern", text("p*")), ("role", text("r"))]),
                    rule(&[("group", text("g")), ("prio", ConfigValue::Integer(1))]),
                ]),
            )]
            .into_iter()
            .collect(),
        ));
        let errors = RuleRoles::compile(&bad).err().expect("rejected");
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"rule[0]"), "{errors:?}");
        assert!(keys.contains(&"rule[1].prio"), "{errors:?}");
        assert!(errors.iter().any(|e| e.key == "rule[1]" && e.message.contains("missing `role`")), "{errors:?}");
    }

    #[test]
    fn globs() {
        assert!(glob("eng-*", "eng-core"));
        assert!(glob("*-ops", "sre-ops"));
        assert!(glob("g?", "g1"));
        assert!(!glob("eng-*", "sales"));
    }
}
