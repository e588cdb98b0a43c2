//! Conflict resolution: two objects of a tenant claiming the same unique key.
//!
//! Runs after every source of the tenant has been read and mapped, before the
//! diff, so a conflict across sources is seen as well as one within a source.
//! The configured decision (`[tenant.conflicts] on_duplicate`):
//! - `keep-oldest` (default): the claimant stored first keeps the value; the
//!   others are quarantined for review, and any stored version of them is kept;
//! - `quarantine`: every claimant is quarantined for human review;
//! - `suffix`: the oldest keeps the value, the others get a deterministic
//!   suffix derived from their anchor (`jdoe` → `jdoe-3fa2`), stable across runs.
//!
//! "Oldest" is the earliest `created_at` in the store; objects not stored yet
//! come after stored ones, ordered by source (config order) then anchor.

use std::collections::HashMap;

use crate::config::{ConflictConfig, OnDuplicate};
use crate::diff::{DesiredState, Snapshot};
use crate::model::Desired;
use crate::source::EntryKind;
use crate::store::QuarantineItem;

/// One source's state, as the conflict stage sees it.
pub struct SourceState<'a> {
    pub source: &'a str,
    pub desired: &'a mut DesiredState,
    pub snapshot: &'a Snapshot,
    pub quarantine: &'a mut Vec<QuarantineItem>,
}

/// What the stage did, for the run report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ConflictCounts {
    pub conflicts: u64,
    pub quarantined: u64,
    pub renamed: u64,
}

/// `decisions`: (key, lower-cased value) → anchor an admin chose to win
/// (`roster quarantine resolve --keep`); it ranks first, whatever the policy.
pub fn resolve(
    config: &ConflictConfig,
    decisions: &HashMap<(String, String), String>,
    sources: &mut [SourceState<'_>],
) -> ConflictCounts {
    let mut counts = ConflictCounts::default();
    for key in &config.unique {
        // value (case-insensitive) → claimants (source index, id)
        let mut claims: HashMap<String, Vec<(usize, String)>> = HashMap::new();
        for (i, s) in sources.iter().enumerate() {
            for d in s.desired.objects.values().filter(|d| d.kind == EntryKind::User) {
                if let Some(v) = key_value(d, key) {
                    claims.entry(v.to_lowercase()).or_default().push((i, d.id.clone()));
                }
            }
        }
        let mut groups: Vec<(String, Vec<(usize, String)>)> = claims.into_iter().filter(|(_, c)| c.len() > 1).collect();
        groups.sort();
        for (value, mut claimants) in groups {
            counts.conflicts += 1;
            let chosen = decisions.get(&(key.clone(), value.clone()));
            claimants.sort_by_key(|(i, id)| {
                let s = &sources[*i];
                let created = s.snapshot.objects.get(id).map(|o| o.created_at.clone());
                let anchor = s.desired.objects.get(id).map(|d| d.anchor.clone()).unwrap_or_default();
                (chosen != Some(&anchor), created.is_none(), created, *i, anchor)
            });
            let describe = |(i, id): &(usize, String), sources: &[SourceState<'_>]| {
                let s = &sources[*i];
                let d = s.desired.objects.get(id);
                format!(
                    "'{}' in source '{}'",
                    d.and_then(|d| d.dn.clone()).unwrap_or_else(|| d.map(|d| d.anchor.clone()).unwrap_or_default()),
                    s.source
                )
            };
            let everyone: Vec<String> = claimants.iter().map(|c| describe(c, sources)).collect();
            let (keep, rest) = match config.on_duplicate {
                // An admin's decision settles even a quarantine-everyone policy.
                OnDuplicate::Quarantine if chosen.is_some() => (Some(&claimants[0]), &claimants[1..]),
                OnDuplicate::Quarantine => (None, &claimants[..]),
                OnDuplicate::KeepOldest | OnDuplicate::Suffix => (Some(&claimants[0]), &claimants[1..]),
            };
            let holder = keep.map(|k| describe(k, sources));
            for (i, id) in rest {
                let s = &mut sources[*i];
                if config.on_duplicate == OnDuplicate::Suffix {
                    if let Some(d) = s.desired.objects.get_mut(id) {
                        let renamed = with_suffix(key, &value, &d.anchor);
                        tracing::info!(source = s.source, anchor = %d.anchor, key = %key, from = %value, to = %renamed, "duplicate renamed");
                        set_key(d, key, renamed);
                        counts.renamed += 1;
                    }
                    continue;
                }
                let Some(d) = s.desired.objects.remove(id) else { continue };
                s.desired.memberships.retain(|(g, m)| g != id && m != id);
                s.desired.protected.insert(id.clone());
                let reason = match &holder {
                    Some(h) if chosen.is_some() => format!("{key} '{value}' was given to {h} by an admin"),
                    Some(h) => format!("{key} '{value}' already belongs to {h} (on_duplicate = \"keep-oldest\")"),
                    None => {
                        format!("{key} '{value}' is claimed by {} (on_duplicate = \"quarantine\")", everyone.join(", "))
                    }
                };
                s.quarantine.push(QuarantineItem {
                    source: s.source.to_string(),
                    anchor: Some(d.anchor.clone()),
                    kind: Some(d.kind),
                    dn: d.dn.clone(),
                    stage: "conflict".into(),
                    reason,
                    plugin: None,
                });
                counts.quarantined += 1;
            }
        }
    }
    counts
}

/// The (key, lower-cased value) a conflict quarantine reason is about.
pub fn parse_reason(config: &ConflictConfig, reason: &str) -> Option<(String, String)> {
    for key in &config.unique {
        let Some(rest) = reason.strip_prefix(&format!("{key} '")) else { continue };
        for marker in ["' already belongs to ", "' is claimed by ", "' was given to "] {
            if let Some(end) = rest.rfind(marker) {
                return Some((key.clone(), rest[..end].to_lowercase()));
            }
        }
    }
    None
}

/// The key's value: `email` means the primary (first) address, wherever it was mapped.
fn key_value<'a>(d: &'a Desired, key: &str) -> Option<&'a str> {
    let first = |k: &str| d.attrs.get(k).and_then(|v| v.first()).map(String::as_str);
    match key {
        "email" | "emails" => first("email").or_else(|| first("emails")),
        k => first(k),
    }
    .filter(|v| !v.is_empty())
}

fn set_key(d: &mut Desired, key: &str, value: String) {
    let attr = match key {
        "email" | "emails" if d.attrs.contains_key("email") => "email",
        "email" | "emails" => "emails",
        k => k,
    };
    if let Some(values) = d.attrs.get_mut(attr) {
        if let Some(first) = values.first_mut() {
            *first = value;
        }
    }
}

/// `jdoe` → `jdoe-3fa2`; `j@x.com` → `j+3fa2@x.com`. Derived from the anchor so
/// the same object gets the same name on every run.
fn with_suffix(key: &str, value: &str, anchor: &str) -> String {
    let tag = &crate::util::sha256_hex(anchor.as_bytes())[..4];
    match (key, value.rsplit_once('@')) {
        ("email" | "emails", Some((local, domain))) => format!("{local}+{tag}@{domain}"),
        _ => format!("{value}-{tag}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_deterministic_and_keep_email_domains() {
        assert_eq!(with_suffix("userName", "jdoe", "a"), with_suffix("userName", "jdoe", "a"));
        assert_ne!(with_suffix("userName", "jdoe", "a"), with_suffix("userName", "jdoe", "b"));
        let e = with_suffix("email", "j@x.com", "a");
        assert!(e.starts_with("j+") && e.ends_with("@x.com"), "{e}");
    }
}
