//! The mapping memo: an entry whose source content and pipeline are unchanged
//! since the last run is not mapped again.
//!
//! Mapping (the mapper and custom-attribute plugins, then the host's privacy
//! digests) is a pure function of the entry and of the pipeline: plugins see
//! no clock and no randomness they were not granted, and everything they are
//! configured with is in the pipeline fingerprint. So the memo keeps, per
//! object, two digests: of the entry as read together with the pipeline
//! (`input`), and of the attributes mapping made of it (`output`).
//!
//! A run takes an entry's attributes from the store instead of mapping it
//! only when both hold: the entry's input digest is the remembered one, and
//! the stored object's attributes digest to the remembered output. The second
//! check is what makes this safe: anything that changed the stored attributes
//! after mapping — conflict resolution, an app edit, a plan the guard-rails
//! blocked — makes the digests differ, and the entry is mapped as usual.
//!
//! The memo holds digests only, never values, and is a cache: a lost or stale
//! row costs a mapping call, never a wrong result. Not used when the tenant
//! grants plugins the real clock (their output may depend on the time).

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use crate::diff::Snapshot;
use crate::model::Attributes;
use crate::source::{EntryKind, MemberRef, SourceEntry};
use crate::store::MemoRow;

/// The attribute the role stage owns when it runs: it replaces whatever
/// mapping put there, so the memo neither compares nor restores it.
const ROLE_ATTRIBUTE: &str = "roles";

/// What, besides the entry, decides what mapping makes of it.
#[derive(Clone)]
pub struct Seed {
    digest: [u8; 32],
    roles_stage: bool,
}

impl Seed {
    /// `fingerprint`: the pipeline's (plugins, their configuration, the
    /// source definitions); `sensitive`: the attributes the host digests.
    pub fn new(fingerprint: &str, sensitive: &[String], roles_stage: bool) -> Self {
        let mut h = Sha256::new();
        field(&mut h, b"roster mapping memo 1");
        // The host's own steps (privacy digests, custom-attribute checks) may change between releases.
        field(&mut h, env!("CARGO_PKG_VERSION").as_bytes());
        field(&mut h, fingerprint.as_bytes());
        let mut names: Vec<String> = sensitive.iter().map(|n| n.to_ascii_lowercase()).collect();
        names.sort();
        for n in &names {
            field(&mut h, n.as_bytes());
        }
        field(&mut h, &[u8::from(roles_stage)]);
        Self { digest: h.finalize().into(), roles_stage }
    }

    /// Digest of an entry as read, under this seed.
    pub fn input(&self, entry: &SourceEntry) -> crate::store::MemoDigest {
        let mut h = Sha256::new();
        h.update(self.digest);
        field(&mut h, entry.kind.as_str().as_bytes());
        field(&mut h, entry.anchor.as_bytes());
        match &entry.dn {
            Some(dn) => field(&mut h, dn.as_bytes()),
            None => h.update([0xff]),
        }
        h.update((entry.attrs.len() as u64).to_le_bytes());
        for (name, values) in &entry.attrs {
            field(&mut h, name.as_bytes());
            h.update((values.len() as u64).to_le_bytes());
            for v in values {
                field(&mut h, v);
            }
        }
        h.update((entry.members.len() as u64).to_le_bytes());
        for m in &entry.members {
            match m {
                MemberRef::Dn(dn) => {
                    h.update([b'd']);
                    field(&mut h, dn.as_bytes());
                }
                MemberRef::Anchor(a) => {
                    h.update([b'a']);
                    field(&mut h, a.as_bytes());
                }
            }
        }
        short_digest(h)
    }

    /// Digest of mapped attributes (absent and empty are the same), without
    /// the role attribute when the role stage runs.
    pub fn output(&self, attrs: &Attributes) -> crate::store::MemoDigest {
        let mut h = Sha256::new();
        for (name, values) in attrs {
            if values.is_empty() || (self.roles_stage && name == ROLE_ATTRIBUTE) {
                continue;
            }
            field(&mut h, name.as_bytes());
            h.update((values.len() as u64).to_le_bytes());
            for v in values {
                field(&mut h, v.as_bytes());
            }
        }
        short_digest(h)
    }
}

/// Length-prefixed, so no two different field sequences feed the same bytes.
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// 128 bits: what tells one version of an entry from the next.
fn short_digest(h: Sha256) -> crate::store::MemoDigest {
    let mut out = [0; 16];
    out.copy_from_slice(&h.finalize()[..16]);
    out
}

/// One run's view of a source's memo. Until it is loaded it only records
/// what mapping makes of each entry (a small incremental read); once loaded,
/// with the whole stored state it checks against, it also recalls.
pub struct Memo {
    seed: Seed,
    rows: HashMap<String, MemoRow>,
    /// The source's whole stored state, once loaded: used for the checks and
    /// then as the run's snapshot to merge over and diff against.
    snapshot: Option<Snapshot>,
    /// Entries that were not mapped again.
    pub hits: u64,
    fresh: Vec<(String, MemoRow)>,
}

/// What a run leaves to write to the memo once it is known not to be aborted.
#[derive(Debug, Default)]
pub struct MemoWrites {
    pub rows: Vec<(String, MemoRow)>,
    pub removed: Vec<String>,
}

impl Memo {
    /// A memo that records only, until [`Memo::load`].
    pub fn recording(seed: Seed) -> Self {
        Self { seed, rows: HashMap::new(), snapshot: None, hits: 0, fresh: Vec::new() }
    }

    pub fn is_loaded(&self) -> bool {
        self.snapshot.is_some()
    }

    /// From here on, recalls too; what was recorded so far is kept.
    pub fn load(&mut self, rows: HashMap<String, MemoRow>, snapshot: Snapshot) {
        self.rows = rows;
        self.snapshot = Some(snapshot);
    }

    /// The attributes of an entry that need no mapping: as stored, when both
    /// digests say they are what mapping would make of it now.
    pub fn recall(&mut self, id: &str, entry: &SourceEntry) -> Option<Attributes> {
        let row = self.rows.get(id)?;
        let stored = self.snapshot.as_ref()?.objects.get(id)?;
        if stored.kind != entry.kind || self.seed.output(&stored.attrs) != row.output {
            return None;
        }
        if self.seed.input(entry) != row.input {
            return None;
        }
        self.hits += 1;
        let mut attrs = stored.attrs.clone();
        if self.seed.roles_stage && entry.kind == EntryKind::User {
            attrs.remove(ROLE_ATTRIBUTE);
        }
        Some(attrs)
    }

    /// Notes what mapping made of an entry, to be written after the run.
    pub fn remember(&mut self, id: &str, entry: &SourceEntry, attrs: &Attributes) {
        // The role plugin reads the user's attributes, mapped role attribute
        // included: restoring them without it would not be the same input.
        if self.seed.roles_stage && attrs.contains_key(ROLE_ATTRIBUTE) {
            return;
        }
        let row = MemoRow { input: self.seed.input(entry), output: self.seed.output(attrs) };
        if self.rows.get(id) != Some(&row) {
            self.fresh.push((id.to_string(), row));
        }
    }

    /// The stored state if it was loaded, and the writes: new rows, and —
    /// after a complete read of the whole source — the rows of objects it no
    /// longer has.
    pub fn finish(self, seen: Option<&HashSet<&str>>) -> (Option<Snapshot>, MemoWrites) {
        let removed = match (seen, &self.snapshot) {
            (Some(seen), Some(_)) => self.rows.keys().filter(|id| !seen.contains(id.as_str())).cloned().collect(),
            _ => Vec::new(),
        };
        (self.snapshot, MemoWrites { rows: self.fresh, removed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Stored;

    fn entry(mail: &str) -> SourceEntry {
        SourceEntry {
            anchor: "a-1".into(),
            dn: Some("uid=ann,ou=people,dc=example".into()),
            kind: EntryKind::User,
            attrs: vec![("uid".into(), vec![b"ann".to_vec()]), ("mail".into(), vec![mail.as_bytes().to_vec()])],
            members: Vec::new(),
        }
    }

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        pairs.iter().map(|(k, v)| (k.to_string(), vec![v.to_string()])).collect()
    }

    fn stored(a: Attributes) -> Snapshot {
        let mut s = Snapshot::default();
        s.objects.insert(
            "id-1".into(),
            Stored {
                id: "id-1".into(),
                kind: EntryKind::User,
                source: "s".into(),
                anchor: "a-1".into(),
                dn: None,
                attrs: a,
                version: 1,
                created_at: String::new(),
                updated_at: String::new(),
            },
        );
        s
    }

    fn loaded(seed: Seed, rows: HashMap<String, MemoRow>, snapshot: Snapshot) -> Memo {
        let mut memo = Memo::recording(seed);
        memo.load(rows, snapshot);
        memo
    }

    /// A memo as the last run left it: `mapped` is what it made of `e`.
    fn memo_after(seed: &Seed, e: &SourceEntry, mapped: &Attributes, store_holds: Attributes) -> Memo {
        let mut first = loaded(seed.clone(), HashMap::new(), Snapshot::default());
        first.remember("id-1", e, mapped);
        let (_, writes) = first.finish(None);
        loaded(seed.clone(), writes.rows.into_iter().collect(), stored(store_holds))
    }

    #[test]
    fn an_unchanged_entry_is_recalled_and_any_change_maps_it_again() {
        let seed = Seed::new("fp", &[], false);
        let mapped = attrs(&[("userName", "ann"), ("email", "ann@x")]);
        let e = entry("ann@x");

        let mut memo = memo_after(&seed, &e, &mapped, mapped.clone());
        assert_eq!(memo.recall("id-1", &e), Some(mapped.clone()));
        assert_eq!(memo.hits, 1);

        // The entry changed.
        assert_eq!(memo.recall("id-1", &entry("ann@y")), None);
        // The store holds something else than mapping made (conflict resolution, an app edit).
        let mut memo = memo_after(&seed, &e, &mapped, attrs(&[("userName", "ann"), ("email", "other@x")]));
        assert_eq!(memo.recall("id-1", &e), None);
        // The pipeline changed.
        let mut memo = memo_after(&seed, &e, &mapped, mapped.clone());
        memo.seed = Seed::new("fp2", &[], false);
        assert_eq!(memo.recall("id-1", &e), None);
        let mut memo = memo_after(&seed, &e, &mapped, mapped.clone());
        memo.seed = Seed::new("fp", &["mail".into()], false);
        assert_eq!(memo.recall("id-1", &e), None);
        // Never stored.
        let mut memo = memo_after(&seed, &e, &mapped, mapped.clone());
        assert_eq!(memo.recall("id-2", &e), None);
    }

    #[test]
    fn digests_are_stored_as_hex_and_a_damaged_row_is_not_recalled() {
        let seed = Seed::new("fp", &[], false);
        let row = MemoRow { input: seed.input(&entry("ann@x")), output: seed.output(&attrs(&[("userName", "ann")])) };
        assert_eq!(row.input_hex().len(), 32);
        assert_eq!(MemoRow::from_hex(&row.input_hex(), &row.output_hex()), Some(row.clone()));
        assert_eq!(MemoRow::from_hex("not hex", &row.output_hex()), None);
        assert_eq!(MemoRow::from_hex(&row.input_hex()[..30], &row.output_hex()), None, "too short");
    }

    #[test]
    fn a_recording_memo_recalls_nothing_until_loaded_and_keeps_what_it_recorded() {
        let seed = Seed::new("fp", &[], false);
        let mapped = attrs(&[("userName", "ann")]);
        let e = entry("ann@x");
        let mut memo = Memo::recording(seed.clone());
        memo.remember("id-1", &e, &mapped);
        assert_eq!(memo.recall("id-1", &e), None);
        let earlier = MemoRow { input: seed.input(&e), output: seed.output(&mapped) };
        memo.load([("id-1".to_string(), earlier)].into_iter().collect(), stored(mapped.clone()));
        assert!(memo.is_loaded());
        assert_eq!(memo.recall("id-1", &e), Some(mapped));
        let (snapshot, writes) = memo.finish(None);
        assert!(snapshot.is_some());
        assert_eq!(writes.rows.len(), 1, "the row recorded before loading is still written");
    }

    #[test]
    fn the_role_attribute_is_left_to_the_role_stage() {
        let seed = Seed::new("fp", &[], true);
        let mapped = attrs(&[("userName", "ann")]);
        let e = entry("ann@x");
        let mut with_roles = mapped.clone();
        with_roles.insert("roles".into(), vec!["admin".into()]);
        let mut memo = memo_after(&seed, &e, &mapped, with_roles);
        assert_eq!(memo.recall("id-1", &e), Some(mapped.clone()), "stored roles are not restored");

        // A mapper that sets roles itself is never skipped while the role stage runs.
        let mut memo = loaded(seed, HashMap::new(), Snapshot::default());
        memo.remember("id-1", &e, &attrs(&[("userName", "ann"), ("roles", "x")]));
        assert!(memo.finish(None).1.rows.is_empty());
    }

    #[test]
    fn digests_separate_fields_and_unchanged_rows_are_not_rewritten() {
        let seed = Seed::new("fp", &[], false);
        let mut a = entry("x");
        a.attrs = vec![("ab".into(), vec![b"c".to_vec()])];
        let mut b = entry("x");
        b.attrs = vec![("a".into(), vec![b"bc".to_vec()])];
        assert_ne!(seed.input(&a), seed.input(&b));
        assert_eq!(
            seed.output(&attrs(&[("x", "1")])),
            seed.output(&{
                let mut m = attrs(&[("x", "1")]);
                m.insert("empty".into(), Vec::new());
                m
            })
        );

        let mapped = attrs(&[("userName", "ann")]);
        let e = entry("ann@x");
        let mut memo = memo_after(&seed, &e, &mapped, mapped.clone());
        memo.remember("id-1", &e, &mapped);
        let seen: HashSet<&str> = HashSet::new();
        let (_, writes) = memo.finish(Some(&seen));
        assert!(writes.rows.is_empty(), "the same row is not written again");
        assert_eq!(writes.removed, vec!["id-1".to_string()], "a complete read that did not see it drops it");
    }
}
