//! The application's view of users and groups, shared by diff, plan, store and output.

mod attributes;

pub use attributes::{Attributes, Values};

use crate::source::EntryKind;

/// Roster's own stable id for an object: derived from tenant, source, kind and
/// anchor, so it survives renames, moves and even a rebuilt store.
pub fn object_id(tenant: &str, source: &str, kind: EntryKind, anchor: &str) -> String {
    const NAMESPACE: uuid::Uuid = uuid::uuid!("5b0c3a8e-2f4e-4c55-9f2a-6f1d3c7e9a10");
    let name = format!("{tenant}\u{0}{source}\u{0}{}\u{0}{anchor}", kind.as_str());
    uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
}

/// A user or group as the pipeline wants it to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub id: String,
    pub kind: EntryKind,
    pub source: String,
    pub anchor: String,
    pub dn: Option<String>,
    pub attrs: Attributes,
}

/// A user or group as the store has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: String,
    pub kind: EntryKind,
    pub source: String,
    pub anchor: String,
    pub dn: Option<String>,
    pub attrs: Attributes,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl Stored {
    /// A human name for messages and plans: userName or displayName, else the anchor.
    pub fn label(&self) -> &str {
        label(&self.attrs, self.kind).unwrap_or(&self.anchor)
    }
}

impl Desired {
    pub fn label(&self) -> &str {
        label(&self.attrs, self.kind).unwrap_or(&self.anchor)
    }
}

fn label(attrs: &Attributes, kind: EntryKind) -> Option<&str> {
    let key = match kind {
        EntryKind::User => "userName",
        EntryKind::Group => "displayName",
    };
    attrs.first(key)
}

/// `active` as mapped: absent means active; "false", "0", "no" mean inactive.
pub fn is_active(attrs: &Attributes) -> bool {
    match attrs.first("active") {
        None => true,
        Some(v) => !matches!(v.trim().to_ascii_lowercase().as_str(), "false" | "0" | "no" | "off"),
    }
}
