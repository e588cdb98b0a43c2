//! Admin operations shared by the CLI and the HTTP API, so both do exactly
//! the same thing and leave the same audit record.

use crate::config::TenantConfig;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("tenant '{tenant}': nothing with anchor '{anchor}' is quarantined")]
    NotQuarantined { tenant: String, anchor: String },
    #[error(
        "tenant '{tenant}': '{anchor}' is quarantined for \"{reason}\", not a conflict; keep settles conflicts only (dismiss instead)"
    )]
    NotAConflict { tenant: String, anchor: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
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
