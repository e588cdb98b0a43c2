//! Role assignment: from a user's group memberships, direct and nested, to
//! application roles, by ordered rules from the tenant's TOML.
//!
//! Runs after members are resolved, so nesting counts; the result is the
//! user's `roles` attribute, diffed like any other (a role change is an
//! update with old → new) and published as SCIM `roles`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::Deserialize;

use crate::dn::normalize_dn;
use crate::model::Desired;
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

/// Sets `roles` on every user of `desired` from its (transitive) groups.
pub fn assign(config: &RolesConfig, desired: &mut HashMap<String, Desired>, memberships: &HashSet<(String, String)>) {
    if config.rules.is_empty() {
        return;
    }
    // Which rules each group satisfies, decided once per group.
    let mut group_roles: HashMap<&str, Vec<(i64, &str)>> = HashMap::new();
    for g in desired.values().filter(|d| d.kind == EntryKind::Group) {
        let name = g.attrs.get("displayName").and_then(|v| v.first()).map(String::as_str).unwrap_or("");
        let dn = g.dn.as_deref().map(normalize_dn);
        let hits: Vec<(i64, &str)> = config
            .rules
            .iter()
            .filter(|r| match (&r.group, &r.pattern) {
                (Some(want), _) => {
                    g.anchor == *want
                        || name.eq_ignore_ascii_case(want)
                        || dn.as_deref() == Some(normalize_dn(want).as_str())
                }
                (None, Some(p)) => glob(&p.to_lowercase(), &name.to_lowercase()),
                (None, None) => false,
            })
            .map(|r| (r.priority, r.role.as_str()))
            .collect();
        if !hits.is_empty() {
            group_roles.insert(g.id.as_str(), hits);
        }
    }
    let mut parents: HashMap<&str, Vec<&str>> = HashMap::new();
    for (g, m) in memberships {
        parents.entry(m.as_str()).or_default().push(g.as_str());
    }
    let mut assigned: Vec<(String, Vec<String>)> = Vec::new();
    for u in desired.values().filter(|d| d.kind == EntryKind::User) {
        // Every group the user is in, through any depth of nesting; cycle-safe.
        let mut seen: HashSet<&str> = HashSet::new();
        let mut queue: VecDeque<&str> = parents.get(u.id.as_str()).into_iter().flatten().copied().collect();
        let mut candidates: BTreeMap<&str, i64> = BTreeMap::new();
        while let Some(g) = queue.pop_front() {
            if !seen.insert(g) {
                continue;
            }
            for (prio, role) in group_roles.get(g).into_iter().flatten() {
                let best = candidates.entry(role).or_insert(*prio);
                *best = (*best).max(*prio);
            }
            queue.extend(parents.get(g).into_iter().flatten().copied());
        }
        if candidates.is_empty() {
            continue;
        }
        let top = candidates.values().copied().max().unwrap_or(0);
        let mut roles: Vec<(i64, &str)> =
            candidates.into_iter().filter(|(_, p)| !config.highest_only || *p == top).map(|(r, p)| (p, r)).collect();
        // Highest priority first: it is the primary role in SCIM.
        roles.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        assigned.push((u.id.clone(), roles.into_iter().map(|(_, r)| r.to_string()).collect()));
    }
    for (id, roles) in assigned {
        if let Some(u) = desired.get_mut(&id) {
            u.attrs.insert("roles".into(), roles);
        }
    }
}

/// Case-sensitive glob with `*` and `?` (callers lowercase both sides).
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
    fn nested_groups_priorities_and_highest_only() {
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
        let m: HashSet<(String, String)> =
            [("g-admins", "u1"), ("g-eng", "g-admins"), ("g-all", "g-eng"), ("g-admins", "g-all"), ("g-all", "u2")]
                .into_iter()
                .map(|(g, m)| (g.to_string(), m.to_string()))
                .collect();
        let mut cfg: RolesConfig = toml::from_str(
            r#"
[[rule]]
group = "cn=Admins,ou=groups,dc=x"
role = "admin"
priority = 100
[[rule]]
pattern = "eng-*"
role = "engineer"
priority = 50
[[rule]]
group = "all-staff"
role = "employee"
"#,
        )
        .expect("roles");
        cfg.validate().expect("valid");
        assign(&cfg, &mut d, &m);
        assert_eq!(d["u1"].attrs["roles"], vec!["admin", "engineer", "employee"]);
        // The cycle makes bob an indirect member of admins too.
        assert_eq!(d["u2"].attrs["roles"], vec!["admin", "engineer", "employee"]);
        cfg.highest_only = true;
        assign(&cfg, &mut d, &m);
        assert_eq!(d["u1"].attrs["roles"], vec!["admin"]);
    }

    #[test]
    fn globs() {
        assert!(glob("eng-*", "eng-core"));
        assert!(glob("*-ops", "sre-ops"));
        assert!(glob("g?", "g1"));
        assert!(!glob("eng-*", "sales"));
    }
}
