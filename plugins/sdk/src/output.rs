//! What a plugin returns for one entry.

use std::cell::Cell;

use roster_wire::{Attrs, Packer, WireError};

use crate::bindings::roster::plugin::types as wit;
use crate::entry::{Entry, EntryKind};

thread_local! {
    /// The packing buffer, reused across entries: an [`Output`] borrows it and
    /// gives it back, so a batch allocates one exactly-sized `Vec` per result
    /// instead of growing a fresh buffer every time.
    static SCRATCH: Cell<Packer> = Cell::new(Packer::with_capacity(1024));
}

/// Builds the application-side attributes of one entry.
///
/// Names are SCIM paths: `userName`, `name.givenName`, `name.familyName`,
/// `displayName`, `email` (one primary work address) or `emails`, `active`.
/// `externalId` is the entry's anchor and cannot be set. Set each name once;
/// values are passed through as given (empty strings included).
///
/// ```
/// use roster_plugin_sdk::prelude::*;
/// # use roster_plugin_sdk::MapResult; // in the prelude with the `mapper` feature
/// let result = Output::user()
///     .set("userName", "jdoe")
///     .set_opt("displayName", Some("Jane Doe"))
///     .set_opt("name.givenName", None::<&str>)
///     .set_all("emails", ["jane@x.org", "jd@x.org"])
///     .set_bool("active", true)
///     .finish();
/// let MapResult::Mapped(mapped) = result else { panic!() };
/// let attrs = mapped.attrs().unwrap();
/// assert_eq!(attrs.get("userName").unwrap().first(), Some(&b"jdoe"[..]));
/// assert_eq!(attrs.get("emails").unwrap().len(), 2);
/// assert!(attrs.get("name.givenName").is_none());
/// ```
#[derive(Debug)]
pub struct Output {
    kind: EntryKind,
    packer: Packer,
    attrs: usize,
}

impl Output {
    /// An empty output of this kind.
    pub fn new(kind: EntryKind) -> Self {
        let mut packer = SCRATCH.with(Cell::take);
        packer.clear();
        Self { kind, packer, attrs: 0 }
    }

    pub fn user() -> Self {
        Self::new(EntryKind::User)
    }

    pub fn group() -> Self {
        Self::new(EntryKind::Group)
    }

    /// An empty output of the same kind as `entry`.
    pub fn for_entry(entry: &Entry<'_>) -> Self {
        Self::new(entry.kind())
    }

    pub fn kind(&self) -> EntryKind {
        self.kind
    }

    /// How many attributes were set so far.
    pub fn len(&self) -> usize {
        self.attrs
    }

    pub fn is_empty(&self) -> bool {
        self.attrs == 0
    }

    /// Sets a single-valued attribute.
    pub fn set(&mut self, name: &str, value: impl AsRef<str>) -> &mut Self {
        self.packer.attr(name, &[value.as_ref()]);
        self.attrs += 1;
        self
    }

    /// Sets a single-valued attribute when there is a value; `None` leaves it unset.
    pub fn set_opt(&mut self, name: &str, value: Option<impl AsRef<str>>) -> &mut Self {
        if let Some(v) = value {
            self.set(name, v);
        }
        self
    }

    /// Sets a multi-valued attribute; no values leaves it unset.
    pub fn set_all<I>(&mut self, name: &str, values: I) -> &mut Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut iter = values.into_iter();
        match (iter.next(), iter.next()) {
            (None, _) => {}
            (Some(one), None) => {
                self.set(name, one);
            }
            (Some(a), Some(b)) => {
                let mut all = Vec::with_capacity(2 + iter.size_hint().0);
                all.extend([a, b]);
                all.extend(iter);
                self.packer.attr_iter(name, all.len(), all.iter().map(|v| v.as_ref().as_bytes()));
                self.attrs += 1;
            }
        }
        self
    }

    /// Sets a boolean attribute (`active`) as `"true"` / `"false"`.
    pub fn set_bool(&mut self, name: &str, value: bool) -> &mut Self {
        self.set(name, if value { "true" } else { "false" })
    }

    /// The packed result. Leaves this builder empty, ready for reuse.
    pub fn to_mapped(&mut self) -> Mapped {
        let attributes = self.packer.as_bytes().to_vec();
        self.packer.clear();
        self.attrs = 0;
        Mapped { kind: self.kind, attributes }
    }

    /// `MapResult::Mapped` with what was set. Leaves this builder empty.
    pub fn finish(&mut self) -> MapResult {
        MapResult::Mapped(self.to_mapped())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        let packer = std::mem::take(&mut self.packer);
        SCRATCH.with(|s| s.set(packer));
    }
}

impl From<Output> for MapResult {
    fn from(mut out: Output) -> Self {
        out.finish()
    }
}

impl From<&mut Output> for MapResult {
    fn from(out: &mut Output) -> Self {
        out.finish()
    }
}

/// A mapped entry: its kind and packed attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub kind: EntryKind,
    /// Packed in the `roster-wire` format.
    pub attributes: Vec<u8>,
}

impl Mapped {
    /// Reads the packed attributes back (for tests and debugging).
    pub fn attrs(&self) -> Result<Attrs<'_>, WireError> {
        Attrs::parse(&self.attributes)
    }
}

/// The outcome for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapResult {
    /// The entry as the application should see it.
    Mapped(Mapped),
    /// Deliberately left out; the reason is kept for `roster explain`.
    Skip(String),
    /// Could not be mapped; the entry is quarantined with this message.
    Error(String),
}

impl MapResult {
    pub fn skip(reason: impl Into<String>) -> Self {
        MapResult::Skip(reason.into())
    }

    pub fn error(message: impl Into<String>) -> Self {
        MapResult::Error(message.into())
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self, MapResult::Mapped(_))
    }

    /// Converts to the WIT variant.
    pub fn into_raw(self) -> wit::MapResult {
        match self {
            MapResult::Mapped(m) => {
                wit::MapResult::Mapped(wit::Mapped { kind: m.kind.into_raw(), attributes: m.attributes })
            }
            MapResult::Skip(s) => wit::MapResult::Skip(s),
            MapResult::Error(s) => wit::MapResult::Error(s),
        }
    }
}

impl From<Mapped> for MapResult {
    fn from(m: Mapped) -> Self {
        MapResult::Mapped(m)
    }
}
