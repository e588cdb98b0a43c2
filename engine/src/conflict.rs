//! Conflict resolution. The host finds the conflicts; the tenant's
//! conflict-resolver plugin (the built-in `policy-resolver` takes
//! `[tenant.conflicts]`) decides them; the host checks each decision fits and
//! applies it. Runs after every source of the tenant has been read and mapped,
//! before the diff, so a conflict across sources is seen as well as one within
//! a source. Three kinds, in this order:
//!
//! 1. **App edits**: an attribute the application changed through Roster
//!    (`roster users edit`) that the directory changed too since. Unchanged
//!    in the directory, the application's value simply stands.
//! 2. **Same person** (`correlate_on`): users of different sources with the
//!    same value are one person; a merge keeps one identity, takes each
//!    attribute by precedence and moves the others' group memberships to it.
//! 3. **Duplicate unique values** (`unique`): several users claim one value.
//!
//! A decision that does not fit its conflict (an index out of range, a merge
//! for a duplicate, a rename that still collides) and a resolver that fails
//! hold the conflict for human review: nothing is lost, nothing is guessed.

use std::collections::{BTreeMap, HashMap};

use crate::config::ConflictConfig;
use crate::diff::{DesiredState, Snapshot};
use crate::model::Desired;
use crate::plugin_host::{Claimant, ConflictInput, ConflictKindInput, DecisionOutput};
use crate::source::EntryKind;
use crate::store::{AppEdit, QuarantineItem};

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
    pub merged: u64,
    pub app_edits_kept: u64,
}

/// What to do with a recorded app edit once the run is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditAction {
    /// The directory and the application agree now, or the directory won.
    Clear { object_id: String, attribute: String },
    /// The application's value won over a directory change: it now stands
    /// against the directory's new value.
    Rebase { object_id: String, attribute: String, base: Vec<String> },
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub counts: ConflictCounts,
    pub edit_actions: Vec<EditAction>,
}

/// Decides a batch of conflicts: the resolver plugin, or an error message
/// that holds every conflict of the batch for review.
pub type Resolver<'r> = dyn FnMut(&[ConflictInput]) -> Result<Vec<DecisionOutput>, String> + 'r;

/// `decisions`: (key, lower-cased value) → anchor an admin chose to win
/// (`roster quarantine resolve --keep`). `plugin`: the resolver's label, for
/// quarantine records.
pub fn resolve(
    config: &ConflictConfig,
    decisions: &HashMap<(String, String), String>,
    app_edits: &[AppEdit],
    plugin: &str,
    resolver: &mut Resolver<'_>,
    sources: &mut [SourceState<'_>],
) -> Outcome {
    let mut out = Outcome::default();
    app_edit_phase(app_edits, plugin, resolver, sources, &mut out);
    if let Some(key) = &config.correlate_on {
        same_person_phase(key, decisions, plugin, resolver, sources, &mut out);
    }
    for key in &config.unique {
        duplicate_phase(key, decisions, plugin, resolver, sources, &mut out);
    }
    out
}

/// (source index, object id)
type Ref = (usize, String);

fn decide(resolver: &mut Resolver<'_>, conflicts: &[ConflictInput]) -> Vec<DecisionOutput> {
    if conflicts.is_empty() {
        return Vec::new();
    }
    match resolver(conflicts) {
        Ok(d) if d.len() == conflicts.len() => d,
        Ok(d) => conflicts
            .iter()
            .map(|_| {
                DecisionOutput::Quarantine(format!(
                    "the conflict resolver returned {} decisions for {} conflicts",
                    d.len(),
                    conflicts.len()
                ))
            })
            .collect(),
        Err(why) => conflicts
            .iter()
            .map(|_| DecisionOutput::Quarantine(format!("the conflict resolver failed: {why}")))
            .collect(),
    }
}

fn claimant(s: &SourceState<'_>, id: &str, chosen: Option<&String>) -> Option<Claimant> {
    let d = s.desired.objects.get(id)?;
    Some(Claimant {
        source: s.source.to_string(),
        anchor: d.anchor.clone(),
        dn: d.dn.clone(),
        attributes: d.attrs.clone(),
        stored_since: s.snapshot.objects.get(id).map(|o| o.created_at.clone()),
        chosen_by_admin: chosen == Some(&d.anchor),
    })
}

fn describe(sources: &[SourceState<'_>], (i, id): &Ref) -> String {
    let s = &sources[*i];
    let d = s.desired.objects.get(id);
    format!(
        "'{}' in source '{}'",
        d.and_then(|d| d.dn.clone()).unwrap_or_else(|| d.map(|d| d.anchor.clone()).unwrap_or_default()),
        s.source
    )
}

/// Takes a claimant out of the run and into quarantine; its stored version,
/// if any, is kept as it is.
fn quarantine(
    sources: &mut [SourceState<'_>],
    (i, id): &Ref,
    reason: String,
    plugin: &str,
    counts: &mut ConflictCounts,
) {
    let s = &mut sources[*i];
    let Some(d) = s.desired.objects.remove(id) else { return };
    s.desired.memberships.retain(|(g, m)| g != id && m != id);
    s.desired.protected.insert(id.clone());
    tracing::info!(source = s.source, anchor = %d.anchor, %reason, "conflict: held for review");
    s.quarantine.push(QuarantineItem {
        source: s.source.to_string(),
        anchor: Some(d.anchor.clone()),
        kind: Some(d.kind),
        dn: d.dn.clone(),
        stage: "conflict".into(),
        reason,
        plugin: Some(plugin.to_string()),
    });
    counts.quarantined += 1;
}

/// Every reason of a conflict quarantine starts with `{key} '{value}'`, so
/// `roster quarantine resolve --keep` can tell which conflict it settles.
fn reason_for(key: &str, value: &str, reason: String) -> String {
    let prefix = format!("{key} '{value}'");
    if reason.to_lowercase().starts_with(&prefix.to_lowercase()) {
        reason
    } else {
        format!("{prefix} is held for review: {reason}")
    }
}

fn app_edit_phase(
    edits: &[AppEdit],
    plugin: &str,
    resolver: &mut Resolver<'_>,
    sources: &mut [SourceState<'_>],
    out: &mut Outcome,
) {
    let mut conflicts = Vec::new();
    let mut refs: Vec<(Ref, &AppEdit)> = Vec::new();
    for edit in edits {
        let Some(i) = sources.iter().position(|s| s.desired.objects.contains_key(&edit.object_id)) else { continue };
        let s = &mut sources[i];
        let Some(d) = s.desired.objects.get_mut(&edit.object_id) else { continue };
        let directory = d.attrs.get(&edit.attribute).map(|v| v.to_vec()).unwrap_or_default();
        if directory == edit.value {
            out.edit_actions
                .push(EditAction::Clear { object_id: edit.object_id.clone(), attribute: edit.attribute.clone() });
        } else if directory == edit.base {
            // Only the application changed it: its value stands.
            set_values(d, &edit.attribute, edit.value.clone());
        } else {
            let app_side = Claimant {
                source: "app".into(),
                anchor: d.anchor.clone(),
                dn: d.dn.clone(),
                attributes: [(edit.attribute.clone(), edit.value.clone())].into_iter().collect(),
                stored_since: Some(edit.recorded_at.clone()),
                chosen_by_admin: false,
            };
            let Some(dir_side) = claimant(s, &edit.object_id, None) else { continue };
            conflicts.push(ConflictInput {
                kind: ConflictKindInput::AppEdit,
                key: edit.attribute.clone(),
                value: edit.base.join(", "),
                claimants: vec![app_side, dir_side],
            });
            refs.push(((i, edit.object_id.clone()), edit));
        }
    }
    out.counts.conflicts += conflicts.len() as u64;
    let decisions = decide(resolver, &conflicts);
    for ((r, edit), decision) in refs.into_iter().zip(decisions) {
        let directory = sources[r.0]
            .desired
            .objects
            .get(&r.1)
            .and_then(|d| d.attrs.get(&edit.attribute))
            .map(|v| v.to_vec())
            .unwrap_or_default();
        match decision {
            DecisionOutput::Keep(0) => {
                if let Some(d) = sources[r.0].desired.objects.get_mut(&r.1) {
                    set_values(d, &edit.attribute, edit.value.clone());
                }
                out.counts.app_edits_kept += 1;
                out.edit_actions.push(EditAction::Rebase {
                    object_id: edit.object_id.clone(),
                    attribute: edit.attribute.clone(),
                    base: directory,
                });
            }
            DecisionOutput::Keep(1) => {
                out.edit_actions
                    .push(EditAction::Clear { object_id: edit.object_id.clone(), attribute: edit.attribute.clone() });
            }
            DecisionOutput::Quarantine(why) => {
                let reason = format!("app edit of {}: {why}", edit.attribute);
                quarantine(sources, &r, reason, plugin, &mut out.counts);
            }
            other => {
                let reason = format!(
                    "app edit of {}: the conflict resolver's decision {other:?} does not fit an app edit",
                    edit.attribute
                );
                quarantine(sources, &r, reason, plugin, &mut out.counts);
            }
        }
    }
}

fn set_values(d: &mut Desired, attribute: &str, values: Vec<String>) {
    if values.is_empty() {
        d.attrs.remove(attribute);
    } else {
        d.attrs.insert(attribute, values);
    }
}

/// Claimants of each contested value, in a stable order: stored ones oldest
/// first, then new ones by source (configuration order) and anchor.
fn claims(sources: &[SourceState<'_>], key: &str) -> Vec<(String, Vec<Ref>)> {
    let mut claims: BTreeMap<String, Vec<Ref>> = BTreeMap::new();
    for (i, s) in sources.iter().enumerate() {
        for d in s.desired.objects.values().filter(|d| d.kind == EntryKind::User) {
            if let Some(v) = key_value(d, key) {
                claims.entry(v.to_lowercase()).or_default().push((i, d.id.clone()));
            }
        }
    }
    claims
        .into_iter()
        .filter(|(_, c)| c.len() > 1)
        .map(|(value, mut c)| {
            c.sort_by_key(|(i, id)| {
                let s = &sources[*i];
                let created = s.snapshot.objects.get(id).map(|o| o.created_at.clone());
                let anchor = s.desired.objects.get(id).map(|d| d.anchor.clone()).unwrap_or_default();
                (created.is_none(), created, *i, anchor)
            });
            (value, c)
        })
        .collect()
}

fn same_person_phase(
    key: &str,
    decisions: &HashMap<(String, String), String>,
    plugin: &str,
    resolver: &mut Resolver<'_>,
    sources: &mut [SourceState<'_>],
    out: &mut Outcome,
) {
    // Only claimants from different sources are the same person; two users of
    // one source sharing the value are a duplicate, for the unique keys.
    let groups: Vec<(String, Vec<Ref>)> = claims(sources, key)
        .into_iter()
        .filter_map(|(v, c)| {
            let mut seen = Vec::new();
            let c: Vec<Ref> = c
                .into_iter()
                .filter(|(i, _)| {
                    if seen.contains(i) {
                        false
                    } else {
                        seen.push(*i);
                        true
                    }
                })
                .collect();
            (c.len() > 1).then_some((v, c))
        })
        .collect();
    let conflicts: Vec<ConflictInput> = groups
        .iter()
        .map(|(value, refs)| {
            let chosen = decisions.get(&(key.to_string(), value.clone()));
            ConflictInput {
                kind: ConflictKindInput::SamePerson,
                key: key.to_string(),
                value: value.clone(),
                claimants: refs.iter().filter_map(|(i, id)| claimant(&sources[*i], id, chosen)).collect(),
            }
        })
        .collect();
    out.counts.conflicts += conflicts.len() as u64;
    let decided = decide(resolver, &conflicts);
    for ((value, refs), decision) in groups.into_iter().zip(decided) {
        let (primary, attributes) = match decision {
            DecisionOutput::Merge { primary, attributes } if primary < refs.len() => (primary, Some(attributes)),
            DecisionOutput::Keep(i) if i < refs.len() => (i, None),
            DecisionOutput::Quarantine(why) => {
                for r in &refs {
                    quarantine(sources, r, reason_for(key, &value, why.clone()), plugin, &mut out.counts);
                }
                continue;
            }
            other => {
                let why = format!(
                    "the conflict resolver's decision {other:?} does not fit the same person in {} sources",
                    refs.len()
                );
                for r in &refs {
                    quarantine(sources, r, reason_for(key, &value, why.clone()), plugin, &mut out.counts);
                }
                continue;
            }
        };
        let (pi, pid) = refs[primary].clone();
        if let Some(attrs) = attributes {
            if let Some(d) = sources[pi].desired.objects.get_mut(&pid) {
                d.attrs = attrs;
            }
        }
        let primary_label = describe(sources, &refs[primary]);
        for (n, (i, id)) in refs.iter().enumerate() {
            if n == primary {
                continue;
            }
            let s = &mut sources[*i];
            let Some(d) = s.desired.objects.remove(id) else { continue };
            // The person's memberships in this source move to the merged user.
            let moved: Vec<(String, String)> = s.desired.memberships.iter().filter(|(_, m)| m == id).cloned().collect();
            for (g, m) in moved {
                s.desired.memberships.remove(&(g.clone(), m));
                s.desired.memberships.insert((g, pid.clone()));
            }
            s.desired.memberships.retain(|(g, _)| g != id);
            tracing::info!(source = s.source, anchor = %d.anchor, into = %primary_label, %key, %value, "same person: merged");
            out.counts.merged += 1;
        }
    }
}

fn duplicate_phase(
    key: &str,
    decisions: &HashMap<(String, String), String>,
    plugin: &str,
    resolver: &mut Resolver<'_>,
    sources: &mut [SourceState<'_>],
    out: &mut Outcome,
) {
    let groups = claims(sources, key);
    let conflicts: Vec<ConflictInput> = groups
        .iter()
        .map(|(value, refs)| {
            let chosen = decisions.get(&(key.to_string(), value.clone()));
            ConflictInput {
                kind: ConflictKindInput::DuplicateKey,
                key: key.to_string(),
                value: value.clone(),
                claimants: refs.iter().filter_map(|(i, id)| claimant(&sources[*i], id, chosen)).collect(),
            }
        })
        .collect();
    out.counts.conflicts += conflicts.len() as u64;
    let decided = decide(resolver, &conflicts);
    for (((value, refs), conflict), decision) in groups.into_iter().zip(&conflicts).zip(decided) {
        match decision {
            DecisionOutput::Keep(k) if k < refs.len() => {
                let holder = describe(sources, &refs[k]);
                let by_admin = conflict.claimants[k].chosen_by_admin;
                for (n, r) in refs.iter().enumerate() {
                    if n == k {
                        continue;
                    }
                    let reason = if by_admin {
                        format!("{key} '{value}' was given to {holder} by an admin")
                    } else {
                        format!("{key} '{value}' already belongs to {holder}")
                    };
                    quarantine(sources, r, reason, plugin, &mut out.counts);
                }
            }
            DecisionOutput::Rename(names) if rename_fits(&names, &refs, &value, key, sources) => {
                for (r, name) in refs.iter().zip(names) {
                    if name.to_lowercase() == value {
                        continue;
                    }
                    let s = &mut sources[r.0];
                    if let Some(d) = s.desired.objects.get_mut(&r.1) {
                        tracing::info!(source = s.source, anchor = %d.anchor, %key, from = %value, to = %name, "duplicate renamed");
                        set_key(d, key, name);
                        out.counts.renamed += 1;
                    }
                }
            }
            DecisionOutput::Quarantine(why) => {
                for r in &refs {
                    quarantine(sources, r, reason_for(key, &value, why.clone()), plugin, &mut out.counts);
                }
            }
            other => {
                let why = format!(
                    "the conflict resolver's decision {other:?} does not fit a duplicate of {} claimants",
                    refs.len()
                );
                for r in &refs {
                    quarantine(sources, r, reason_for(key, &value, why.clone()), plugin, &mut out.counts);
                }
            }
        }
    }
}

/// A rename fits when it names every claimant, at most one keeps the value,
/// and no new value collides with another claimant or any other user.
fn rename_fits(names: &[String], refs: &[Ref], value: &str, key: &str, sources: &[SourceState<'_>]) -> bool {
    if names.len() != refs.len() || names.iter().filter(|n| n.to_lowercase() == value).count() > 1 {
        return false;
    }
    let mut lower: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
    lower.sort();
    lower.dedup();
    if lower.len() != names.len() || names.iter().any(|n| n.trim().is_empty()) {
        return false;
    }
    let taken = |v: &str| {
        sources.iter().any(|s| {
            s.desired
                .objects
                .values()
                .any(|d| d.kind == EntryKind::User && key_value(d, key).is_some_and(|x| x.to_lowercase() == v))
        })
    };
    names.iter().all(|n| n.to_lowercase() == value || !taken(&n.to_lowercase()))
}

/// The (key, lower-cased value) a conflict quarantine reason is about.
pub fn parse_reason(config: &ConflictConfig, reason: &str) -> Option<(String, String)> {
    let keys = config.unique.iter().chain(config.correlate_on.iter());
    for key in keys {
        let Some(rest) = reason.strip_prefix(&format!("{key} '")) else { continue };
        for marker in
            ["' already belongs to ", "' is claimed by ", "' was given to ", "' is held for review", "' is in "]
        {
            if let Some(end) = rest.rfind(marker) {
                return Some((key.clone(), rest[..end].to_lowercase()));
            }
        }
    }
    None
}

/// The attribute an app-edit quarantine is about.
pub fn parse_app_edit_reason(reason: &str) -> Option<&str> {
    reason.strip_prefix("app edit of ")?.split_once(':').map(|(a, _)| a)
}

/// The key's value: `email` means the primary (first) address, wherever it was mapped.
fn key_value<'a>(d: &'a Desired, key: &str) -> Option<&'a str> {
    let first = |k: &str| d.attrs.first(k);
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
    let Some(mut values) = d.attrs.get(attr).map(|v| v.to_vec()) else { return };
    if let Some(first) = values.first_mut() {
        *first = value;
        d.attrs.insert(attr, values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_carry_their_conflict() {
        let config = ConflictConfig { correlate_on: Some("email".into()), ..ConflictConfig::default() };
        let r = reason_for("userName", "jdoe", "someone else's problem".into());
        assert_eq!(parse_reason(&config, &r), Some(("userName".into(), "jdoe".into())));
        let r = reason_for("email", "j@x.org", "email 'j@x.org' is in 2 sources: a human decides".into());
        assert_eq!(parse_reason(&config, &r), Some(("email".into(), "j@x.org".into())));
        assert_eq!(parse_app_edit_reason("app edit of title: x"), Some("title"));
    }
}
