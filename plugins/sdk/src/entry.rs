//! A source entry, read in place from the buffer the host sent.

use std::borrow::Cow;

use roster_wire::{Attr, Attrs, WireError};

use crate::bindings::roster::plugin::types as wit;

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKind {
    User,
    Group,
}

impl EntryKind {
    pub fn from_raw(kind: wit::EntryKind) -> Self {
        match kind {
            wit::EntryKind::User => EntryKind::User,
            wit::EntryKind::Group => EntryKind::Group,
        }
    }

    pub fn into_raw(self) -> wit::EntryKind {
        match self {
            EntryKind::User => wit::EntryKind::User,
            EntryKind::Group => wit::EntryKind::Group,
        }
    }

    /// `"user"` or `"group"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::User => "user",
            EntryKind::Group => "group",
        }
    }
}

/// One source entry. Borrows the host's buffers: reading attributes copies
/// nothing. Attribute names are matched case-insensitively, as in LDAP.
///
/// Values are bytes (`objectGUID`, `jpegPhoto` are binary); the `*_str`
/// accessors give the UTF-8 ones.
///
/// ```
/// use roster_plugin_sdk::prelude::*;
/// let packed = roster_wire::pack([("uid", ["jdoe"].as_slice()), ("mail", &["a@x.org", "b@x.org"])]);
/// let entry = Entry::new("4f1c…", None, EntryKind::User, &packed).unwrap();
/// assert_eq!(entry.first_str("UID"), Some("jdoe"));
/// assert_eq!(entry.values_str("mail").collect::<Vec<_>>(), ["a@x.org", "b@x.org"]);
/// assert!(!entry.has("cn"));
/// ```
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    anchor: &'a str,
    dn: Option<&'a str>,
    kind: EntryKind,
    attrs: Attrs<'a>,
}

impl<'a> Entry<'a> {
    /// An entry over a packed attribute buffer (validated once, here).
    pub fn new(anchor: &'a str, dn: Option<&'a str>, kind: EntryKind, packed: &'a [u8]) -> Result<Self, WireError> {
        Ok(Self { anchor, dn, kind, attrs: Attrs::parse(packed)? })
    }

    /// A view of the WIT record.
    pub fn from_raw(entry: &'a wit::Entry) -> Result<Self, WireError> {
        Self::new(&entry.anchor, entry.dn.as_deref(), EntryKind::from_raw(entry.kind), &entry.attributes)
    }

    /// The immutable anchor (entryUUID, objectGUID, Graph id).
    pub fn anchor(&self) -> &'a str {
        self.anchor
    }

    /// The DN, where the source has one. For display only: DNs change.
    pub fn dn(&self) -> Option<&'a str> {
        self.dn
    }

    pub fn kind(&self) -> EntryKind {
        self.kind
    }

    pub fn is_user(&self) -> bool {
        self.kind == EntryKind::User
    }

    pub fn is_group(&self) -> bool {
        self.kind == EntryKind::Group
    }

    /// An attribute by name, case-insensitively; `None` when absent.
    pub fn get(&self, name: &str) -> Option<Attr<'a>> {
        self.attrs.get(name).copied()
    }

    /// True when the attribute is present with at least one value.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some_and(|a| !a.is_empty())
    }

    /// All values of an attribute, as bytes (none when absent).
    pub fn values(&self, name: &str) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        self.get(name).into_iter().flat_map(|a| a.values())
    }

    /// The UTF-8 values of an attribute; values that are not UTF-8 are skipped.
    pub fn values_str(&self, name: &str) -> impl Iterator<Item = &'a str> + use<'a> {
        self.values(name).filter_map(|v| std::str::from_utf8(v).ok())
    }

    /// All values of an attribute as text, invalid UTF-8 replaced by U+FFFD
    /// (borrowed when valid).
    pub fn values_lossy(&self, name: &str) -> impl Iterator<Item = Cow<'a, str>> + use<'a> {
        self.values(name).map(String::from_utf8_lossy)
    }

    /// The first value, as bytes.
    pub fn first(&self, name: &str) -> Option<&'a [u8]> {
        self.get(name).and_then(|a| a.first())
    }

    /// The first value, if it is UTF-8.
    pub fn first_str(&self, name: &str) -> Option<&'a str> {
        self.first(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every attribute, in the order the host packed them.
    pub fn attributes(&self) -> impl Iterator<Item = Attr<'a>> + '_ {
        self.attrs.iter().copied()
    }

    /// The validated attribute view itself.
    pub fn attrs(&self) -> &Attrs<'a> {
        &self.attrs
    }
}
