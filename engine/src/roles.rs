//! Role assignment: from a user's group memberships, direct and nested, to
//! application roles. The host works out every user's groups (transitively,
//! cycle-safe, with depth) and the tenant's role-assigner plugin (the built-in
//! `rule-roles` takes the ordered rules of `[tenant.roles]`) turns them into
//! roles.
//!
//! Runs after members are resolved, so nesting counts; the result is the
//! user's `roles` attribute, diffed like any other (a role change is an
//! update with old → new) and published as SCIM `roles`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Deserialize;

use crate::model::Desired;
use crate::plugin_host::{GroupInput, PluginError, PluginInstance, RoleOutcome, UserGroupsInput};
use crate::source::EntryKind;

/// `[tenant.roles]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesConfig {
    /// Keep only the role(s) of the highest-priority matching rule.
    #[serde(default)]
    pub highest_only: bool,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RoleRule>,
}

/// `[[tenant.roles.rule]]`: members of `group` (a DN, anchor or display name)
/// or of any group whose display name matches `pattern` (`*`, `?`) get `role`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRule {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub pattern: Option<String>,
    pub role: String,
    #[serde(default)]
    pub priority: i64,
}

impl RolesConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (i, r) in self.rules.iter().enumerate() {
            let n = i + 1;
            if r.group.is_some() == r.pattern.is_some() {
                return Err(format!("roles.rule #{n} ('{}'): give exactly one of `group` and `pattern`", r.role));
            }
            if r.role.trim().is_empty() {
                return Err(format!("roles.rule #{n}: `role` is empty"));
            }
        }
        Ok(())
    }
}

impl RolesConfig {
    /// The built-in plugin's configuration: the `[tenant.roles]` table as written.
    pub fn builtin_config(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("highest_only".into(), toml::Value::Boolean(self.highest_only));
        let rules = self
            .rules
            .iter()
            .map(|r| {
                let mut rule = toml::Table::new();
                if let Some(g) = &r.group {
                    rule.insert("group".into(), toml::Value::String(g.clone()));
                }
                if let Some(p) = &r.pattern {
                    rule.insert("pattern".into(), toml::Value::String(p.clone()));
                }
                rule.insert("role".into(), toml::Value::String(r.role.clone()));
                rule.insert("priority".into(), toml::Value::Integer(r.priority));
                toml::Value::Table(rule)
            })
            .collect();
        t.insert("rule".into(), toml::Value::Array(rules));
        t
    }
}

/// Every group each user is in, through any depth of nesting, with the depth
/// of the shortest path (1 = direct). Cycle-safe.
pub fn transitive_groups<'a>(
    desired: &'a HashMap<String, Desired>,
    memberships: &'a crate::diff::Memberships,
) -> BTreeMap<&'a str, Vec<(&'a str, u32)>> {
    let mut parents: HashMap<&str, Vec<&str>> = HashMap::new();
    for (g, m) in memberships {
        parents.entry(m.as_str()).or_default().push(g.as_str());
    }
    for p in parents.values_mut() {
        p.sort_unstable();
    }
    let mut out = BTreeMap::new();
    for u in desired.values().filter(|d| d.kind == EntryKind::User) {
        let mut depth: BTreeMap<&str, u32> = BTreeMap::new();
        let mut queue: VecDeque<(&str, u32)> =
            parents.get(u.id.as_str()).into_iter().flatten().map(|g| (*g, 1)).collect();
        while let Some((g, d)) = queue.pop_front() {
            if depth.contains_key(g) {
                continue;
            }
            depth.insert(g, d);
            queue.extend(parents.get(g).into_iter().flatten().map(|p| (*p, d + 1)));
        }
        out.insert(u.id.as_str(), depth.into_iter().collect());
    }
    out
}

/// Runs the role-assigner over every user of `desired` and sets `roles`.
/// Returns the users the plugin could not assign, with why; the caller
/// quarantines them. A batch whose call fails is retried user by user, so one
/// bad user does not take the others down.
pub fn assign(
    plugin: &mut PluginInstance,
    batch_size: usize,
    desired: &mut HashMap<String, Desired>,
    memberships: &crate::diff::Memberships,
) -> Result<Vec<(String, String)>, PluginError> {
    let groups_of = transitive_groups(desired, memberships);
    // Each call is sent every group of its batch once, so users with the
    // same groups go in the same batch: sorted by their group lists, a batch
    // refers to far fewer groups than a batch of users in id order.
    let mut by_groups: Vec<(&str, &Vec<(&str, u32)>)> = groups_of.iter().map(|(id, g)| (*id, g)).collect();
    by_groups.sort_by(|a, b| a.1.cmp(b.1));
    let ids: Vec<&str> = by_groups.into_iter().map(|(id, _)| id).collect();
    let mut results: Vec<(String, Result<Vec<String>, String>)> = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(batch_size.max(1)) {
        match assign_batch(plugin, chunk, &groups_of, desired) {
            Ok(r) => results.extend(r),
            Err(PluginError::Call { .. }) if chunk.len() > 1 => {
                for id in chunk {
                    match assign_batch(plugin, std::slice::from_ref(id), &groups_of, desired) {
                        Ok(r) => results.extend(r),
                        Err(PluginError::Call { plugin, failure }) => {
                            results.push(((*id).to_string(), Err(format!("plugin {plugin}: {failure}"))))
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(PluginError::Call { plugin, failure }) => {
                results.push((chunk[0].to_string(), Err(format!("plugin {plugin}: {failure}"))))
            }
            Err(e) => return Err(e),
        }
    }
    let mut failed = Vec::new();
    for (id, r) in results {
        match r {
            Ok(roles) => {
                if let Some(u) = desired.get_mut(&id) {
                    if roles.is_empty() {
                        u.attrs.remove("roles");
                    } else {
                        u.attrs.insert("roles".into(), roles);
                    }
                }
            }
            Err(why) => failed.push((id, why)),
        }
    }
    Ok(failed)
}

fn assign_batch(
    plugin: &mut PluginInstance,
    ids: &[&str],
    groups_of: &BTreeMap<&str, Vec<(&str, u32)>>,
    desired: &HashMap<String, Desired>,
) -> Result<Vec<(String, Result<Vec<String>, String>)>, PluginError> {
    let mut index: HashMap<&str, u32> = HashMap::new();
    let mut groups: Vec<GroupInput> = Vec::new();
    let mut user_ids: Vec<&str> = Vec::with_capacity(ids.len());
    let mut inputs: Vec<UserGroupsInput<'_>> = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(user) = desired.get(*id) else { continue };
        let mut refs = Vec::new();
        for (g, depth) in groups_of.get(id).into_iter().flatten() {
            let Some(group) = desired.get(*g) else { continue };
            let i = *index.entry(*g).or_insert_with(|| {
                groups.push(GroupInput {
                    anchor: group.anchor.clone(),
                    dn: group.dn.clone(),
                    name: group.attrs.get("displayName").and_then(|v| v.first()).cloned().unwrap_or_default(),
                });
                (groups.len() - 1) as u32
            });
            refs.push((i, *depth));
        }
        user_ids.push(id);
        inputs.push(UserGroupsInput { anchor: &user.anchor, attributes: &user.attrs, groups: refs });
    }
    let label = plugin.identity().to_string();
    let outcomes = plugin.assign(&groups, &inputs)?;
    Ok(user_ids
        .into_iter()
        .zip(outcomes)
        .map(|(id, o)| {
            (
                id.to_string(),
                match o {
                    RoleOutcome::Roles(r) => Ok(r),
                    RoleOutcome::Error(e) => Err(format!("plugin {label}: role assignment failed: {e}")),
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(id: &str, kind: EntryKind, name: &str) -> Desired {
        let key = if kind == EntryKind::User { "userName" } else { "displayName" };
        Desired {
            id: id.into(),
            kind,
            source: "s".into(),
            anchor: format!("a-{id}"),
            dn: Some(format!("cn={name},ou=groups,dc=x")),
            attrs: [(key.to_string(), vec![name.to_string()])].into_iter().collect(),
        }
    }

    #[test]
    fn transitive_groups_have_shortest_depths_and_survive_cycles() {
        let mut d: HashMap<String, Desired> = HashMap::new();
        for (id, kind, name) in [
            ("u1", EntryKind::User, "ann"),
            ("u2", EntryKind::User, "bob"),
            ("g-admins", EntryKind::Group, "admins"),
            ("g-eng", EntryKind::Group, "eng-core"),
            ("g-all", EntryKind::Group, "all-staff"),
        ] {
            d.insert(id.into(), obj(id, kind, name));
        }
        // ann ∈ admins ∈ eng-core ∈ all-staff ∈ admins (a cycle); bob ∈ all-staff.
        let m: crate::diff::Memberships =
            [("g-admins", "u1"), ("g-eng", "g-admins"), ("g-all", "g-eng"), ("g-admins", "g-all"), ("g-all", "u2")]
                .into_iter()
                .map(|(g, m)| (g.to_string(), m.to_string()))
                .collect();
        let t = transitive_groups(&d, &m);
        let depths = |u: &str| t[u].iter().map(|(g, d)| (*g, *d)).collect::<Vec<_>>();
        assert_eq!(depths("u1"), [("g-admins", 1), ("g-all", 3), ("g-eng", 2)]);
        assert_eq!(depths("u2"), [("g-admins", 2), ("g-all", 1), ("g-eng", 3)]);
    }

    #[test]
    fn builtin_config_carries_every_rule() {
        let cfg: RolesConfig =
            toml::from_str("highest_only = true\n[[rule]]\npattern = \"eng-*\"\nrole = \"engineer\"\npriority = 5\n")
                .expect("roles");
        let t = cfg.builtin_config();
        assert_eq!(t["highest_only"].as_bool(), Some(true));
        let rule = &t["rule"].as_array().expect("rules")[0];
        assert_eq!(rule["pattern"].as_str(), Some("eng-*"));
        assert_eq!(rule["priority"].as_integer(), Some(5));
    }
}
