//! Diff: the desired state of one source against what the store holds.
//!
//! Objects are matched by Roster id, which derives from the anchor, so a DN
//! change (rename, move) is an update of `dn`, never a delete and a create.
//! Objects whose entries failed to map are "protected": neither they nor their
//! memberships are deleted because of a failure that is not the directory's.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::model::{Desired, Stored, Values};
use crate::plan::{AttrChange, Change, MemberObject, MembershipChange, PlannedObject, SourcePlan};
use crate::source::EntryKind;

/// (group id, member id) pairs. Hashed with FxHash: the ids are Roster's own
/// UUIDs, not attacker-chosen keys, and SipHash over hundreds of thousands of
/// pairs was a visible share of a run.
pub type Memberships = HashSet<(String, String), rustc_hash::FxBuildHasher>;

/// What the store holds for one source of one tenant.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub objects: HashMap<String, Stored>,
    /// (group id, member id), direct memberships only.
    pub memberships: Memberships,
    /// `Some(n)` when this is only the part of the stored state around an
    /// incremental read's changes: the source has `n` objects stored in all.
    pub partial_of: Option<u64>,
}

/// What the pipeline produced for one source.
#[derive(Debug, Default)]
pub struct DesiredState {
    pub objects: HashMap<String, Desired>,
    pub memberships: Memberships,
    /// Ids of objects seen in the source but not mapped (quarantined).
    pub protected: HashSet<String>,
    /// Normalized DNs of entries rejected without an anchor: whatever is stored
    /// under them is kept, since we cannot tell whether it is gone.
    pub protected_dns: HashSet<String>,
    pub read_complete: bool,
}

/// Moves created and updated objects out of `desired` into the plan, and
/// consumes the desired memberships: nothing reads them after the diff, and
/// the end of the diff, with the desired state and the plan both whole, was
/// a full sync's peak memory. `desired.objects` keeps the unchanged objects.
pub fn diff(source: &str, stored: &Snapshot, desired: &mut DesiredState) -> SourcePlan {
    enum Pending {
        Create,
        Update { from_version: i64, changes: Vec<AttrChange> },
    }
    // Only what changes is sorted (a re-sync usually changes nothing), in a
    // deterministic order: plans are read by people and compared by tests.
    let changed: Vec<(&Desired, Option<&Stored>)> = desired
        .objects
        .values()
        .filter_map(|want| match stored.objects.get(&want.id) {
            None => Some((want, None)),
            Some(have) if have.dn != want.dn || have.attrs != want.attrs => Some((want, Some(have))),
            Some(_) => None,
        })
        .collect();
    // Keys looked up once each, not twice per comparison: a full sync sorts
    // every object it creates.
    let mut keyed: Vec<((bool, &str, &str), (&Desired, Option<&Stored>))> =
        changed.into_iter().map(|c| ((c.0.kind == EntryKind::User, c.0.label(), c.0.id.as_str()), c)).collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let changed = keyed.into_iter().map(|(_, c)| c);
    let pending: Vec<(String, Pending)> = changed
        .filter_map(|(want, have)| match have {
            None => Some((want.id.clone(), Pending::Create)),
            Some(have) => {
                let changes = attribute_changes(have, want);
                (!changes.is_empty())
                    .then(|| (want.id.clone(), Pending::Update { from_version: have.version, changes }))
            }
        })
        .collect();

    let mut deletes = Vec::new();
    if desired.read_complete {
        let mut gone: Vec<&Stored> = stored
            .objects
            .values()
            .filter(|s| !desired.objects.contains_key(&s.id) && !desired.protected.contains(&s.id))
            .filter(|s| {
                desired.protected_dns.is_empty()
                    || !s.dn.as_deref().is_some_and(|dn| desired.protected_dns.contains(&crate::dn::normalize_dn(dn)))
            })
            .collect();
        gone.sort_by(|a, b| (a.kind, a.label()).cmp(&(b.kind, b.label())));
        for s in gone {
            deletes.push(Change::Delete {
                id: s.id.clone(),
                kind: s.kind,
                anchor: s.anchor.clone(),
                dn: s.dn.clone(),
                label: s.label().to_string(),
            });
        }
    }
    // Labels come from the attributes: before they move.
    let wanted = std::mem::take(&mut desired.memberships);
    let memberships = membership_changes(stored, desired, wanted);

    let mut changes = Vec::with_capacity(pending.len() + deletes.len());
    for (id, p) in pending {
        let Some(want) = desired.objects.remove(&id) else { continue };
        let object = PlannedObject { id, kind: want.kind, anchor: want.anchor, dn: want.dn, attrs: want.attrs };
        changes.push(match p {
            Pending::Create => Change::Create { object },
            Pending::Update { from_version, changes } => Change::Update { object, from_version, changes },
        });
    }
    changes.extend(deletes);
    SourcePlan {
        source: source.to_string(),
        changes,
        memberships,
        read_complete: desired.read_complete,
        existing_objects: stored.partial_of.unwrap_or(stored.objects.len() as u64),
    }
}

fn attribute_changes(have: &Stored, want: &Desired) -> Vec<AttrChange> {
    let mut out = Vec::new();
    if have.dn != want.dn {
        out.push(AttrChange {
            attr: "dn".into(),
            old: have.dn.iter().cloned().collect(),
            new: want.dn.iter().cloned().collect(),
        });
    }
    let keys: BTreeSet<&str> = have.attrs.keys().chain(want.attrs.keys()).collect();
    for k in keys {
        let (old, new) = (have.attrs.get(k), want.attrs.get(k));
        // Compared borrowed (a byte compare): most keys of an updated object
        // are unchanged, and only a change needs its values copied out.
        let same = match (old, new) {
            (Some(a), Some(b)) => a == b,
            (Some(v), None) | (None, Some(v)) => v.is_empty(),
            (None, None) => true,
        };
        if !same {
            out.push(AttrChange { attr: k.to_string(), old: values(old), new: values(new) });
        }
    }
    out
}

fn values(v: Option<Values<'_>>) -> Vec<String> {
    v.map(|v| v.to_vec()).unwrap_or_default()
}

/// Consumes the desired memberships: a full sync's are hundreds of thousands
/// of id pairs, and freeing them as the changes are built keeps the two from
/// being held at once, at what was the run's peak.
fn membership_changes<'a>(
    stored: &'a Snapshot,
    desired: &'a DesiredState,
    wanted: Memberships,
) -> Vec<MembershipChange> {
    // Each object's id and label once, shared by all its membership changes.
    // Keyed by the objects' own ids, which outlive the pairs.
    let mut described: HashMap<&'a str, Arc<MemberObject>, rustc_hash::FxBuildHasher> = HashMap::default();
    let mut unknown: HashMap<String, Arc<MemberObject>> = HashMap::new();
    let mut describe = |id: &str| -> Arc<MemberObject> {
        if let Some((key, d)) = desired.objects.get_key_value(id) {
            return described.entry(key.as_str()).or_insert_with(|| MemberObject::new(d.kind, id, d.label())).clone();
        }
        if let Some((key, s)) = stored.objects.get_key_value(id) {
            return described.entry(key.as_str()).or_insert_with(|| MemberObject::new(s.kind, id, s.label())).clone();
        }
        unknown.entry(id.to_string()).or_insert_with(|| MemberObject::new(EntryKind::User, id, id)).clone()
    };
    let mut removes: Vec<(String, String)> = stored
        .memberships
        .difference(&wanted)
        .filter(|(g, m)| {
            // A membership of a quarantined object stays until the object maps
            // again; a partial read says nothing about what is gone.
            desired.read_complete && !desired.protected.contains(g) && !desired.protected.contains(m)
        })
        .cloned()
        .collect();
    removes.sort_unstable();
    let mut changes = Vec::with_capacity(wanted.len() + removes.len());
    // Each pair is freed as its change is made: no second list of the pairs
    // (a full sync's are hundreds of thousands) beside the set.
    for (g, m) in wanted.into_iter().filter(|p| !stored.memberships.contains(p)) {
        changes.push(MembershipChange { add: true, group: describe(&g), member: describe(&m) });
    }
    changes.sort_unstable_by(|a, b| (a.group_id(), a.member_id()).cmp(&(b.group_id(), b.member_id())));
    for (g, m) in removes {
        changes.push(MembershipChange { add: false, group: describe(&g), member: describe(&m) });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Attributes;

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        pairs.iter().map(|(k, v)| (k.to_string(), vec![v.to_string()])).collect()
    }

    fn stored(id: &str, dn: &str, a: Attributes) -> Stored {
        Stored {
            id: id.into(),
            kind: EntryKind::User,
            source: "s".into(),
            anchor: format!("anchor-{id}"),
            dn: Some(dn.into()),
            attrs: a,
            version: 3,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    fn desired(id: &str, dn: &str, a: Attributes) -> Desired {
        Desired {
            id: id.into(),
            kind: EntryKind::User,
            source: "s".into(),
            anchor: format!("anchor-{id}"),
            dn: Some(dn.into()),
            attrs: a,
        }
    }

    #[test]
    fn rename_is_an_update_of_dn_and_unchanged_objects_are_not_planned() {
        let mut snap = Snapshot::default();
        snap.objects.insert("1".into(), stored("1", "uid=a,ou=x", attrs(&[("userName", "a")])));
        snap.objects.insert("2".into(), stored("2", "uid=b,ou=x", attrs(&[("userName", "b")])));
        let mut want = DesiredState { read_complete: true, ..Default::default() };
        want.objects.insert("1".into(), desired("1", "uid=a,ou=y", attrs(&[("userName", "a")])));
        want.objects.insert("2".into(), desired("2", "uid=b,ou=x", attrs(&[("userName", "b")])));
        let plan = diff("s", &snap, &mut want);
        assert_eq!(plan.changes.len(), 1);
        let Change::Update { changes, from_version, .. } = &plan.changes[0] else {
            panic!("expected update: {:?}", plan.changes)
        };
        assert_eq!(*from_version, 3);
        assert_eq!(
            changes,
            &vec![AttrChange { attr: "dn".into(), old: vec!["uid=a,ou=x".into()], new: vec!["uid=a,ou=y".into()] }]
        );
    }

    #[test]
    fn attribute_changes_name_only_changed_keys_and_treat_empty_as_absent() {
        let mut have_attrs = attrs(&[("userName", "a"), ("title", "Engineer")]);
        have_attrs.insert("emails", vec!["a@x".into(), "b@x".into()]);
        have_attrs.insert("phone", Vec::new());
        let mut want_attrs = attrs(&[("userName", "a"), ("nickName", "al")]);
        want_attrs.insert("emails", vec!["a@x".into(), "c@x".into()]);
        let changes = attribute_changes(&stored("1", "uid=a", have_attrs), &desired("1", "uid=a", want_attrs));
        assert_eq!(
            changes,
            vec![
                AttrChange {
                    attr: "emails".into(),
                    old: vec!["a@x".into(), "b@x".into()],
                    new: vec!["a@x".into(), "c@x".into()]
                },
                AttrChange { attr: "nickName".into(), old: vec![], new: vec!["al".into()] },
                AttrChange { attr: "title".into(), old: vec!["Engineer".into()], new: vec![] },
            ],
            "an empty `phone` and a missing one are the same; `userName` is unchanged"
        );
    }

    #[test]
    fn incomplete_reads_and_protected_objects_plan_no_deletes() {
        let mut snap = Snapshot::default();
        snap.objects.insert("1".into(), stored("1", "uid=a", attrs(&[("userName", "a")])));
        snap.objects.insert("2".into(), stored("2", "uid=b", attrs(&[("userName", "b")])));
        snap.memberships.insert(("g".into(), "2".into()));
        let mut want = DesiredState::default();
        assert!(diff("s", &snap, &mut want).changes.is_empty(), "partial read deletes nothing");
        want.read_complete = true;
        want.protected.insert("2".into());
        let plan = diff("s", &snap, &mut want);
        assert_eq!(plan.changes.len(), 1);
        assert!(matches!(&plan.changes[0], Change::Delete { id, .. } if id == "1"));
        assert!(plan.memberships.is_empty(), "membership of a quarantined user is kept");
    }
}
