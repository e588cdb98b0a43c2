//! Admin operations shared by the CLI and the HTTP API, so both do exactly
//! the same thing and leave the same audit record.

use crate::config::TenantConfig;
use std::collections::BTreeSet;

use crate::store::{RunRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("tenant '{tenant}': nothing with anchor '{anchor}' is quarantined")]
    NotQuarantined { tenant: String, anchor: String },
    #[error(
        "tenant '{tenant}': '{anchor}' is quarantined for \"{reason}\", not a conflict; keep settles conflicts only (dismiss instead)"
    )]
    NotAConflict { tenant: String, anchor: String, reason: String },
    #[error(
        "tenant '{tenant}': run {run} is {status}, not blocked by the delete guard-rail; there is nothing to approve"
    )]
    NotBlocked { tenant: String, run: i64, status: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The deletions a run blocked by the delete guard-rail planned: approving the
/// run lets a new run apply exactly these and nothing more.
pub fn approvable_deletes(record: &RunRecord) -> Result<BTreeSet<String>, AdminError> {
    record
        .summary
        .get("blocked_deletes")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .filter(|_| record.status == "blocked")
        .ok_or_else(|| AdminError::NotBlocked {
            tenant: record.tenant.clone(),
            run: record.id,
            status: record.status.clone(),
        })
}

/// What to tell an admin whose approval found a plan that now deletes more.
pub fn plan_changed_message(approved_run: i64, new_run: &serde_json::Value) -> String {
    format!(
        "the plan changed since run {approved_run} was blocked: it now deletes objects that run did not plan; review run {new_run} and approve that one"
    )
}

/// How an admin settles a quarantined entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// A conflicted unique value goes to this entry from the next run on (or,
    /// for an application edit in conflict, the directory's value wins).
    Keep,
    /// Clear the record; it comes back if the entry still fails.
    Dismiss,
}

/// Settles a quarantined entry, records it in the audit trail and says what
/// happens next.
pub fn resolve_quarantine(
    tenant: &TenantConfig,
    store: &mut dyn Store,
    anchor: &str,
    resolution: Resolution,
    actor: &str,
) -> Result<String, AdminError> {
    let id = tenant.id.as_str();
    let records = store.quarantine(id)?;
    let Some(record) = records.iter().find(|q| q.item.anchor.as_deref() == Some(anchor)) else {
        return Err(AdminError::NotQuarantined { tenant: id.into(), anchor: anchor.into() });
    };
    if resolution == Resolution::Keep && record.item.stage == "conflict" {
        if let Some(attribute) = crate::conflict::parse_app_edit_reason(&record.item.reason) {
            // Keeping the entry as the directory has it drops the application's edit.
            let kind = record.item.kind.unwrap_or(crate::source::EntryKind::User);
            let object_id = crate::model::object_id(id, &record.item.source, kind, anchor);
            let clear = crate::conflict::EditAction::Clear { object_id, attribute: attribute.to_string() };
            store.settle_app_edits(id, std::slice::from_ref(&clear))?;
            store.dismiss_quarantine(id, anchor)?;
            let detail = serde_json::json!({ "action": "quarantine.resolve", "externalId": anchor, "resolution": "keep-directory", "attribute": attribute });
            store.audit(id, "admin", actor, &detail)?;
            return Ok(format!(
                "tenant '{id}': the application's edit of {attribute} on {anchor} is dropped; the directory's value applies from the next run on"
            ));
        }
    }
    match resolution {
        Resolution::Keep => {
            let Some((key, value)) = crate::conflict::parse_reason(&tenant.conflicts, &record.item.reason)
                .filter(|_| record.item.stage == "conflict")
            else {
                return Err(AdminError::NotAConflict {
                    tenant: id.into(),
                    anchor: anchor.into(),
                    reason: record.item.reason.clone(),
                });
            };
            store.decide_conflict(id, &key, &value, anchor)?;
            let detail = serde_json::json!({ "action": "quarantine.resolve", "externalId": anchor, "resolution": "keep", "key": key, "value": value });
            store.audit(id, "admin", actor, &detail)?;
            Ok(format!("tenant '{id}': {key} '{value}' goes to {anchor} from the next run on"))
        }
        Resolution::Dismiss => {
            let n = store.dismiss_quarantine(id, anchor)?;
            let detail = serde_json::json!({ "action": "quarantine.resolve", "externalId": anchor, "resolution": "dismiss", "records": n });
            store.audit(id, "admin", actor, &detail)?;
            Ok(format!("tenant '{id}': dismissed {n} quarantine record(s) of {anchor}"))
        }
    }
}
