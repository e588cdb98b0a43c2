//! Sources: where directory entries come from.
//!
//! A source reads users and groups from one directory and hands them to the
//! pipeline as [`SourceItem`]s, streaming, so memory does not grow with the size
//! of the directory. A source knows nothing about mapping, the store or other
//! tenants: it gets its own configuration (secrets already resolved) and nothing
//! else.
//!
//! Contract every source meets:
//! - identity is the configured anchor attribute, never the DN;
//! - an entry that cannot be turned into a [`SourceEntry`] (no anchor, say) is
//!   reported as [`SourceItem::Rejected`] so it is quarantined, not dropped;
//! - [`Source::read`] returns `Ok` only after a complete, successful read; the
//!   pipeline plans deletes only then.

pub mod ad;
pub mod connector;
pub mod graph;
pub mod ldap;
pub mod ldif;

use std::fmt;

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKind {
    User,
    Group,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::User => "user",
            EntryKind::Group => "group",
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference from a group to one of its members, as the source knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MemberRef {
    /// A member DN (`member`, `uniqueMember`); resolved to an anchor by the pipeline.
    Dn(String),
    /// A member already known by anchor (Graph ids, DirSync).
    Anchor(String),
}

/// One entry read from a directory, before any mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    /// Immutable identity (entryUUID, objectGUID as a GUID string, Graph id).
    pub anchor: String,
    /// For display and scope only.
    pub dn: Option<String>,
    pub kind: EntryKind,
    /// All attributes read, multi-valued and binary-safe. Names as the server
    /// spells them; lookups are case-insensitive.
    pub attrs: Vec<(String, Vec<Vec<u8>>)>,
    /// For groups: their direct members. Empty for users.
    pub members: Vec<MemberRef>,
}

impl SourceEntry {
    /// Values of an attribute, case-insensitively.
    pub fn values(&self, name: &str) -> Option<&[Vec<u8>]> {
        self.attrs.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// The first value of an attribute as UTF-8 text, if it is text.
    pub fn first_str(&self, name: &str) -> Option<&str> {
        self.values(name)?.first().and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// An item in the stream a source produces.
#[derive(Debug, Clone)]
pub enum SourceItem {
    Entry(SourceEntry),
    /// An entry the source saw but could not read; it is quarantined with the reason.
    Rejected {
        dn: Option<String>,
        anchor: Option<String>,
        kind: Option<EntryKind>,
        reason: String,
    },
}

/// Counts a source reports when its read completes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadSummary {
    pub users: u64,
    pub groups: u64,
    pub rejected: u64,
    /// Search requests sent, pages fetched, etc.: what a test or `roster explain`
    /// needs to see how the source read the directory.
    pub requests: u64,
    /// `Some` for an incremental read: only what changed was read, and these
    /// anchors were deleted. `None`: the read saw the whole directory.
    pub delta: Option<Delta>,
    /// State for the next read (an incremental source's high-water mark),
    /// saved only once the run that used this read is applied.
    pub state: Vec<(String, String)>,
    /// The request log: the page size every paged search asked for, and
    /// follow-up requests for ranged attributes.
    pub page_size: u64,
    pub range_requests: u64,
    /// Time spent waiting on the server's throttling (429, Retry-After) and retries.
    pub waited_ms: u64,
}

/// What an incremental read found deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// Anchors of deleted objects (users or groups).
    pub deleted: Vec<String>,
    /// What the read continued from, for logs.
    pub since: String,
    /// Anchors of users that still exist but may not sign in any more (Entra
    /// ID's soft delete): their stored version is kept with `active = false`.
    pub deactivated: Vec<String>,
    /// Anchors of groups read in this delta whose members are additions only:
    /// their stored memberships stay, less `removed_members`.
    pub partial_groups: Vec<String>,
    /// (group anchor, member anchor) memberships that ended.
    pub removed_members: Vec<(String, String)>,
    /// For each kind listed, every anchor of that kind still in the
    /// directory: stored objects of the kind that are not listed (nor read)
    /// were deleted (RFC 4533's present phase).
    pub present: Vec<(EntryKind, std::collections::HashSet<String>)>,
}

/// Why a read failed. Every variant names the source, and none carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source '{source_name}': cannot read {path}: {message}")]
    File { source_name: String, path: String, message: String },
    #[error("source '{source_name}': {path}:{line}: {message}")]
    Parse { source_name: String, path: String, line: u64, message: String },
    #[error("source '{source_name}': cannot connect to {url}: {message}")]
    Connect { source_name: String, url: String, message: String },
    #[error("source '{source_name}': TLS with {url} failed: {message}")]
    Tls { source_name: String, url: String, message: String },
    #[error("source '{source_name}': bind as '{bind_dn}' failed: {message}")]
    Bind { source_name: String, bind_dn: String, message: String },
    #[error("source '{source_name}': search of '{base}' failed: {message}")]
    Search { source_name: String, base: String, message: String },
    #[error("source '{source_name}': {message}")]
    Other { source_name: String, message: String },
    #[error("source '{source_name}': authentication failed: {message}")]
    Auth { source_name: String, message: String },
    /// The consumer stopped the read (for instance the run was aborted).
    #[error("source '{source_name}': read stopped: {message}")]
    Stopped { source_name: String, message: String },
}

/// Where a source sends what it reads. Returning `Err` stops the read.
pub trait Sink {
    fn item(&mut self, item: SourceItem) -> Result<(), String>;
}

impl<F: FnMut(SourceItem) -> Result<(), String>> Sink for F {
    fn item(&mut self, item: SourceItem) -> Result<(), String> {
        self(item)
    }
}

/// A directory the pipeline can read.
pub trait Source {
    /// The source's name in the tenant's configuration.
    fn name(&self) -> &str;

    /// Reads every user and group in scope, streaming them into `sink`.
    /// Returns `Ok` only when the read was complete.
    fn read(&mut self, sink: &mut dyn Sink) -> Result<ReadSummary, SourceError>;

    /// Hands an incremental source the state it returned after the last
    /// applied run (empty: read everything). Sources that always read the
    /// whole directory ignore it.
    fn resume(&mut self, _state: &std::collections::BTreeMap<String, String>) {}

    /// Checks that the source can be read and says what it found, for
    /// `roster source test`. By default: a full read that keeps nothing.
    fn check(&mut self) -> Result<String, SourceError> {
        let started = std::time::Instant::now();
        let mut ignore = |_: SourceItem| Ok(());
        let s = self.read(&mut ignore)?;
        Ok(format!(
            "read {} users and {} groups ({} rejected) in {} ms",
            s.users,
            s.groups,
            s.rejected,
            started.elapsed().as_millis()
        ))
    }
}
