//! What every backend computes the same way: lookup keys, event payloads and
//! their idempotency keys, the audit hash chain, the detail of audit records.
//! Kept free of any database so that SQLite and PostgreSQL write byte-identical
//! rows for the same plan.

use super::{AuditRecord, EventRecord, QuarantineItem, RunOutcome};
use crate::model::{Attributes, Stored};
use crate::plan::{AttrChange, Change, MembershipChange, Plan, PlannedObject};
use crate::source::EntryKind;
use crate::util::now_rfc3339;

use super::StoreError;

/// The columns an object is read with, in the order [`StoredRow`] holds them.
pub(crate) const USER_COLUMNS: &str = "id, source, anchor, dn, attrs, version, created_at, updated_at";

/// The `USER_COLUMNS` of one row, before its attributes are parsed.
pub(crate) type StoredRow = (String, String, String, Option<String>, String, i64, String, String);

pub(crate) fn stored_from_row(row: StoredRow, kind: EntryKind) -> Result<Stored, StoreError> {
    let (id, source, anchor, dn, attrs, version, created_at, updated_at) = row;
    let attrs: Attributes = serde_json::from_str(&attrs)
        .map_err(|e| StoreError::Corrupt(format!("{kind} {id}: attributes are not valid JSON: {e}")))?;
    Ok(Stored { id, kind, source, anchor, dn, attrs, version, created_at, updated_at })
}

pub(crate) fn table(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::User => "users",
        EntryKind::Group => "groups",
    }
}

/// The kind stored as text (`EntryKind::as_str`).
pub(crate) fn entry_kind(s: &str) -> EntryKind {
    if s == "group" { EntryKind::Group } else { EntryKind::User }
}

pub(crate) fn label(o: &PlannedObject) -> String {
    let key = if o.kind == EntryKind::User { "userName" } else { "displayName" };
    o.attrs.first(key).map_or_else(|| o.anchor.clone(), str::to_string)
}

pub(crate) fn first(attrs: &Attributes, key: &str) -> Option<String> {
    attrs.first(key).map(str::to_string)
}

/// The host-computed lookup keys of an object's row (a database's own
/// `lower()` or collation would not agree with `dn::normalize_dn`).
pub(crate) fn dn_key(dn: Option<&str>) -> Option<String> {
    dn.map(crate::dn::normalize_dn)
}

pub(crate) fn user_name_key(attrs: &Attributes) -> Option<String> {
    first(attrs, "userName").map(|n| n.to_lowercase())
}

/// What identifies a quarantined entry across runs: its anchor, else its
/// normalised DN, else the problem itself.
pub(crate) fn quarantine_key(it: &QuarantineItem) -> String {
    it.anchor
        .as_deref()
        .map(|a| format!("anchor:{a}"))
        .or_else(|| it.dn.as_deref().map(|d| format!("dn:{}", crate::dn::normalize_dn(d))))
        .unwrap_or_else(|| format!("reason:{}", it.reason))
}

pub(crate) fn parse_summary(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or(serde_json::Value::Null)
}

pub(crate) fn parse_audit_detail(detail: String) -> serde_json::Value {
    serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail))
}

pub(crate) fn parse_token_tenants(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

pub(crate) fn token_tenants_json(tenants: &[String]) -> String {
    serde_json::to_string(tenants).unwrap_or_default()
}

/// An app edit's value list as stored.
pub(crate) fn edit_list_json(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn parse_edit_list(s: &str, object_id: &str, attribute: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s)
        .map_err(|e| StoreError::Corrupt(format!("app edit {object_id}/{attribute}: not a JSON list: {e}")))
}

/// Test hook: abort the process after this many object writes inside apply, to
/// prove that a crash mid-apply leaves the store consistent.
pub(crate) struct WriteCounter {
    written: u64,
    crash_at: Option<u64>,
    run_id: i64,
}

impl WriteCounter {
    pub(crate) fn new(run_id: i64) -> Self {
        let crash_at = std::env::var("ROSTER_TEST_CRASH_AFTER_WRITES").ok().and_then(|v| v.parse().ok());
        Self { written: 0, crash_at, run_id }
    }

    /// Counts `n` more rows written; a backend that writes rows in batches
    /// crosses the crash point within a batch, and aborts right after it.
    pub(crate) fn add(&mut self, n: u64) {
        let before = self.written;
        self.written += n;
        if let Some(at) = self.crash_at
            && at > before
            && at <= self.written
        {
            eprintln!("ROSTER_TEST_CRASH_AFTER_WRITES: aborting after {at} writes (run {})", self.run_id);
            std::process::abort();
        }
    }

    pub(crate) fn written(&self) -> u64 {
        self.written
    }
}

/// An object as events show it.
#[derive(serde::Serialize)]
struct ObjectView<'a> {
    id: &'a str,
    kind: &'static str,
    #[serde(rename = "externalId")]
    external_id: &'a str,
    dn: Option<&'a str>,
    version: i64,
    attributes: &'a crate::model::Attributes,
}

fn object_view(o: &PlannedObject, version: i64) -> ObjectView<'_> {
    ObjectView {
        id: &o.id,
        kind: o.kind.as_str(),
        external_id: &o.anchor,
        dn: o.dn.as_deref(),
        version,
        attributes: &o.attrs,
    }
}

/// The bodies of object events: the object, and what the event is about.
#[derive(serde::Serialize)]
struct ObjectEvent<'a> {
    object: ObjectView<'a>,
}

#[derive(serde::Serialize)]
struct Changed<'a, C> {
    object: ObjectView<'a>,
    changes: C,
}

#[derive(serde::Serialize)]
struct RoleEvent<'a> {
    object: ObjectView<'a>,
    role: &'a str,
}

/// JSON text of a value that always serialises (structs and maps of strings
/// and numbers); should one ever fail, the text says so instead of panicking.
fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| serde_json::json!({ "unserialisable": e.to_string() }).to_string())
}

/// One outbox event, ready to be written.
pub(crate) struct NewEvent {
    pub seq: i64,
    pub event_type: String,
    pub object_id: String,
    pub object_kind: &'static str,
    pub version: i64,
    pub idempotency_key: String,
    pub payload: String,
}

/// The events of one apply, numbered on from the tenant's last sequence
/// number; the backend writes what [`Outbox::drain`] hands it, inside the
/// apply's transaction.
pub(crate) struct Outbox<'a> {
    tenant: &'a str,
    run_id: i64,
    now: &'a str,
    seq: i64,
    pending: Vec<NewEvent>,
}

impl<'a> Outbox<'a> {
    pub(crate) fn new(tenant: &'a str, run_id: i64, now: &'a str, last_seq: i64) -> Self {
        Self { tenant, run_id, now, seq: last_seq, pending: Vec::new() }
    }

    pub(crate) fn tenant(&self) -> &'a str {
        self.tenant
    }

    pub(crate) fn run_id(&self) -> i64 {
        self.run_id
    }

    /// When the apply happened: every event's `created_at`.
    pub(crate) fn now(&self) -> &'a str {
        self.now
    }

    /// The sequence number of the last event emitted (the tenant's new high mark).
    pub(crate) fn last_seq(&self) -> i64 {
        self.seq
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn drain(&mut self) -> std::vec::Drain<'_, NewEvent> {
        self.pending.drain(..)
    }

    /// Numbers an event made elsewhere (see [`created_events`]) and queues it.
    pub(crate) fn push(&mut self, mut e: NewEvent) {
        self.seq += 1;
        e.seq = self.seq;
        self.pending.push(e);
    }

    pub(crate) fn created(&mut self, o: &PlannedObject) {
        for e in created_events(self.tenant, o) {
            self.push(e);
        }
    }

    pub(crate) fn updated(&mut self, o: &PlannedObject, version: i64, changes: &[AttrChange]) {
        let kind = o.kind.as_str();
        self.push(new_event(
            self.tenant,
            &format!("{kind}.updated"),
            &o.id,
            o.kind,
            version,
            "",
            Changed { object: object_view(o, version), changes },
        ));
        for c in changes {
            if c.attr == "active" && o.kind == EntryKind::User {
                let active = c.new.first().map(String::as_str) != Some("false");
                let t = if active { "user.activated" } else { "user.deactivated" };
                self.push(new_event(
                    self.tenant,
                    t,
                    &o.id,
                    o.kind,
                    version,
                    "",
                    ObjectEvent { object: object_view(o, version) },
                ));
            }
            if c.attr == "roles" {
                for role in c.new.iter().filter(|r| !c.old.contains(r)) {
                    self.push(new_event(
                        self.tenant,
                        "user.role_assigned",
                        &o.id,
                        o.kind,
                        version,
                        role,
                        RoleEvent { object: object_view(o, version), role },
                    ));
                }
                for role in c.old.iter().filter(|r| !c.new.contains(r)) {
                    self.push(new_event(
                        self.tenant,
                        "user.role_removed",
                        &o.id,
                        o.kind,
                        version,
                        role,
                        RoleEvent { object: object_view(o, version), role },
                    ));
                }
            }
        }
    }

    pub(crate) fn deleted(
        &mut self,
        id: &str,
        kind: EntryKind,
        anchor: &str,
        dn: Option<&str>,
        label: &str,
        version: i64,
    ) {
        let object = serde_json::json!({ "id": id, "kind": kind.as_str(), "externalId": anchor, "dn": dn, "label": label, "version": version });
        self.push(new_event(
            self.tenant,
            &format!("{}.deleted", kind.as_str()),
            id,
            kind,
            version,
            "",
            serde_json::json!({ "object": object }),
        ));
    }

    pub(crate) fn membership(&mut self, m: &MembershipChange) {
        let e = membership_event(self.tenant, self.run_id, m);
        self.push(e);
    }
}

/// An event, not yet numbered: only the body is stored, since the envelope
/// (type, tenant, sequence, key, time) is in the row's columns already and
/// [`delivered_payload`] puts it back. Free of the outbox's state, so that a
/// big apply can make its events on another thread (see
/// [`events_ahead`]) while the store writes.
fn new_event<B: serde::Serialize>(
    tenant: &str,
    event_type: &str,
    object_id: &str,
    kind: EntryKind,
    version: i64,
    key_extra: &str,
    body: B,
) -> NewEvent {
    // The same change always gets the same key: a consumer that sees it
    // twice (a redelivery) knows it is the same event.
    let key = crate::util::sha256_hex(
        format!("{tenant}\u{0}{object_id}\u{0}{version}\u{0}{event_type}\u{0}{key_extra}").as_bytes(),
    )[..32]
        .to_string();
    // Serialised straight from the plan's data: building a
    // `serde_json::Value` copied every attribute of every object twice,
    // a tenth of a full sync. Bodies are plain structs and maps of
    // strings, which always serialise.
    NewEvent {
        seq: 0,
        event_type: event_type.to_string(),
        object_id: object_id.to_string(),
        object_kind: kind.as_str(),
        version,
        idempotency_key: key,
        payload: json_text(&body),
    }
}

/// A created object's events: the creation, then a role assignment per role.
pub(crate) fn created_events(tenant: &str, o: &PlannedObject) -> Vec<NewEvent> {
    // A created event's `changes` (every attribute, from nothing) are
    // the object's attributes again: stored once, listed on delivery.
    let kind = o.kind.as_str();
    let roles: Vec<&str> = o.attrs.get("roles").map(|v| v.iter().collect()).unwrap_or_default();
    let mut events = Vec::with_capacity(1 + roles.len());
    events.push(new_event(
        tenant,
        &format!("{kind}.created"),
        &o.id,
        o.kind,
        1,
        "",
        ObjectEvent { object: object_view(o, 1) },
    ));
    for role in roles {
        events.push(new_event(
            tenant,
            "user.role_assigned",
            &o.id,
            o.kind,
            1,
            role,
            RoleEvent { object: object_view(o, 1), role },
        ));
    }
    events
}

fn membership_event(tenant: &str, run_id: i64, m: &MembershipChange) -> NewEvent {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        group: Group<'a>,
        member: Member<'a>,
    }
    #[derive(serde::Serialize)]
    struct Group<'a> {
        id: &'a str,
        label: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Member<'a> {
        id: &'a str,
        kind: &'static str,
        label: &'a str,
    }
    let t = if m.add { "group.member_added" } else { "group.member_removed" };
    let body = Body {
        group: Group { id: m.group_id(), label: m.group_label() },
        member: Member { id: m.member_id(), kind: m.member_kind().as_str(), label: m.member_label() },
    };
    // Keyed by the run: adding the same member again in a later run is a new event.
    let extra = format!("{}\u{0}{}", m.member_id(), run_id);
    new_event(tenant, t, m.group_id(), EntryKind::Group, 0, &extra, body)
}

/// The events of a plan's creates and membership changes, made ahead of
/// the apply that writes them, in the order it meets those changes: per
/// source, one list per create, then one per membership change. Sent in
/// chunks; stops early once the apply has stopped listening.
pub(crate) fn events_ahead(plan: &Plan, run_id: i64, to: std::sync::mpsc::SyncSender<Vec<Vec<NewEvent>>>) {
    const CHUNK: usize = 256;
    let tenant = plan.tenant.as_str();
    let mut chunk = Vec::with_capacity(CHUNK);
    let creates = plan.sources.iter().flat_map(|sp| {
        let objects = sp.changes.iter().filter_map(|c| match c {
            Change::Create { object } => Some(created_events(tenant, object)),
            _ => None,
        });
        objects.chain(sp.memberships.iter().map(|m| vec![membership_event(tenant, run_id, m)]))
    });
    for events in creates {
        chunk.push(events);
        if chunk.len() == CHUNK && to.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))).is_err() {
            return;
        }
    }
    if !chunk.is_empty() {
        let _ = to.send(chunk);
    }
}

/// An event as consumers get it (the events feed, webhooks, SCIM push),
/// from its stored row: the stored body plus the envelope from the row's
/// columns, and for a created event the list of its attributes as
/// `changes`. Outboxes written before the body was stored alone hold the
/// whole event already; they come back as they were.
pub(crate) fn delivered_payload(tenant: &str, e: &EventRecord, stored: &str) -> Result<serde_json::Value, StoreError> {
    use serde_json::Value;
    let corrupt = |why: String| StoreError::Corrupt(format!("event {} of tenant '{tenant}': {why}", e.seq));
    let mut v: Value = serde_json::from_str(stored).map_err(|err| corrupt(format!("payload is not JSON: {err}")))?;
    let body = v.as_object_mut().ok_or_else(|| corrupt("payload is not a JSON object".into()))?;
    if body.contains_key("type") {
        return Ok(v);
    }
    if e.event_type.ends_with(".created") && !body.contains_key("changes") {
        let changes: Vec<Value> = body
            .get("object")
            .and_then(|o| o.get("attributes"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(attr, new)| serde_json::json!({ "attr": attr, "old": [], "new": new }))
            .collect();
        body.insert("changes".into(), Value::Array(changes));
    }
    body.insert("type".into(), Value::from(e.event_type.as_str()));
    body.insert("tenant".into(), Value::from(tenant));
    body.insert("sequence".into(), Value::from(e.seq));
    body.insert("idempotency_key".into(), Value::from(e.idempotency_key.as_str()));
    body.insert("occurred_at".into(), Value::from(e.created_at.as_str()));
    Ok(v)
}

/// The hash of the first record's predecessor.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub(crate) fn audit_hash(
    seq: i64,
    tenant: &str,
    at: &str,
    kind: &str,
    actor: &str,
    detail: &str,
    prev: &str,
) -> String {
    // Fed piece by piece: the detail of a full sync's memberships runs to
    // tens of megabytes, and formatting it into one string first copied it.
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for piece in [&seq.to_string(), tenant, at, kind, actor, detail] {
        h.update(piece.as_bytes());
        h.update(b"\n");
    }
    h.update(prev.as_bytes());
    hex::encode(h.finalize())
}

/// One audit record, ready to be written (its tenant, kind and actor are the caller's).
pub(crate) struct NewAudit {
    pub seq: i64,
    pub at: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// A tenant's chain head within one transaction: read once, then extended
/// record by record (an apply writes one record per change).
pub(crate) struct AuditChain<'t> {
    tenant: &'t str,
    next_seq: i64,
    prev: String,
}

impl<'t> AuditChain<'t> {
    /// `head`: the seq and hash of the tenant's last record or, when pruning
    /// removed them all, of its checkpoint; `None` for a new chain.
    pub(crate) fn after(tenant: &'t str, head: Option<(i64, String)>) -> Self {
        let (next_seq, prev) = match head {
            Some((seq, hash)) => (seq + 1, hash),
            None => (1, GENESIS.to_string()),
        };
        Self { tenant, next_seq, prev }
    }

    pub(crate) fn next(&mut self, kind: &str, actor: &str, detail: &serde_json::Value) -> NewAudit {
        self.next_text(kind, actor, detail.to_string())
    }

    /// [`AuditChain::next`] for a detail already serialised.
    pub(crate) fn next_text(&mut self, kind: &str, actor: &str, detail: String) -> NewAudit {
        let seq = self.next_seq;
        let at = now_rfc3339();
        let hash = audit_hash(seq, self.tenant, &at, kind, actor, &detail, &self.prev);
        let prev_hash = std::mem::replace(&mut self.prev, hash.clone());
        self.next_seq += 1;
        NewAudit { seq, at, detail, prev_hash, hash }
    }
}

/// Walks one tenant's stored chain in write order.
pub(crate) struct ChainCheck<'t> {
    tenant: &'t str,
    expected_seq: i64,
    prev: String,
}

impl<'t> ChainCheck<'t> {
    /// `checkpoint`: where pruning left the chain, if it did.
    pub(crate) fn new(tenant: &'t str, checkpoint: Option<(i64, String)>) -> Self {
        let (expected_seq, prev) = match checkpoint {
            Some((seq, hash)) => (seq + 1, hash),
            None => (1, GENESIS.to_string()),
        };
        Self { tenant, expected_seq, prev }
    }

    /// `raw_detail`: the detail as stored. Verification hashes the stored
    /// text, not a re-serialisation: it must see exactly the bytes that were chained.
    pub(crate) fn check(&mut self, r: AuditRecord, raw_detail: &str) -> Result<(), String> {
        let tenant = self.tenant;
        if r.seq != self.expected_seq {
            return Err(format!(
                "tenant '{tenant}': record {} is missing or out of order (found record {} in its place)",
                self.expected_seq, r.seq
            ));
        }
        if r.prev_hash != self.prev {
            return Err(format!(
                "tenant '{tenant}': record {} does not follow record {} (the chain is broken: a record was removed or reordered)",
                r.seq,
                r.seq - 1
            ));
        }
        let h = audit_hash(r.seq, &r.tenant, &r.at, &r.kind, &r.actor, raw_detail, &r.prev_hash);
        if h != r.hash {
            return Err(format!("tenant '{tenant}': record {}: its content does not match its hash (edited)", r.seq));
        }
        self.prev = r.hash;
        self.expected_seq += 1;
        Ok(())
    }
}

/// The audit detail of a finished run.
pub(crate) fn run_audit_detail(run_id: i64, outcome: &RunOutcome, trigger: &str) -> serde_json::Value {
    let s = &outcome.summary;
    serde_json::json!({
        "run_id": run_id, "status": outcome.status, "trigger": trigger,
        "counts": s.get("counts"), "plugins": s.get("plugins"), "positions": s.get("positions"),
        "sources": s.get("sources").and_then(|v| v.as_array()).map(|a| a.iter().map(|x| x.get("source").cloned().unwrap_or_default()).collect::<Vec<_>>()),
        "detail": s.get("detail").or_else(|| s.get("error")),
    })
}

/// Membership changes per audit record. One record for a full sync's
/// hundreds of thousands was tens of MB of text, held three times over (ours,
/// SQLite's bound copy, its record) at the peak of the run's memory.
pub(crate) const AUDIT_MEMBERSHIPS_PER_RECORD: usize = 1000;

/// The audit details an applied plan writes, in order: one per change, then
/// each source's membership changes, [`AUDIT_MEMBERSHIPS_PER_RECORD`] to a
/// record.
pub(crate) fn apply_audit_details(plan: &Plan, run_id: i64) -> impl Iterator<Item = String> + '_ {
    // Serialised straight from the plan, without building `serde_json::Value`s:
    // a copy of every created object's attributes, and one value per
    // membership of a full sync, were the largest part of an apply's memory.
    // Fields in alphabetical order, as a `Value` would have written them.
    #[derive(serde::Serialize)]
    struct ObjectDetail<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        attributes: Option<&'a crate::model::Attributes>,
        #[serde(rename = "externalId")]
        external_id: &'a str,
        id: &'a str,
        kind: &'static str,
        op: &'static str,
        run_id: i64,
        source: &'a str,
    }
    #[derive(serde::Serialize)]
    struct MembershipsDetail<'a> {
        added: Vec<[&'a str; 2]>,
        op: &'static str,
        removed: Vec<[&'a str; 2]>,
        run_id: i64,
        source: &'a str,
    }
    fn pair(m: &crate::plan::MembershipChange) -> [&str; 2] {
        [m.group_id(), m.member_id()]
    }
    plan.sources.iter().flat_map(move |sp| {
        let source = sp.source.as_str();
        let changes = sp.changes.iter().map(move |change| {
            let d = match change {
                Change::Create { object } => ObjectDetail {
                    attributes: Some(&object.attrs),
                    external_id: &object.anchor,
                    id: &object.id,
                    kind: object.kind.as_str(),
                    op: "create",
                    run_id,
                    source,
                },
                // Few, and an `AttrChange`'s own field order is not alphabetical.
                Change::Update { object, changes, .. } => {
                    return serde_json::json!({ "op": "update", "run_id": run_id, "source": source, "id": object.id, "kind": object.kind.as_str(), "externalId": object.anchor, "changes": changes }).to_string();
                }
                Change::Delete { id, kind, anchor, .. } => ObjectDetail {
                    attributes: None,
                    external_id: anchor,
                    id,
                    kind: kind.as_str(),
                    op: "delete",
                    run_id,
                    source,
                },
            };
            json_text(&d)
        });
        let memberships = sp.memberships.chunks(AUDIT_MEMBERSHIPS_PER_RECORD).map(move |chunk| {
            json_text(&MembershipsDetail {
                added: chunk.iter().filter(|m| m.add).map(pair).collect(),
                op: "memberships",
                removed: chunk.iter().filter(|m| !m.add).map(pair).collect(),
                run_id,
                source,
            })
        });
        changes.chain(memberships)
    })
}

/// Where an apply's time went (the directory bench reads this line):
/// object rows, membership rows, audit records, commit. Times are since
/// `started`, the start of the apply.
pub(crate) struct ApplyTimes {
    pub started: std::time::Instant,
    pub objects: std::time::Duration,
    pub memberships: std::time::Duration,
    pub rows_done: std::time::Duration,
    pub audit_done: std::time::Duration,
}

pub(crate) fn log_apply(tenant: &str, run_id: i64, rows: u64, t: &ApplyTimes) {
    tracing::debug!(
        tenant,
        run_id,
        rows,
        objects_ms = t.objects.as_millis() as u64,
        memberships_ms = t.memberships.as_millis() as u64,
        audit_ms = (t.audit_done - t.rows_done).as_millis() as u64,
        commit_ms = (t.started.elapsed() - t.audit_done).as_millis() as u64,
        "apply transaction"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{AttrChange, MemberObject, MembershipChange, PlannedObject, SourcePlan};
    use crate::source::EntryKind;

    /// The audit trail's text is what its hash chain covers: serialising from
    /// the plan directly must write exactly what a `serde_json::Value` did.
    #[test]
    fn audit_details_are_the_text_a_json_value_would_be() {
        let object = |id: &str| PlannedObject {
            id: id.into(),
            kind: EntryKind::User,
            anchor: format!("anchor-{id}"),
            dn: Some("uid=x".into()),
            attrs: [("userName".to_string(), vec!["ann \"a\" é".to_string()])].into_iter().collect(),
        };
        let changes = vec![AttrChange { attr: "email".into(), old: vec!["a@x".into()], new: vec![] }];
        let membership = |add: bool, g: &str, m: &str| MembershipChange {
            add,
            group: MemberObject::new(EntryKind::Group, g, "g"),
            member: MemberObject::new(EntryKind::User, m, "m"),
        };
        let plan = Plan {
            tenant: "t".into(),
            sources: vec![SourcePlan {
                source: "s".into(),
                changes: vec![
                    Change::Create { object: object("1") },
                    Change::Update { object: object("2"), from_version: 3, changes: changes.clone() },
                    Change::Delete {
                        id: "3".into(),
                        kind: EntryKind::Group,
                        anchor: "anchor-3".into(),
                        dn: None,
                        label: "x".into(),
                    },
                ],
                memberships: vec![
                    membership(true, "g1", "1"),
                    membership(false, "g1", "2"),
                    membership(true, "g2", "1"),
                ],
                read_complete: true,
                existing_objects: 3,
            }],
        };
        let expected = [
            serde_json::json!({ "op": "create", "run_id": 7, "source": "s", "id": "1", "kind": "user", "externalId": "anchor-1", "attributes": object("1").attrs }),
            serde_json::json!({ "op": "update", "run_id": 7, "source": "s", "id": "2", "kind": "user", "externalId": "anchor-2", "changes": changes }),
            serde_json::json!({ "op": "delete", "run_id": 7, "source": "s", "id": "3", "kind": "group", "externalId": "anchor-3" }),
            serde_json::json!({ "op": "memberships", "run_id": 7, "source": "s", "added": [["g1", "1"], ["g2", "1"]], "removed": [["g1", "2"]] }),
        ]
        .map(|v| v.to_string());
        assert_eq!(apply_audit_details(&plan, 7).collect::<Vec<_>>(), expected);
    }

    /// A full sync's memberships are audited in bounded records that together
    /// hold every change once, in the plan's order.
    #[test]
    fn membership_audit_records_are_bounded_and_lose_nothing() {
        let total = AUDIT_MEMBERSHIPS_PER_RECORD * 2 + AUDIT_MEMBERSHIPS_PER_RECORD / 2;
        let memberships: Vec<MembershipChange> = (0..total)
            .map(|i| MembershipChange {
                add: i % 3 != 0,
                group: MemberObject::new(EntryKind::Group, &format!("g{}", i % 7), "g"),
                member: MemberObject::new(EntryKind::User, &format!("m{i}"), "m"),
            })
            .collect();
        let plan = Plan {
            tenant: "t".into(),
            sources: vec![SourcePlan {
                source: "s".into(),
                changes: Vec::new(),
                memberships: memberships.clone(),
                read_complete: true,
                existing_objects: 0,
            }],
        };
        let records: Vec<serde_json::Value> = apply_audit_details(&plan, 7)
            .map(|text| serde_json::from_str(&text).expect("audit detail is JSON"))
            .collect();
        assert_eq!(records.len(), 3);
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for r in &records {
            assert_eq!(r["op"], "memberships");
            assert_eq!(r["source"], "s");
            let pairs = |key: &str| r[key].as_array().expect("pairs").clone();
            assert!(pairs("added").len() + pairs("removed").len() <= AUDIT_MEMBERSHIPS_PER_RECORD);
            added.extend(pairs("added"));
            removed.extend(pairs("removed"));
        }
        let expected = |add: bool| -> Vec<serde_json::Value> {
            memberships
                .iter()
                .filter(|m| m.add == add)
                .map(|m| serde_json::json!([m.group_id(), m.member_id()]))
                .collect()
        };
        assert_eq!(added, expected(true));
        assert_eq!(removed, expected(false));
    }

    /// Event payloads are what consumers parse: the same JSON as when they
    /// were built as `serde_json::Value`s.
    #[test]
    fn event_payloads_keep_their_shape() {
        let o = PlannedObject {
            id: "u1".into(),
            kind: EntryKind::User,
            anchor: "a1".into(),
            dn: None,
            attrs: [("userName", vec!["ann"]), ("roles", vec!["admin"])].into_iter().collect(),
        };
        let m = MembershipChange {
            add: true,
            group: MemberObject::new(EntryKind::Group, "g1", "staff"),
            member: MemberObject::new(EntryKind::User, "u1", "ann"),
        };
        let mut outbox = Outbox::new("t", 9, "2026-12-07T00:00:00Z", 41);
        outbox.created(&o);
        outbox.membership(&m);
        let events: Vec<NewEvent> = outbox.drain().collect();
        let payloads: Vec<serde_json::Value> =
            events.iter().map(|e| delivered("t", e, "2026-12-07T00:00:00Z")).collect();
        let object = serde_json::json!({ "id": "u1", "kind": "user", "externalId": "a1", "dn": null, "version": 1, "attributes": o.attrs });
        let head = |t: &str, seq: i64, key: &str| serde_json::json!({ "type": t, "tenant": "t", "sequence": seq, "idempotency_key": key, "occurred_at": "2026-12-07T00:00:00Z" });
        let with = |mut body: serde_json::Value, head: serde_json::Value| {
            for (k, v) in head.as_object().cloned().unwrap_or_default() {
                body[k] = v;
            }
            body
        };
        let expected = vec![
            with(
                serde_json::json!({ "object": object, "changes": [
                    { "attr": "roles", "old": [], "new": ["admin"] },
                    { "attr": "userName", "old": [], "new": ["ann"] },
                ] }),
                head("user.created", 42, &events[0].idempotency_key),
            ),
            with(
                serde_json::json!({ "object": object, "role": "admin" }),
                head("user.role_assigned", 43, &events[1].idempotency_key),
            ),
            with(
                serde_json::json!({ "group": { "id": "g1", "label": "staff" }, "member": { "id": "u1", "kind": "user", "label": "ann" } }),
                head("group.member_added", 44, &events[2].idempotency_key),
            ),
        ];
        assert_eq!(payloads, expected);
        assert!(events.iter().all(|e| e.idempotency_key.len() == 32));
    }

    /// An update's events: the update itself, then deactivation and the
    /// roles that came and went, each with the object as it now is.
    #[test]
    fn update_event_payloads_keep_their_shape() {
        let o = PlannedObject {
            id: "u1".into(),
            kind: EntryKind::User,
            anchor: "a1".into(),
            dn: Some("uid=ann".into()),
            attrs: [("active", vec!["false"]), ("roles", vec!["auditor"])].into_iter().collect(),
        };
        let changes = vec![
            AttrChange { attr: "active".into(), old: vec!["true".into()], new: vec!["false".into()] },
            AttrChange { attr: "roles".into(), old: vec!["admin".into()], new: vec!["auditor".into()] },
        ];
        let mut outbox = Outbox::new("t", 9, "2026-12-07T00:00:00Z", 0);
        outbox.updated(&o, 4, &changes);
        let events: Vec<NewEvent> = outbox.drain().collect();
        let bodies: Vec<(String, serde_json::Value)> = events
            .iter()
            .map(|e| {
                let mut v = delivered("t", e, "2026-12-07T00:00:00Z");
                for k in ["type", "tenant", "sequence", "idempotency_key", "occurred_at"] {
                    v.as_object_mut().map(|m| m.remove(k));
                }
                (e.event_type.clone(), v)
            })
            .collect();
        let object = serde_json::json!({ "id": "u1", "kind": "user", "externalId": "a1", "dn": "uid=ann", "version": 4, "attributes": o.attrs });
        assert_eq!(
            bodies,
            vec![
                ("user.updated".to_string(), serde_json::json!({ "object": object, "changes": changes })),
                ("user.deactivated".to_string(), serde_json::json!({ "object": object })),
                ("user.role_assigned".to_string(), serde_json::json!({ "object": object, "role": "auditor" })),
                ("user.role_removed".to_string(), serde_json::json!({ "object": object, "role": "admin" })),
            ]
        );
    }

    /// What the events feed hands out for an event the outbox wrote.
    fn delivered(tenant: &str, e: &NewEvent, at: &str) -> serde_json::Value {
        let record = EventRecord {
            seq: e.seq,
            event_type: e.event_type.clone(),
            object_id: e.object_id.clone(),
            object_kind: e.object_kind.into(),
            version: e.version,
            idempotency_key: e.idempotency_key.clone(),
            run_id: 9,
            created_at: at.into(),
            payload: serde_json::Value::Null,
        };
        delivered_payload(tenant, &record, &e.payload).expect("a stored event reads back")
    }

    /// The outbox stores bodies only; an outbox written before that holds
    /// whole events, which come back exactly as stored.
    #[test]
    fn stored_bodies_and_older_whole_events_are_delivered_alike() {
        let o = PlannedObject {
            id: "g1".into(),
            kind: EntryKind::Group,
            anchor: "a1".into(),
            dn: None,
            attrs: [("displayName".to_string(), vec!["staff".to_string()])].into_iter().collect(),
        };
        let mut outbox = Outbox::new("t", 9, "2026-12-07T00:00:00Z", 0);
        outbox.created(&o);
        let event = outbox.drain().next().expect("one event");
        let stored: serde_json::Value = serde_json::from_str(&event.payload).expect("JSON");
        assert!(stored.get("type").is_none() && stored.get("changes").is_none(), "stored: {stored}");
        let whole = delivered("t", &event, "2026-12-07T00:00:00Z");
        assert_eq!(whole["changes"], serde_json::json!([{ "attr": "displayName", "old": [], "new": ["staff"] }]));
        assert_eq!(whole["sequence"], 1);
        let older = NewEvent { payload: whole.to_string(), ..event };
        assert_eq!(delivered("t", &older, "a different time"), whole);
        let broken = NewEvent { payload: "[1]".into(), ..older };
        let record = EventRecord {
            seq: 1,
            event_type: broken.event_type.clone(),
            object_id: String::new(),
            object_kind: String::new(),
            version: 1,
            idempotency_key: String::new(),
            run_id: 9,
            created_at: String::new(),
            payload: serde_json::Value::Null,
        };
        let err = delivered_payload("t", &record, &broken.payload).expect_err("not an object");
        assert!(err.to_string().contains("event 1 of tenant 't'"), "{err}");
    }

    /// The chain's hashes cover exactly the bytes they always have: a
    /// record's hash is checked by `audit verify` long after it was written.
    #[test]
    fn the_audit_hash_covers_the_same_bytes_as_ever() {
        let (detail, prev) = ("{\"op\":\"create\"}", GENESIS);
        let before =
            crate::util::sha256_hex(format!("7\nt\n2026-12-07T00:00:00Z\nchange\nrun:1\n{detail}\n{prev}").as_bytes());
        assert_eq!(audit_hash(7, "t", "2026-12-07T00:00:00Z", "change", "run:1", detail, prev), before);
    }
}
