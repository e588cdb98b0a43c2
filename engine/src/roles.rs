//! Role assignment: from a user's group memberships, direct and nested, to
//! application roles. The host works out every user's groups (transitively,
//! cycle-safe, with depth) and the tenant's role-assigner plugin (the built-in
//! `rule-roles` takes the ordered rules of `[tenant.roles]`) turns them into
//! roles.
//!
//! Runs after members are resolved, so nesting counts; the result is the
//! user's `roles` attribute, diffed like any other (a role change is an
//! update with old → new) and published as SCIM `roles`.

use std::collections::{HashMap, VecDeque};

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

/// Each user's groups, in group id order, with their depths.
pub type GroupsOf<'a> = HashMap<&'a str, Vec<(&'a str, u32)>, rustc_hash::FxBuildHasher>;

/// Every group each user is in, through any depth of nesting, with the depth
/// of the shortest path (1 = direct), in group id order. Cycle-safe. Hashed
/// with FxHash, like the membership set: the keys are Roster's own ids, and
/// a full sync asks for every user's groups several times.
pub fn transitive_groups<'a>(
    desired: &'a HashMap<String, Desired>,
    memberships: &'a crate::diff::Memberships,
) -> GroupsOf<'a> {
    let mut parents: HashMap<&str, Vec<&str>, rustc_hash::FxBuildHasher> = HashMap::default();
    for (g, m) in memberships {
        parents.entry(m.as_str()).or_default().push(g.as_str());
    }
    for p in parents.values_mut() {
        p.sort_unstable();
    }
    let mut out = GroupsOf::default();
    let mut queue: VecDeque<(&str, u32)> = VecDeque::new();
    let mut seen: std::collections::HashSet<&str, rustc_hash::FxBuildHasher> = Default::default();
    for u in desired.values().filter(|d| d.kind == EntryKind::User) {
        // Breadth first, so a group is first reached by its shortest path.
        let mut depth: Vec<(&str, u32)> = Vec::new();
        queue.clear();
        seen.clear();
        queue.extend(parents.get(u.id.as_str()).into_iter().flatten().map(|g| (*g, 1)));
        while let Some((g, d)) = queue.pop_front() {
            if !seen.insert(g) {
                continue;
            }
            depth.push((g, d));
            queue.extend(parents.get(g).into_iter().flatten().map(|p| (*p, d + 1)));
        }
        depth.sort_unstable();
        out.insert(u.id.as_str(), depth);
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
    // Groups ranked in id order: a user's groups as ranks compare as their
    // ids would, and a batch finds its groups by rank, without hashing or
    // comparing a string per membership.
    let mut group_ids: Vec<&str> = groups_of
        .values()
        .flatten()
        .map(|(g, _)| *g)
        .collect::<std::collections::HashSet<&str, rustc_hash::FxBuildHasher>>()
        .into_iter()
        .collect();
    group_ids.sort_unstable();
    let rank: HashMap<&str, u32, rustc_hash::FxBuildHasher> =
        group_ids.iter().enumerate().map(|(i, g)| (*g, i as u32)).collect();
    let groups: Vec<Option<&Desired>> = group_ids.iter().map(|g| desired.get(*g)).collect();
    // Each call is sent every group of its batch once, so users with the
    // same groups go in the same batch: sorted by their group lists, a batch
    // refers to far fewer groups than a batch of users in id order.
    let mut users: Vec<RankedUser<'_>> = groups_of
        .iter()
        .map(|(id, gs)| RankedUser {
            groups: gs.iter().filter_map(|(g, depth)| Some((*rank.get(g)?, *depth))).collect(),
            id,
        })
        .collect();
    drop((groups_of, rank));
    users.sort_unstable();
    let mut batch = BatchGroups { of_rank: &groups, slot: vec![NO_SLOT; groups.len()], used: Vec::new() };
    let mut results: Vec<(String, Result<Vec<String>, String>)> = Vec::with_capacity(users.len());
    for chunk in users.chunks(batch_size.max(1)) {
        match assign_batch(plugin, chunk, &mut batch, desired) {
            Ok(r) => results.extend(r),
            Err(PluginError::Call { .. }) if chunk.len() > 1 => {
                for user in chunk {
                    match assign_batch(plugin, std::slice::from_ref(user), &mut batch, desired) {
                        Ok(r) => results.extend(r),
                        Err(PluginError::Call { plugin, failure }) => {
                            results.push((user.id.to_string(), Err(format!("plugin {plugin}: {failure}"))))
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(PluginError::Call { plugin, failure }) => {
                results.push((chunk[0].id.to_string(), Err(format!("plugin {plugin}: {failure}"))))
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

/// A user and its groups as (rank, depth), in rank order. Ordered by its
/// groups, then by id.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct RankedUser<'a> {
    groups: Vec<(u32, u32)>,
    id: &'a str,
}

const NO_SLOT: u32 = u32::MAX;

/// The groups by rank, and where each sits in the current batch's group list
/// (`NO_SLOT` outside a batch; `used` says which to reset).
struct BatchGroups<'a> {
    of_rank: &'a [Option<&'a Desired>],
    slot: Vec<u32>,
    used: Vec<u32>,
}

fn assign_batch(
    plugin: &mut PluginInstance,
    users: &[RankedUser<'_>],
    batch: &mut BatchGroups<'_>,
    desired: &HashMap<String, Desired>,
) -> Result<Vec<(String, Result<Vec<String>, String>)>, PluginError> {
    let mut groups: Vec<GroupInput> = Vec::new();
    let mut user_ids: Vec<&str> = Vec::with_capacity(users.len());
    let mut inputs: Vec<UserGroupsInput<'_>> = Vec::with_capacity(users.len());
    for u in users {
        let Some(user) = desired.get(u.id) else { continue };
        let mut refs = Vec::with_capacity(u.groups.len());
        for &(rank, depth) in &u.groups {
            let Some(group) = batch.of_rank.get(rank as usize).copied().flatten() else { continue };
            let Some(slot) = batch.slot.get_mut(rank as usize) else { continue };
            if *slot == NO_SLOT {
                *slot = groups.len() as u32;
                batch.used.push(rank);
                groups.push(GroupInput {
                    anchor: group.anchor.clone(),
                    dn: group.dn.clone(),
                    name: group.attrs.first("displayName").map(str::to_string).unwrap_or_default(),
                });
            }
            refs.push((*slot, depth));
        }
        user_ids.push(u.id);
        inputs.push(UserGroupsInput { anchor: &user.anchor, attributes: &user.attrs, groups: refs });
    }
    for rank in batch.used.drain(..) {
        if let Some(slot) = batch.slot.get_mut(rank as usize) {
            *slot = NO_SLOT;
        }
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
