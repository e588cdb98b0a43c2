//! Scope: which entries of a source the tenant wants.
//!
//! OU scope is decided per entry as it streams in, before mapping. Group scope
//! needs the whole membership graph, so it is decided after the read, on the
//! resolved memberships: a user is in scope when it is a member, directly or
//! through nested groups, of one of the scope groups; a group is in scope when
//! it is one of them or nested inside one.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::config::ScopeConfig;
use crate::dn::Dn;

pub struct OuScope {
    ous: Vec<Dn>,
}

impl OuScope {
    pub fn new(scope: &ScopeConfig) -> Result<Self, String> {
        let ous = scope
            .ous
            .iter()
            .map(|s| Dn::parse(s).map_err(|e| format!("scope_ous: '{s}' is not a valid DN: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { ous })
    }

    /// True when there is no OU scope or the DN is at or below one of the OUs.
    /// An entry without a DN is in scope only when there is no OU scope.
    pub fn contains(&self, dn: Option<&str>) -> bool {
        if self.ous.is_empty() {
            return true;
        }
        let Some(dn) = dn.and_then(|d| Dn::parse(d).ok()) else { return false };
        self.ous.iter().any(|ou| dn.is_within(ou))
    }
}

/// Ids of objects in group scope, given the scope groups' ids and the direct
/// membership edges (group id → member ids). Cycle-safe.
pub fn group_scope(roots: &[String], members: &HashMap<String, Vec<String>>) -> HashSet<String> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<&String> = roots.iter().collect();
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id.clone()) {
            continue;
        }
        if let Some(ms) = members.get(id) {
            queue.extend(ms.iter());
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_scope_follows_nesting_and_survives_cycles() {
        let mut m = HashMap::new();
        m.insert("g1".to_string(), vec!["u1".to_string(), "g2".to_string()]);
        m.insert("g2".to_string(), vec!["u2".to_string(), "g1".to_string()]);
        m.insert("g3".to_string(), vec!["u3".to_string()]);
        let s = group_scope(&["g1".to_string()], &m);
        let mut v: Vec<_> = s.into_iter().collect();
        v.sort();
        assert_eq!(v, vec!["g1", "g2", "u1", "u2"]);
    }
}
