//! Applying a plan: one transaction, its rows written in batches.
//!
//! SQLite writes a plan change by change; over a network each statement is a
//! round trip, so here consecutive changes go out together, as arrays
//! (`UNNEST`). A batch holds only changes that do not touch the same id or
//! anchor, so the order of its rows cannot matter; a change that does starts
//! the next batch. The outcome is the same as change by change: the same rows,
//! events numbered in plan order, and the first change in plan order that
//! cannot apply (a conflict, an object already stored) is the error.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use postgres::Transaction;

use super::db::{Conn, Db, get};
use super::{BATCH, audit, ensure_tenant};
use crate::model::is_active;
use crate::plan::{Change, MembershipChange, Plan, PlannedObject};
use crate::source::EntryKind;
use crate::store::common::{
    ApplyTimes, AuditChain, Outbox, WriteCounter, apply_audit_details, dn_key, first, label, log_apply, table,
    user_name_key,
};
use crate::store::{ApplyStats, Fence, StoreError};
use crate::util::now_rfc3339;

type Tx<'a, 'b> = Db<'a, Transaction<'b>>;

pub(super) fn apply(
    conn: &mut Conn,
    plan: &Plan,
    run_id: i64,
    fence: Option<&Fence>,
) -> Result<ApplyStats, StoreError> {
    let tenant = plan.tenant.as_str();
    ensure_tenant(&mut conn.db(), tenant)?;
    let mut written = WriteCounter::new(run_id);
    let now = now_rfc3339();
    let started = Instant::now();
    let (objects_time, memberships_time, rows_done, audit_done) = conn.transaction("applying a plan", |tx| {
        tx.lock_tenant(tenant)?;
        super::check_fence(tx, fence)?;
        let last_seq = tx
            .query_opt(
                "reading the event sequence",
                "SELECT last_seq FROM event_sequences WHERE tenant = $1",
                &[&tenant],
            )?
            .map(|r| get::<i64>(&r, 0, "reading the event sequence"))
            .transpose()?
            .unwrap_or(0);
        let mut outbox = Outbox::new(tenant, run_id, &now, last_seq);
        let (mut objects_time, mut memberships_time) = (Duration::ZERO, Duration::ZERO);
        for sp in &plan.sources {
            let source = sp.source.as_str();
            let source_started = Instant::now();
            let mut batch = ChangeBatch::default();
            for change in &sp.changes {
                if !batch.admits(change) {
                    written.add(batch.write(tx, tenant, source, &now, &mut outbox)?);
                    write_events_if_many(tx, &mut outbox)?;
                }
                batch.push(change);
            }
            written.add(batch.write(tx, tenant, source, &now, &mut outbox)?);
            write_events_if_many(tx, &mut outbox)?;
            objects_time += source_started.elapsed();

            let memberships_started = Instant::now();
            let mut batch = MembershipBatch::default();
            for m in &sp.memberships {
                if !batch.admits(m) {
                    written.add(batch.write(tx, tenant, source, &mut outbox)?);
                    write_events_if_many(tx, &mut outbox)?;
                }
                batch.push(m);
            }
            written.add(batch.write(tx, tenant, source, &mut outbox)?);
            write_events_if_many(tx, &mut outbox)?;
            memberships_time += memberships_started.elapsed();
        }
        write_events(tx, &mut outbox)?;
        tx.execute(
            "writing the event sequence",
            "INSERT INTO event_sequences (tenant, last_seq) VALUES ($1, $2)
             ON CONFLICT (tenant) DO UPDATE SET last_seq = excluded.last_seq",
            &[&tenant, &outbox.last_seq()],
        )?;
        let rows_done = started.elapsed();

        let mut chain = AuditChain::after(tenant, audit::head(tx, tenant)?);
        let actor = format!("run:{run_id}");
        let mut records = Vec::new();
        for detail in apply_audit_details(plan, run_id) {
            records.push(chain.next_text("change", &actor, detail));
            if records.len() == BATCH {
                audit::insert(tx, tenant, "change", &actor, &records)?;
                records.clear();
            }
        }
        audit::insert(tx, tenant, "change", &actor, &records)?;
        tx.execute("marking run", "UPDATE runs SET status = 'applying' WHERE id = $1", &[&run_id])?;
        Ok((objects_time, memberships_time, rows_done, started.elapsed()))
    })?;
    let times = ApplyTimes { started, objects: objects_time, memberships: memberships_time, rows_done, audit_done };
    log_apply(tenant, run_id, written.written(), &times);
    Ok(ApplyStats { rows_written: written.written() })
}

/// Consecutive changes of one source, written together.
#[derive(Default)]
struct ChangeBatch<'p> {
    changes: Vec<&'p Change>,
    /// The ids and anchors the batch touches.
    keys: HashSet<&'p str>,
}

fn change_keys(change: &Change) -> [&str; 2] {
    match change {
        Change::Create { object } | Change::Update { object, .. } => [&object.id, &object.anchor],
        Change::Delete { id, anchor, .. } => [id, anchor],
    }
}

impl<'p> ChangeBatch<'p> {
    fn admits(&self, change: &'p Change) -> bool {
        self.changes.len() < BATCH && !change_keys(change).iter().any(|k| self.keys.contains(k))
    }

    fn push(&mut self, change: &'p Change) {
        self.keys.extend(change_keys(change));
        self.changes.push(change);
    }

    /// Writes the batch and its events; returns how many changes it held.
    fn write(
        &mut self,
        tx: &mut Tx<'_, '_>,
        tenant: &str,
        source: &str,
        now: &str,
        outbox: &mut Outbox<'_>,
    ) -> Result<u64, StoreError> {
        if self.changes.is_empty() {
            return Ok(0);
        }
        let mut creates: [Vec<&PlannedObject>; 2] = Default::default();
        let mut updates: [Vec<(&PlannedObject, i64)>; 2] = Default::default();
        let mut deletes: [Vec<&str>; 2] = Default::default();
        for change in &self.changes {
            match change {
                Change::Create { object } => creates[slot(object.kind)].push(object),
                Change::Update { object, from_version, .. } => updates[slot(object.kind)].push((object, *from_version)),
                Change::Delete { id, kind, .. } => deletes[slot(*kind)].push(id),
            }
        }
        let versions = delete_objects(tx, tenant, &deletes)?;
        let mut inserted = insert_users(tx, tenant, source, now, &creates[0])?;
        inserted.extend(insert_groups(tx, tenant, source, now, &creates[1])?);
        let mut updated = update_users(tx, tenant, now, &updates[0])?;
        updated.extend(update_groups(tx, tenant, now, &updates[1])?);

        for change in &self.changes {
            match change {
                Change::Create { object } => {
                    if !inserted.contains(&object.id) {
                        return Err(StoreError::Query {
                            context: "inserting object",
                            message: format!(
                                "{} '{}' (externalId '{}'): an object with this id or externalId is already stored",
                                object.kind, object.id, object.anchor
                            ),
                        });
                    }
                    outbox.created(object);
                }
                Change::Update { object, from_version, changes } => {
                    if !updated.contains(&object.id) {
                        return Err(StoreError::Conflict {
                            id: object.id.clone(),
                            label: label(object),
                            expected: *from_version,
                        });
                    }
                    outbox.updated(object, from_version + 1, changes);
                }
                Change::Delete { id, kind, anchor, dn, label } => {
                    let version = versions.get(id.as_str()).copied().unwrap_or(0);
                    outbox.deleted(id, *kind, anchor, dn.as_deref(), label, version);
                }
            }
        }
        let n = self.changes.len() as u64;
        self.changes.clear();
        self.keys.clear();
        Ok(n)
    }
}

fn slot(kind: EntryKind) -> usize {
    match kind {
        EntryKind::User => 0,
        EntryKind::Group => 1,
    }
}

/// Deletes objects (users, groups) and every membership they are in;
/// returns the versions they had (an object already gone has none).
fn delete_objects(tx: &mut Tx<'_, '_>, tenant: &str, ids: &[Vec<&str>; 2]) -> Result<HashMap<String, i64>, StoreError> {
    let mut versions = HashMap::new();
    for (kind, ids) in [(EntryKind::User, &ids[0]), (EntryKind::Group, &ids[1])] {
        if ids.is_empty() {
            continue;
        }
        let sql = format!("DELETE FROM {} WHERE tenant = $1 AND id = ANY($2) RETURNING id, version", table(kind));
        for r in tx.query("deleting object", &sql, &[&tenant, ids])? {
            versions.insert(get(&r, 0, "deleting object")?, get(&r, 1, "deleting object")?);
        }
    }
    let all: Vec<&str> = ids.iter().flatten().copied().collect();
    if !all.is_empty() {
        // One statement per end, each answered by its own index.
        for end in ["group_id", "member_id"] {
            tx.execute(
                "deleting memberships of a deleted object",
                &format!("DELETE FROM memberships WHERE tenant = $1 AND {end} = ANY($2)"),
                &[&tenant, &all],
            )?;
        }
    }
    Ok(versions)
}

/// The ids of the returned rows.
fn ids(rows: &[postgres::Row], context: &'static str) -> Result<HashSet<String>, StoreError> {
    rows.iter().map(|r| get(r, 0, context)).collect()
}

fn attrs_json(o: &PlannedObject) -> Result<String, StoreError> {
    serde_json::to_string(&o.attrs).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Inserts new users; returns the ids inserted. One that collides with a
/// stored object (id or anchor) is left out rather than failing the
/// statement, so the caller can name the first such change in plan order.
fn insert_users(
    tx: &mut Tx<'_, '_>,
    tenant: &str,
    source: &str,
    now: &str,
    users: &[&PlannedObject],
) -> Result<HashSet<String>, StoreError> {
    if users.is_empty() {
        return Ok(HashSet::new());
    }
    let ids_: Vec<&str> = users.iter().map(|o| o.id.as_str()).collect();
    let anchors: Vec<&str> = users.iter().map(|o| o.anchor.as_str()).collect();
    let dns: Vec<Option<&str>> = users.iter().map(|o| o.dn.as_deref()).collect();
    let names: Vec<Option<String>> = users.iter().map(|o| first(&o.attrs, "userName")).collect();
    let active: Vec<bool> = users.iter().map(|o| is_active(&o.attrs)).collect();
    let attrs: Vec<String> = users.iter().map(|o| attrs_json(o)).collect::<Result<_, _>>()?;
    let dn_keys: Vec<Option<String>> = users.iter().map(|o| dn_key(o.dn.as_deref())).collect();
    let name_keys: Vec<Option<String>> = users.iter().map(|o| user_name_key(&o.attrs)).collect();
    let rows = tx.query(
        "inserting object",
        "INSERT INTO users (tenant, id, source, anchor, dn, user_name, active, attrs, version, created_at, updated_at,
                            dn_key, user_name_key)
         SELECT $1, u.id, $2, u.anchor, u.dn, u.user_name, u.active, u.attrs, 1, $3, $3, u.dn_key, u.user_name_key
           FROM UNNEST($4::text[], $5::text[], $6::text[], $7::text[], $8::bool[], $9::text[], $10::text[], $11::text[])
                AS u(id, anchor, dn, user_name, active, attrs, dn_key, user_name_key)
         ON CONFLICT DO NOTHING
         RETURNING id",
        &[&tenant, &source, &now, &ids_, &anchors, &dns, &names, &active, &attrs, &dn_keys, &name_keys],
    )?;
    ids(&rows, "inserting object")
}

/// Inserts new groups, as [`insert_users`] does users.
fn insert_groups(
    tx: &mut Tx<'_, '_>,
    tenant: &str,
    source: &str,
    now: &str,
    groups: &[&PlannedObject],
) -> Result<HashSet<String>, StoreError> {
    if groups.is_empty() {
        return Ok(HashSet::new());
    }
    let ids_: Vec<&str> = groups.iter().map(|o| o.id.as_str()).collect();
    let anchors: Vec<&str> = groups.iter().map(|o| o.anchor.as_str()).collect();
    let dns: Vec<Option<&str>> = groups.iter().map(|o| o.dn.as_deref()).collect();
    let names: Vec<Option<String>> = groups.iter().map(|o| first(&o.attrs, "displayName")).collect();
    let attrs: Vec<String> = groups.iter().map(|o| attrs_json(o)).collect::<Result<_, _>>()?;
    let dn_keys: Vec<Option<String>> = groups.iter().map(|o| dn_key(o.dn.as_deref())).collect();
    let rows = tx.query(
        "inserting object",
        "INSERT INTO groups (tenant, id, source, anchor, dn, display_name, attrs, version, created_at, updated_at, dn_key)
         SELECT $1, g.id, $2, g.anchor, g.dn, g.display_name, g.attrs, 1, $3, $3, g.dn_key
           FROM UNNEST($4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])
                AS g(id, anchor, dn, display_name, attrs, dn_key)
         ON CONFLICT DO NOTHING
         RETURNING id",
        &[&tenant, &source, &now, &ids_, &anchors, &dns, &names, &attrs, &dn_keys],
    )?;
    ids(&rows, "inserting object")
}

/// Updates users still at the version each was planned against; returns
/// the ids updated (the others changed meanwhile: a conflict).
fn update_users(
    tx: &mut Tx<'_, '_>,
    tenant: &str,
    now: &str,
    users: &[(&PlannedObject, i64)],
) -> Result<HashSet<String>, StoreError> {
    if users.is_empty() {
        return Ok(HashSet::new());
    }
    let ids_: Vec<&str> = users.iter().map(|(o, _)| o.id.as_str()).collect();
    let from: Vec<i64> = users.iter().map(|(_, v)| *v).collect();
    let dns: Vec<Option<&str>> = users.iter().map(|(o, _)| o.dn.as_deref()).collect();
    let names: Vec<Option<String>> = users.iter().map(|(o, _)| first(&o.attrs, "userName")).collect();
    let active: Vec<bool> = users.iter().map(|(o, _)| is_active(&o.attrs)).collect();
    let attrs: Vec<String> = users.iter().map(|(o, _)| attrs_json(o)).collect::<Result<_, _>>()?;
    let dn_keys: Vec<Option<String>> = users.iter().map(|(o, _)| dn_key(o.dn.as_deref())).collect();
    let name_keys: Vec<Option<String>> = users.iter().map(|(o, _)| user_name_key(&o.attrs)).collect();
    let rows = tx.query(
        "updating object",
        "UPDATE users o SET dn = u.dn, user_name = u.user_name, active = u.active, attrs = u.attrs,
                version = o.version + 1, updated_at = $2, dn_key = u.dn_key, user_name_key = u.user_name_key
           FROM UNNEST($3::text[], $4::bigint[], $5::text[], $6::text[], $7::bool[], $8::text[], $9::text[], $10::text[])
                AS u(id, from_version, dn, user_name, active, attrs, dn_key, user_name_key)
          WHERE o.tenant = $1 AND o.id = u.id AND o.version = u.from_version
         RETURNING o.id",
        &[&tenant, &now, &ids_, &from, &dns, &names, &active, &attrs, &dn_keys, &name_keys],
    )?;
    ids(&rows, "updating object")
}

/// Updates groups, as [`update_users`] does users.
fn update_groups(
    tx: &mut Tx<'_, '_>,
    tenant: &str,
    now: &str,
    groups: &[(&PlannedObject, i64)],
) -> Result<HashSet<String>, StoreError> {
    if groups.is_empty() {
        return Ok(HashSet::new());
    }
    let ids_: Vec<&str> = groups.iter().map(|(o, _)| o.id.as_str()).collect();
    let from: Vec<i64> = groups.iter().map(|(_, v)| *v).collect();
    let dns: Vec<Option<&str>> = groups.iter().map(|(o, _)| o.dn.as_deref()).collect();
    let names: Vec<Option<String>> = groups.iter().map(|(o, _)| first(&o.attrs, "displayName")).collect();
    let attrs: Vec<String> = groups.iter().map(|(o, _)| attrs_json(o)).collect::<Result<_, _>>()?;
    let dn_keys: Vec<Option<String>> = groups.iter().map(|(o, _)| dn_key(o.dn.as_deref())).collect();
    let rows = tx.query(
        "updating object",
        "UPDATE groups o SET dn = g.dn, display_name = g.display_name, attrs = g.attrs,
                version = o.version + 1, updated_at = $2, dn_key = g.dn_key
           FROM UNNEST($3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[])
                AS g(id, from_version, dn, display_name, attrs, dn_key)
          WHERE o.tenant = $1 AND o.id = g.id AND o.version = g.from_version
         RETURNING o.id",
        &[&tenant, &now, &ids_, &from, &dns, &names, &attrs, &dn_keys],
    )?;
    ids(&rows, "updating object")
}

/// Consecutive membership changes of one source, written together; as with
/// objects, a pair changed twice starts the next batch.
#[derive(Default)]
struct MembershipBatch<'p> {
    changes: Vec<&'p MembershipChange>,
    pairs: HashSet<(&'p str, &'p str)>,
}

impl<'p> MembershipBatch<'p> {
    fn admits(&self, m: &'p MembershipChange) -> bool {
        self.changes.len() < BATCH && !self.pairs.contains(&(m.group_id(), m.member_id()))
    }

    fn push(&mut self, m: &'p MembershipChange) {
        self.pairs.insert((m.group_id(), m.member_id()));
        self.changes.push(m);
    }

    fn write(
        &mut self,
        tx: &mut Tx<'_, '_>,
        tenant: &str,
        source: &str,
        outbox: &mut Outbox<'_>,
    ) -> Result<u64, StoreError> {
        if self.changes.is_empty() {
            return Ok(0);
        }
        let (adds, removes): (Vec<&MembershipChange>, Vec<&MembershipChange>) =
            self.changes.iter().partition(|m| m.add);
        if !adds.is_empty() {
            let groups: Vec<&str> = adds.iter().map(|m| m.group_id()).collect();
            let members: Vec<&str> = adds.iter().map(|m| m.member_id()).collect();
            let kinds: Vec<&str> = adds.iter().map(|m| m.member_kind().as_str()).collect();
            tx.execute(
                "adding membership",
                "INSERT INTO memberships (tenant, source, group_id, member_id, member_kind)
                 SELECT $1, $2, m.group_id, m.member_id, m.member_kind
                   FROM UNNEST($3::text[], $4::text[], $5::text[]) AS m(group_id, member_id, member_kind)
                 ON CONFLICT DO NOTHING",
                &[&tenant, &source, &groups, &members, &kinds],
            )?;
        }
        if !removes.is_empty() {
            let groups: Vec<&str> = removes.iter().map(|m| m.group_id()).collect();
            let members: Vec<&str> = removes.iter().map(|m| m.member_id()).collect();
            tx.execute(
                "removing membership",
                "DELETE FROM memberships m USING UNNEST($2::text[], $3::text[]) AS r(group_id, member_id)
                  WHERE m.tenant = $1 AND m.group_id = r.group_id AND m.member_id = r.member_id",
                &[&tenant, &groups, &members],
            )?;
        }
        for m in &self.changes {
            outbox.membership(m);
        }
        let n = self.changes.len() as u64;
        self.changes.clear();
        self.pairs.clear();
        Ok(n)
    }
}

fn write_events_if_many(tx: &mut Tx<'_, '_>, outbox: &mut Outbox<'_>) -> Result<(), StoreError> {
    if outbox.pending() >= BATCH { write_events(tx, outbox) } else { Ok(()) }
}

/// Writes the events the outbox holds.
fn write_events(tx: &mut Tx<'_, '_>, outbox: &mut Outbox<'_>) -> Result<(), StoreError> {
    if outbox.pending() == 0 {
        return Ok(());
    }
    let (tenant, run_id, now) = (outbox.tenant(), outbox.run_id(), outbox.now());
    let events: Vec<_> = outbox.drain().collect();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let object_ids: Vec<&str> = events.iter().map(|e| e.object_id.as_str()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.object_kind).collect();
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    let keys: Vec<&str> = events.iter().map(|e| e.idempotency_key.as_str()).collect();
    let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
    tx.execute(
        "writing event",
        "INSERT INTO events (tenant, seq, type, object_id, object_kind, version, idempotency_key, run_id, payload, created_at)
         SELECT $1, e.seq, e.type, e.object_id, e.object_kind, e.version, e.idempotency_key, $2, e.payload, $3
           FROM UNNEST($4::bigint[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::text[], $10::text[])
                AS e(seq, type, object_id, object_kind, version, idempotency_key, payload)",
        &[&tenant, &run_id, &now, &seqs, &types, &object_ids, &kinds, &versions, &keys, &payloads],
    )?;
    Ok(())
}
