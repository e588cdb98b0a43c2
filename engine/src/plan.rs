//! Plans: exactly what a run will change, reviewed before anything is written.
//!
//! A plan lists, per object, create / update (every changed attribute old → new)
//! / delete, and membership adds and removes. The delete guard-rail is checked
//! here, on the plan, so a blocked plan never reaches the store.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

use crate::config::SafetyConfig;
use crate::model::{Attributes, Desired};
use crate::source::EntryKind;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttrChange {
    pub attr: String,
    pub old: Vec<String>,
    pub new: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    Create {
        #[serde(flatten)]
        object: PlannedObject,
    },
    Update {
        #[serde(flatten)]
        object: PlannedObject,
        /// The stored version this update was computed against.
        from_version: i64,
        changes: Vec<AttrChange>,
    },
    Delete {
        id: String,
        kind: EntryKind,
        anchor: String,
        dn: Option<String>,
        label: String,
    },
}

/// The full desired state of an object, as it will be written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedObject {
    pub id: String,
    pub kind: EntryKind,
    pub anchor: String,
    pub dn: Option<String>,
    pub attrs: Attributes,
}

impl From<&Desired> for PlannedObject {
    fn from(d: &Desired) -> Self {
        Self { id: d.id.clone(), kind: d.kind, anchor: d.anchor.clone(), dn: d.dn.clone(), attrs: d.attrs.clone() }
    }
}

impl serde::Serialize for EntryKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One object as membership changes name it: made once per object and
/// shared by all of its changes.
#[derive(Debug, PartialEq, Eq)]
pub struct MemberObject {
    pub kind: EntryKind,
    pub id: Box<str>,
    pub label: Box<str>,
}

impl MemberObject {
    pub fn new(kind: EntryKind, id: &str, label: &str) -> Arc<Self> {
        Arc::new(Self { kind, id: id.into(), label: label.into() })
    }
}

/// A membership added or removed. A full sync plans one per membership,
/// hundreds of thousands of them over the same few objects: each names its
/// two objects by shared reference (24 bytes a change; four shared strings
/// each took 72). Serialized with the object's fields flat, as before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    pub add: bool,
    pub group: Arc<MemberObject>,
    pub member: Arc<MemberObject>,
}

impl MembershipChange {
    pub fn group_id(&self) -> &str {
        &self.group.id
    }

    pub fn group_label(&self) -> &str {
        &self.group.label
    }

    pub fn member_id(&self) -> &str {
        &self.member.id
    }

    pub fn member_kind(&self) -> EntryKind {
        self.member.kind
    }

    pub fn member_label(&self) -> &str {
        &self.member.label
    }
}

impl Serialize for MembershipChange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("MembershipChange", 6)?;
        st.serialize_field("add", &self.add)?;
        st.serialize_field("group_id", self.group_id())?;
        st.serialize_field("group_label", self.group_label())?;
        st.serialize_field("member_id", self.member_id())?;
        st.serialize_field("member_kind", &self.member_kind())?;
        st.serialize_field("member_label", self.member_label())?;
        st.end()
    }
}

/// The plan for one source of one tenant.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourcePlan {
    pub source: String,
    pub changes: Vec<Change>,
    pub memberships: Vec<MembershipChange>,
    /// False when the read was incomplete: the plan then holds no deletes.
    pub read_complete: bool,
    /// Objects of this source in the store before the run (for the % guard-rail).
    pub existing_objects: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PlanCounts {
    pub creates: u64,
    pub updates: u64,
    pub deletes: u64,
    pub members_added: u64,
    pub members_removed: u64,
}

impl PlanCounts {
    pub fn is_empty(&self) -> bool {
        *self == PlanCounts::default()
    }
}

/// A tenant's plan for one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub tenant: String,
    pub sources: Vec<SourcePlan>,
}

impl Plan {
    pub fn counts(&self) -> PlanCounts {
        let mut c = PlanCounts::default();
        for s in &self.sources {
            for ch in &s.changes {
                match ch {
                    Change::Create { .. } => c.creates += 1,
                    Change::Update { .. } => c.updates += 1,
                    Change::Delete { .. } => c.deletes += 1,
                }
            }
            for m in &s.memberships {
                if m.add {
                    c.members_added += 1;
                } else {
                    c.members_removed += 1;
                }
            }
        }
        c
    }

    pub fn existing_objects(&self) -> u64 {
        self.sources.iter().map(|s| s.existing_objects).sum()
    }

    /// The delete guard-rail: `Some(reason)` when the plan deletes more than allowed.
    /// Ids of the objects this plan deletes.
    pub fn delete_ids(&self) -> Vec<&str> {
        self.sources
            .iter()
            .flat_map(|s| s.changes.iter())
            .filter_map(|c| match c {
                Change::Delete { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn guardrail(&self, safety: &SafetyConfig) -> Option<GuardrailBlock> {
        let deletes = self.counts().deletes;
        if deletes == 0 {
            return None;
        }
        let existing = self.existing_objects().max(1);
        let percent = deletes as f64 * 100.0 / existing as f64;
        if deletes > safety.max_deletes || percent > safety.max_delete_percent {
            return Some(GuardrailBlock {
                deletes,
                existing,
                percent,
                max_deletes: safety.max_deletes,
                max_delete_percent: safety.max_delete_percent,
            });
        }
        None
    }

    /// A human-readable rendering, one line per change, attributes old → new.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let c = self.counts();
        let _ = writeln!(
            out,
            "Plan for tenant '{}': {} to create, {} to update, {} to delete, {} memberships to add, {} to remove",
            self.tenant, c.creates, c.updates, c.deletes, c.members_added, c.members_removed
        );
        for s in &self.sources {
            if !s.read_complete {
                let _ = writeln!(out, "  source '{}': read incomplete, no deletes planned", s.source);
            }
            for ch in &s.changes {
                match ch {
                    Change::Create { object } => {
                        let _ = writeln!(
                            out,
                            "+ {} {} [{}]",
                            object.kind,
                            quoted_label(&object.attrs, object.kind, &object.anchor),
                            object.anchor
                        );
                        if let Some(dn) = &object.dn {
                            let _ = writeln!(out, "    dn: {}", show(dn));
                        }
                        for (k, v) in &object.attrs {
                            let _ = writeln!(out, "    {k}: {}", show_values(v));
                        }
                    }
                    Change::Update { object, changes, .. } => {
                        let _ = writeln!(
                            out,
                            "~ {} {} [{}]",
                            object.kind,
                            quoted_label(&object.attrs, object.kind, &object.anchor),
                            object.anchor
                        );
                        for a in changes {
                            let _ = writeln!(out, "    {}: {} → {}", a.attr, show_values(&a.old), show_values(&a.new));
                        }
                    }
                    Change::Delete { kind, anchor, label, .. } => {
                        let _ = writeln!(out, "- {kind} {} [{anchor}]", show(label));
                    }
                }
            }
            for m in &s.memberships {
                let sign = if m.add { '+' } else { '-' };
                let _ = writeln!(
                    out,
                    "{sign} member of group {}: {} {}",
                    show(m.group_label()),
                    m.member_kind(),
                    show(m.member_label())
                );
            }
        }
        out
    }
}

fn quoted_label(attrs: &Attributes, kind: EntryKind, anchor: &str) -> String {
    let key = if kind == EntryKind::User { "userName" } else { "displayName" };
    show(attrs.first(key).unwrap_or(anchor))
}

fn show(s: &str) -> String {
    format!("{s:?}")
}

fn show_values<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> String {
    let v: Vec<String> = values.into_iter().map(|s| show(s.as_ref())).collect();
    match v.len() {
        0 => "(none)".into(),
        1 => v.concat(),
        _ => format!("[{}]", v.join(", ")),
    }
}

/// Why the guard-rail stopped a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardrailBlock {
    pub deletes: u64,
    pub existing: u64,
    pub percent: f64,
    pub max_deletes: u64,
    pub max_delete_percent: f64,
}

impl std::fmt::Display for GuardrailBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the plan deletes {} of {} objects ({:.1}%), over the guard-rail (max_deletes = {}, max_delete_percent = {}); nothing was applied. Review it with --dry-run, then re-run with --allow-deletes to apply it once",
            self.deletes, self.existing, self.percent, self.max_deletes, self.max_delete_percent
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON a plan shows for a membership change is the flat shape it
    /// had when the change held its strings itself.
    #[test]
    fn a_membership_change_serializes_flat() {
        let group = MemberObject::new(EntryKind::Group, "g1", "staff");
        let change = MembershipChange { add: true, group, member: MemberObject::new(EntryKind::Group, "g2", "ops") };
        assert_eq!(
            serde_json::to_value(&change).expect("serialize"),
            serde_json::json!({
                "add": true,
                "group_id": "g1",
                "group_label": "staff",
                "member_id": "g2",
                "member_kind": "group",
                "member_label": "ops",
            })
        );
    }

    fn plan_with_deletes(n: u64, existing: u64) -> Plan {
        let changes = (0..n)
            .map(|i| Change::Delete {
                id: format!("id{i}"),
                kind: EntryKind::User,
                anchor: format!("a{i}"),
                dn: None,
                label: format!("u{i}"),
            })
            .collect();
        Plan {
            tenant: "t".into(),
            sources: vec![SourcePlan {
                source: "s".into(),
                changes,
                memberships: vec![],
                read_complete: true,
                existing_objects: existing,
            }],
        }
    }

    #[test]
    fn guardrail_counts_absolute_and_percentage_limits() {
        let safety = SafetyConfig { max_deletes: 10, max_delete_percent: 20.0 };
        assert!(plan_with_deletes(10, 1000).guardrail(&safety).is_none());
        assert_eq!(plan_with_deletes(11, 1000).guardrail(&safety).map(|b| b.deletes), Some(11));
        assert!(plan_with_deletes(5, 20).guardrail(&safety).is_some(), "25% is over 20%");
        assert!(plan_with_deletes(4, 20).guardrail(&safety).is_none(), "20% is allowed");
    }
}
