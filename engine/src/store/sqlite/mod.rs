//! The embedded default store: one SQLite database in the data directory.

mod migrations;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::common::{
    ApplyTimes, AuditChain, ChainCheck, NewAudit, NewEvent, Outbox, StoredRow, USER_COLUMNS, WriteCounter,
    apply_audit_details, dn_key, edit_list_json, entry_kind, events_ahead, first, label, log_apply, parse_audit_detail,
    parse_edit_list, parse_summary, parse_token_tenants, quarantine_key, run_audit_detail, stored_from_row, table,
    token_tenants_json, user_name_key,
};
use super::{
    AppEdit, ApplyStats, AuditRecord, EventRecord, Fence, LeaseRecord, MemberKey, MembershipEnd, MemoRow, NodeRecord,
    PluginHealth, PluginRecord, QuarantineItem, QuarantineRecord, RunOutcome, RunRecord, Settled, Store, StoreError,
    TokenRecord, WebhookState,
};
use crate::diff::Snapshot;
use crate::model::{Attributes, Stored, is_active};
use crate::plan::{Change, Plan, PlannedObject};
use crate::source::EntryKind;
use crate::util::now_rfc3339;

pub const DB_FILE: &str = "roster.db";

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    fence: Option<Fence>,
}

/// Now, in milliseconds since the epoch, computed by SQLite.
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// Fails unless the fence's leases are all held (inside the write's transaction).
fn check_fence(conn: &Connection, fence: Option<&Fence>) -> Result<(), StoreError> {
    let Some(fence) = fence else { return Ok(()) };
    for resource in &fence.resources {
        let held: bool = conn
            .query_row(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM leases WHERE resource = ?1 AND owner = ?2 AND expires_at > {NOW_MS})"
                ),
                params![resource, fence.node],
                |r| r.get(0),
            )
            .map_err(q("checking the lease"))?;
        if !held {
            return Err(StoreError::LeaseLost { node: fence.node.clone(), resource: resource.clone() });
        }
    }
    Ok(())
}

/// A transaction that writes, holding the write lock from its start. A
/// deferred one that reads first (the fence check, a version lookup) and
/// then writes fails at once with SQLITE_BUSY when another connection
/// committed in between: SQLite cannot upgrade its stale read snapshot, and
/// `busy_timeout` does not wait for that case. In `roster serve`, where
/// leases, delivery and the API write on connections of their own, a commit
/// between a realtime run's fence check and its source-state write did
/// exactly that (the directory bench, 601st realtime change at 100,000 users).
fn write_transaction(conn: &mut rusqlite::Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

/// SQLite's default: checkpoint when a commit leaves more than this many
/// pages in the WAL.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 1000;
/// SQLite's page cache in KiB, as `cache_size` takes it (negative): SQLite's
/// own default (2 MB) outside an apply, 16 MB during one.
const DEFAULT_CACHE_SIZE: i64 = -2000;
const APPLY_CACHE_SIZE: i64 = -16 * 1024;
/// Chunks of events (256 changes' worth each) made ahead of an apply that
/// may wait to be written, and the plan size from which they are made on a
/// thread of their own (below it they all fit the channel at once).
const EVENTS_AHEAD_CHUNKS: usize = 16;
const EVENTS_AHEAD_THREAD_FROM: usize = 1024;

fn q(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::Query { context, message: e.to_string() }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir` and migrates it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let open_err = |message: String| StoreError::Open { path: dir.display().to_string(), message };
        std::fs::create_dir_all(dir).map_err(|e| open_err(format!("cannot create the data directory: {e}")))?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(|e| open_err(e.to_string()))?;
        // WAL: readers (CLI listings) never block a sync; NORMAL is durable at
        // transaction boundaries in WAL mode, which is what apply needs.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
        )
        .map_err(|e| open_err(e.to_string()))?;
        let mut store = Self { conn, path, fence: None };
        store.migrate()?;
        Ok(store)
    }

    /// A throwaway store, for commands that must not create a data directory.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()
            .map_err(|e| StoreError::Open { path: ":memory:".into(), message: e.to_string() })?;
        let mut store = Self { conn, path: PathBuf::from(":memory:"), fence: None };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The apply, in one transaction (see [`Store::apply`]).
    /// `ahead`: the events [`events_ahead`] made for the plan's creates and
    /// membership changes, in the order this meets them.
    fn apply_plan(
        &mut self,
        plan: &Plan,
        run_id: i64,
        ahead: std::sync::mpsc::Receiver<Vec<Vec<NewEvent>>>,
    ) -> Result<ApplyStats, StoreError> {
        let mut ahead = ahead.into_iter().flatten();
        let ran_out = || StoreError::Corrupt("the events made ahead of the apply ran out before its changes".into());
        let tenant = plan.tenant.as_str();
        self.ensure_tenant(tenant)?;
        let mut written = WriteCounter::new(run_id);
        let now = now_rfc3339();
        let started = std::time::Instant::now();
        let tx = write_transaction(&mut self.conn).map_err(q("starting apply"))?;
        check_fence(&tx, self.fence.as_ref())?;
        let last_seq: i64 = tx
            .query_row("SELECT last_seq FROM event_sequences WHERE tenant = ?1", params![tenant], |r| r.get(0))
            .optional()
            .map_err(q("reading the event sequence"))?
            .unwrap_or(0);
        let mut outbox = Outbox::new(tenant, run_id, &now, last_seq);
        let mut event_insert = tx.prepare_cached(EVENT_INSERT_SQL).map_err(q("preparing event insert"))?;
        let (mut objects_time, mut memberships_time) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
        for sp in &plan.sources {
            let source = sp.source.as_str();
            let source_started = std::time::Instant::now();
            // New rows go in in id order: ids are random UUIDs, and inserting
            // them in the plan's (label) order touched a different page of
            // every id-keyed index each time. Events keep the plan's order.
            let mut creates: Vec<&PlannedObject> = sp
                .changes
                .iter()
                .filter_map(|c| match c {
                    Change::Create { object } => Some(object),
                    _ => None,
                })
                .collect();
            creates.sort_unstable_by(|a, b| a.id.cmp(&b.id));
            for object in creates {
                insert_object(&tx, tenant, source, object, &now)?;
            }
            for change in &sp.changes {
                match change {
                    Change::Create { .. } => {
                        for e in ahead.next().ok_or_else(ran_out)? {
                            outbox.push(e);
                        }
                    }
                    Change::Update { object, from_version, changes } => {
                        let n = update_object(&tx, tenant, object, *from_version, &now)?;
                        if n == 0 {
                            return Err(StoreError::Conflict {
                                id: object.id.clone(),
                                label: label(object),
                                expected: *from_version,
                            });
                        }
                        outbox.updated(object, from_version + 1, changes);
                    }
                    Change::Delete { id, kind, anchor, dn, label } => {
                        let table = table(*kind);
                        let version: i64 = tx
                            .query_row(
                                &format!("SELECT version FROM {table} WHERE tenant = ?1 AND id = ?2"),
                                params![tenant, id],
                                |r| r.get(0),
                            )
                            .optional()
                            .map_err(q("reading version"))?
                            .unwrap_or(0);
                        outbox.deleted(id, *kind, anchor, dn.as_deref(), label, version);
                        tx.execute(&format!("DELETE FROM {table} WHERE tenant = ?1 AND id = ?2"), params![tenant, id])
                            .map_err(q("deleting object"))?;
                        // Two statements, one per index: with `group_id = ?2 OR
                        // member_id = ?2` SQLite scanned every membership of the
                        // tenant for each deleted object (7.9 s of a 1,000-change
                        // run at 100,000 users).
                        for sql in DELETE_MEMBERSHIPS_OF_SQL {
                            tx.prepare_cached(sql)
                                .and_then(|mut st| st.execute(params![tenant, id]))
                                .map_err(q("deleting memberships of a deleted object"))?;
                        }
                    }
                }
                write_events(&mut event_insert, &mut outbox)?;
                written.add(1);
            }
            objects_time += source_started.elapsed();
            let memberships_started = std::time::Instant::now();
            {
                let mut add = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO memberships (tenant, source, group_id, member_id, member_kind) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .map_err(q("preparing membership insert"))?;
                let mut remove = tx
                    .prepare_cached("DELETE FROM memberships WHERE tenant = ?1 AND group_id = ?2 AND member_id = ?3")
                    .map_err(q("preparing membership delete"))?;
                for m in &sp.memberships {
                    if m.add {
                        add.execute(params![tenant, source, m.group_id(), m.member_id(), m.member_kind().as_str()])
                            .map_err(q("adding membership"))?;
                    } else {
                        remove
                            .execute(params![tenant, m.group_id(), m.member_id()])
                            .map_err(q("removing membership"))?;
                    }
                    for e in ahead.next().ok_or_else(ran_out)? {
                        outbox.push(e);
                    }
                    write_events(&mut event_insert, &mut outbox)?;
                    written.add(1);
                }
            }
            memberships_time += memberships_started.elapsed();
        }
        drop(event_insert);
        tx.execute(
            "INSERT INTO event_sequences (tenant, last_seq) VALUES (?1, ?2)
             ON CONFLICT (tenant) DO UPDATE SET last_seq = excluded.last_seq",
            params![tenant, outbox.last_seq()],
        )
        .map_err(q("writing the event sequence"))?;
        let rows_done = started.elapsed();
        let mut chain = AuditChain::after(tenant, audit_head(&tx, tenant)?);
        let actor = format!("run:{run_id}");
        for detail in apply_audit_details(plan, run_id) {
            insert_audit(&tx, tenant, "change", &actor, &chain.next_text("change", &actor, detail))?;
        }
        tx.execute("UPDATE runs SET status = 'applying' WHERE id = ?1", params![run_id]).map_err(q("marking run"))?;
        let audit_done = started.elapsed();
        // The commit is the instant the run's changes are applied. SQLite's
        // automatic checkpoint (copying the WAL into the database file and
        // syncing it: ≈ 100 ms after 1,000 changes in a 100,000-user store)
        // would otherwise run inside it whenever the WAL has grown past its
        // threshold. Hold it off for this one commit: the run's next write
        // (its run record), or closing the store, does it, after the changes
        // are visible and their events deliverable.
        tx.pragma_update(None, "wal_autocheckpoint", 0).map_err(q("deferring the checkpoint"))?;
        let committed = tx.commit().map_err(q("committing apply"));
        self.conn
            .pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
            .map_err(q("restoring the checkpoint"))?;
        committed?;
        let times = ApplyTimes { started, objects: objects_time, memberships: memberships_time, rows_done, audit_done };
        log_apply(tenant, run_id, written.written(), &times);
        Ok(ApplyStats { rows_written: written.written() })
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        // One writer at a time: processes opening a new store together (`roster
        // serve` and a CLI command) must not both run the same migration. The
        // immediate transaction takes the write lock before reading the version.
        let tx = write_transaction(&mut self.conn).map_err(q("starting migration"))?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL);",
        )
        .map_err(q("creating schema_migrations"))?;
        let current: i64 = tx
            .query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))
            .map_err(q("reading schema version"))?;
        let latest = migrations::MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        if current > latest {
            return Err(StoreError::Open {
                path: self.path.display().to_string(),
                message: format!(
                    "the store has schema version {current}, newer than this roster supports ({latest}); upgrade roster"
                ),
            });
        }
        for (version, name, sql) in migrations::MIGRATIONS.iter().filter(|m| m.0 > current) {
            tx.execute_batch(sql).map_err(q("running migration"))?;
            if *version == migrations::LOOKUP_KEYS {
                backfill_lookup_keys(&tx)?;
            }
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                params![version, name, now_rfc3339()],
            )
            .map_err(q("recording migration"))?;
            tracing::info!(version, name, "store migrated");
        }
        tx.commit().map_err(q("committing migration"))?;
        Ok(())
    }

    /// Users (and, with `groups`, groups) of the source matching `condition`
    /// over a batch of keys (see [`in_chunks`]).
    fn objects_where(
        &self,
        tenant: &str,
        source: &str,
        condition: &str,
        keys: &[String],
        groups: bool,
    ) -> Result<Vec<Stored>, StoreError> {
        let tables: &[(EntryKind, &str)] = if groups {
            &[(EntryKind::User, "users"), (EntryKind::Group, "groups")]
        } else {
            &[(EntryKind::User, "users")]
        };
        let mut out = Vec::new();
        for (kind, table) in tables {
            let rows = in_chunks(&self.conn, &object_lookup_sql(table, condition), tenant, source, keys, stored_row)?;
            for row in rows {
                out.push(stored_from_row(row, *kind)?);
            }
        }
        Ok(out)
    }

    fn load_objects(
        &self,
        sql: &str,
        kind: EntryKind,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Stored>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(q("preparing object query"))?;
        let rows = stmt.query_map(args, stored_row).map_err(q("reading objects"))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(stored_from_row(row.map_err(q("reading object row"))?, kind)?);
        }
        Ok(out)
    }
}

/// Memberships whose `column` is one of a batch of ids. Ids are unique to
/// their source, so the source (`?2`) is not filtered on: a filter on it
/// made SQLite read every membership of the source, where the id's index
/// (or the primary key) alone covers the query.
fn membership_lookup_sql(column: &str) -> String {
    format!(
        "SELECT group_id, member_id FROM memberships WHERE tenant = ?1 AND {column} IN ({{keys}}) AND ?2 IS NOT NULL"
    )
}

/// The members of a batch of groups with their lookup keys, users then groups.
/// Ids are unique to their source (they derive from it), so the source is not
/// filtered on: `?2` is bound but unused, and the indexes cover the query.
const MEMBER_KEYS_SQL: &str = "
    SELECT m.group_id, m.member_id, o.dn, o.dn_key, o.anchor FROM memberships m
      JOIN users o INDEXED BY users_member_keys ON o.tenant = m.tenant AND o.id = m.member_id
     WHERE m.tenant = ?1 AND m.group_id IN ({keys}) AND m.member_kind = 'user' AND ?2 IS NOT NULL
    UNION ALL
    SELECT m.group_id, m.member_id, o.dn, o.dn_key, o.anchor FROM memberships m
      JOIN groups o INDEXED BY groups_member_keys ON o.tenant = m.tenant AND o.id = m.member_id
     WHERE m.tenant = ?1 AND m.group_id IN ({keys}) AND m.member_kind = 'group'";

/// Objects of `table` matching `condition` over a batch of keys. Looked up by
/// id, the source is kept out of index selection for the same reason.
fn object_lookup_sql(table: &str, condition: &str) -> String {
    let source = if condition.starts_with("id ") { "+source" } else { "source" };
    format!("SELECT {USER_COLUMNS} FROM {table} WHERE tenant = ?1 AND {source} = ?2 AND {condition}")
}

fn stored_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
}

/// Fills the lookup keys of rows stored before they existed.
fn backfill_lookup_keys(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    for table in ["users", "groups"] {
        let rows: Vec<(String, String, Option<String>, Option<String>)> = {
            let mut stmt = tx
                .prepare(&format!("SELECT tenant, id, dn, attrs FROM {table}"))
                .map_err(q("reading objects to key"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .map_err(q("reading objects to key"))?;
            rows.collect::<Result<_, _>>().map_err(q("reading objects to key"))?
        };
        let mut update = tx
            .prepare(&format!(
                "UPDATE {table} SET dn_key = ?3{} WHERE tenant = ?1 AND id = ?2",
                if table == "users" { ", user_name_key = ?4" } else { "" }
            ))
            .map_err(q("keying objects"))?;
        for (tenant, id, dn, attrs) in rows {
            let name_key = attrs
                .as_deref()
                .and_then(|a| serde_json::from_str::<Attributes>(a).ok())
                .and_then(|a| user_name_key(&a));
            let key = dn_key(dn.as_deref());
            if table == "users" {
                update.execute(params![tenant, id, key, name_key])
            } else {
                update.execute(params![tenant, id, key])
            }
            .map_err(q("keying objects"))?;
        }
    }
    Ok(())
}

/// Runs `query` once per chunk of `keys` (SQLite limits bound parameters),
/// with `?1` = tenant, `?2` = source and the chunk's keys from `?3` on, in
/// place of `{keys}`.
fn in_chunks<T>(
    conn: &Connection,
    query: &str,
    tenant: &str,
    source: &str,
    keys: &[String],
    mut row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    const CHUNK: usize = 500;
    let mut out = Vec::new();
    for chunk in keys.chunks(CHUNK) {
        let marks: Vec<String> = (0..chunk.len()).map(|i| format!("?{}", i + 3)).collect();
        let sql = query.replace("{keys}", &marks.join(", "));
        let mut stmt = conn.prepare_cached(&sql).map_err(q("preparing lookup"))?;
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&tenant, &source];
        args.extend(chunk.iter().map(|k| k as &dyn rusqlite::ToSql));
        let rows = stmt.query_map(args.as_slice(), &mut row).map_err(q("looking up"))?;
        for r in rows {
            out.push(r.map_err(q("reading lookup row"))?);
        }
    }
    Ok(out)
}

impl Store for SqliteStore {
    fn ensure_tenant(&mut self, tenant: &str) -> Result<(), StoreError> {
        self.conn
            .execute("INSERT OR IGNORE INTO tenants (id, created_at) VALUES (?1, ?2)", params![tenant, now_rfc3339()])
            .map_err(q("creating tenant"))?;
        Ok(())
    }

    fn snapshot(&mut self, tenant: &str, source: &str) -> Result<Snapshot, StoreError> {
        let mut snap = Snapshot::default();
        let users = self.load_objects(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE tenant = ?1 AND source = ?2"),
            EntryKind::User,
            &[&tenant, &source],
        )?;
        let groups = self.load_objects(
            &format!("SELECT {USER_COLUMNS} FROM groups WHERE tenant = ?1 AND source = ?2"),
            EntryKind::Group,
            &[&tenant, &source],
        )?;
        snap.objects = users.into_iter().chain(groups).map(|o| (o.id.clone(), o)).collect::<HashMap<_, _>>();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT group_id, member_id FROM memberships WHERE tenant = ?1 AND source = ?2")
            .map_err(q("preparing membership query"))?;
        let rows = stmt
            .query_map(params![tenant, source], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(q("reading memberships"))?;
        snap.memberships =
            rows.collect::<Result<crate::diff::Memberships, _>>().map_err(q("reading membership row"))?;
        Ok(snap)
    }

    fn source_anchors(
        &mut self,
        tenant: &str,
        source: &str,
    ) -> Result<std::collections::BTreeMap<EntryKind, std::collections::BTreeSet<String>>, StoreError> {
        let mut by_kind: std::collections::BTreeMap<EntryKind, std::collections::BTreeSet<String>> =
            std::collections::BTreeMap::new();
        for (kind, table) in [(EntryKind::User, "users"), (EntryKind::Group, "groups")] {
            let mut stmt = self
                .conn
                .prepare_cached(&format!("SELECT anchor FROM {table} WHERE tenant = ?1 AND source = ?2"))
                .map_err(q("preparing anchor query"))?;
            let rows =
                stmt.query_map(params![tenant, source], |r| r.get::<_, String>(0)).map_err(q("reading anchors"))?;
            let anchors =
                rows.collect::<Result<std::collections::BTreeSet<_>, _>>().map_err(q("reading anchor row"))?;
            by_kind.insert(kind, anchors);
        }
        Ok(by_kind)
    }

    fn objects_by_ids(&mut self, tenant: &str, source: &str, ids: &[String]) -> Result<Vec<Stored>, StoreError> {
        self.objects_where(tenant, source, "id IN ({keys})", ids, true)
    }

    fn objects_by_anchors(
        &mut self,
        tenant: &str,
        source: &str,
        anchors: &[String],
    ) -> Result<Vec<Stored>, StoreError> {
        self.objects_where(tenant, source, "anchor IN ({keys})", anchors, true)
    }

    fn objects_by_dn_keys(&mut self, tenant: &str, source: &str, keys: &[String]) -> Result<Vec<Stored>, StoreError> {
        self.objects_where(tenant, source, "dn_key IN ({keys})", keys, true)
    }

    fn users_by_user_name_keys(
        &mut self,
        tenant: &str,
        source: &str,
        keys: &[String],
    ) -> Result<Vec<Stored>, StoreError> {
        self.objects_where(tenant, source, "user_name_key IN ({keys})", keys, false)
    }

    fn memberships_touching(
        &mut self,
        tenant: &str,
        source: &str,
        ids: &[String],
        end: MembershipEnd,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let column = match end {
            MembershipEnd::Group => "group_id",
            MembershipEnd::Member => "member_id",
        };
        in_chunks(&self.conn, &membership_lookup_sql(column), tenant, source, ids, |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
    }

    fn member_keys(&mut self, tenant: &str, source: &str, group_ids: &[String]) -> Result<Vec<MemberKey>, StoreError> {
        in_chunks(&self.conn, MEMBER_KEYS_SQL, tenant, source, group_ids, |r| {
            Ok(MemberKey {
                group_id: r.get(0)?,
                member_id: r.get(1)?,
                dn: r.get(2)?,
                dn_key: r.get(3)?,
                anchor: r.get(4)?,
            })
        })
    }

    fn object_count(&mut self, tenant: &str, source: &str) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM users WHERE tenant = ?1 AND source = ?2)
                      + (SELECT COUNT(*) FROM groups WHERE tenant = ?1 AND source = ?2)",
                params![tenant, source],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(q("counting objects"))
    }

    fn begin_run(&mut self, tenant: &str, trigger: &str, dry_run: bool) -> Result<i64, StoreError> {
        self.ensure_tenant(tenant)?;
        self.conn
            .execute(
                "INSERT INTO runs (tenant, trigger, dry_run, status, started_at) VALUES (?1, ?2, ?3, 'running', ?4)",
                params![tenant, trigger, dry_run, now_rfc3339()],
            )
            .map_err(q("recording run start"))?;
        Ok(self.conn.last_insert_rowid())
    }

    fn finish_run(&mut self, run_id: i64, outcome: &RunOutcome) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE runs SET status = ?2, finished_at = ?3, summary = ?4 WHERE id = ?1",
                params![run_id, outcome.status, now_rfc3339(), outcome.summary.to_string()],
            )
            .map_err(q("recording run end"))?;
        let (tenant, trigger): (String, String) = self
            .conn
            .query_row("SELECT tenant, trigger FROM runs WHERE id = ?1", params![run_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(q("reading run"))?;
        audit_append(&self.conn, &tenant, "run", &trigger, &run_audit_detail(run_id, outcome, &trigger))
    }

    fn mark_run_approved(&mut self, blocked_run: i64, by_run: i64) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE runs SET status = 'approved', summary = json_set(summary, '$.approved_by_run', ?2)
                 WHERE id = ?1 AND status = 'blocked'",
                params![blocked_run, by_run],
            )
            .map_err(q("marking a run approved"))?;
        Ok(n == 1)
    }

    fn runs(&mut self, tenant: &str, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, tenant, trigger, dry_run, status, started_at, finished_at, summary FROM runs WHERE tenant = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(q("preparing runs query"))?;
        let rows = stmt.query_map(params![tenant, limit], run_row).map_err(q("reading runs"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(q("reading run row"))
    }

    fn run(&mut self, tenant: &str, id: i64) -> Result<Option<RunRecord>, StoreError> {
        self.conn
            .query_row(
                "SELECT id, tenant, trigger, dry_run, status, started_at, finished_at, summary FROM runs WHERE tenant = ?1 AND id = ?2",
                params![tenant, id],
                run_row,
            )
            .optional()
            .map_err(q("reading run"))
    }

    fn apply(&mut self, plan: &Plan, run_id: i64) -> Result<ApplyStats, StoreError> {
        // A bigger page cache for the apply alone: a full sync inserts into
        // indexes keyed by anchor, DN and userName in random order, and with
        // SQLite's default 2 MB most of those inserts read their page back
        // from the WAL and spilled another page to it (a fifth of a
        // 100,000-user apply). Given back as soon as the apply ends.
        self.conn.pragma_update(None, "cache_size", APPLY_CACHE_SIZE).map_err(q("sizing the page cache"))?;
        let applied = std::thread::scope(|scope| {
            // The events of creates and membership changes (nearly all of a
            // full sync's half a million) are serialised and keyed on the
            // other core while this one writes: a fifth of the apply's time.
            let (to, ahead) = std::sync::mpsc::sync_channel(EVENTS_AHEAD_CHUNKS);
            let made_ahead: usize = plan
                .sources
                .iter()
                .map(|sp| {
                    sp.memberships.len() + sp.changes.iter().filter(|c| matches!(c, Change::Create { .. })).count()
                })
                .sum();
            if made_ahead < EVENTS_AHEAD_THREAD_FROM {
                // Fits the channel: not worth a thread.
                events_ahead(plan, run_id, to);
            } else {
                scope.spawn(move || events_ahead(plan, run_id, to));
            }
            self.apply_plan(plan, run_id, ahead)
        });
        let restored =
            self.conn.pragma_update(None, "cache_size", DEFAULT_CACHE_SIZE).map_err(q("restoring the page cache"));
        let stats = applied?;
        restored?;
        Ok(stats)
    }

    fn record_quarantine(
        &mut self,
        tenant: &str,
        source: &str,
        run_id: i64,
        items: &[QuarantineItem],
        settled: &Settled,
    ) -> Result<(), StoreError> {
        self.ensure_tenant(tenant)?;
        let now = now_rfc3339();
        let tx = write_transaction(&mut self.conn).map_err(q("starting quarantine update"))?;
        match settled {
            Settled::All => {
                tx.execute(
                    "UPDATE quarantine SET run_id = -1 WHERE tenant = ?1 AND source = ?2",
                    params![tenant, source],
                )
                .map_err(q("marking quarantine"))?;
            }
            Settled::Anchors(anchors) => {
                in_chunks(
                    &tx,
                    "UPDATE quarantine SET run_id = -1 WHERE tenant = ?1 AND source = ?2 AND anchor IN ({keys}) RETURNING 1",
                    tenant,
                    source,
                    anchors,
                    |_| Ok(()),
                )?;
            }
            Settled::Nothing => {}
        }
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO quarantine (tenant, source, item_key, anchor, kind, dn, stage, reason, plugin, run_id, first_seen, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)
                     ON CONFLICT (tenant, source, item_key) DO UPDATE SET
                        anchor = excluded.anchor, kind = excluded.kind, dn = excluded.dn, stage = excluded.stage,
                        reason = excluded.reason, plugin = excluded.plugin, run_id = excluded.run_id, last_seen = excluded.last_seen",
                )
                .map_err(q("preparing quarantine upsert"))?;
            for it in items {
                let key = quarantine_key(it);
                upsert
                    .execute(params![
                        tenant,
                        source,
                        key,
                        it.anchor,
                        it.kind.map(|k| k.as_str()),
                        it.dn,
                        it.stage,
                        it.reason,
                        it.plugin,
                        run_id,
                        now
                    ])
                    .map_err(q("recording quarantine"))?;
            }
        }
        if *settled != Settled::Nothing {
            tx.execute(
                "DELETE FROM quarantine WHERE tenant = ?1 AND source = ?2 AND run_id = -1",
                params![tenant, source],
            )
            .map_err(q("clearing resolved quarantine"))?;
        }
        tx.commit().map_err(q("committing quarantine"))?;
        Ok(())
    }

    fn quarantine(&mut self, tenant: &str) -> Result<Vec<QuarantineRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT source, anchor, kind, dn, stage, reason, plugin, first_seen, last_seen, run_id
                 FROM quarantine WHERE tenant = ?1 ORDER BY source, dn, anchor",
            )
            .map_err(q("preparing quarantine query"))?;
        let rows = stmt
            .query_map(params![tenant], |r| {
                let kind: Option<String> = r.get(2)?;
                Ok(QuarantineRecord {
                    item: QuarantineItem {
                        source: r.get(0)?,
                        anchor: r.get(1)?,
                        kind: kind.as_deref().map(entry_kind),
                        dn: r.get(3)?,
                        stage: r.get(4)?,
                        reason: r.get(5)?,
                        plugin: r.get(6)?,
                    },
                    first_seen: r.get(7)?,
                    last_seen: r.get(8)?,
                    run_id: r.get(9)?,
                })
            })
            .map_err(q("reading quarantine"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(q("reading quarantine row"))
    }

    fn users(&mut self, tenant: &str) -> Result<Vec<Stored>, StoreError> {
        self.load_objects(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE tenant = ?1 ORDER BY user_name, id"),
            EntryKind::User,
            &[&tenant],
        )
    }

    fn groups(&mut self, tenant: &str) -> Result<Vec<Stored>, StoreError> {
        self.load_objects(
            &format!("SELECT {USER_COLUMNS} FROM groups WHERE tenant = ?1 ORDER BY display_name, id"),
            EntryKind::Group,
            &[&tenant],
        )
    }

    fn memberships(&mut self, tenant: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT group_id, member_id FROM memberships WHERE tenant = ?1 ORDER BY group_id, member_id",
            )
            .map_err(q("preparing membership query"))?;
        let rows = stmt
            .query_map(params![tenant], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(q("reading memberships"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(q("reading membership row"))
    }

    fn add_plugin(&mut self, r: &PluginRecord, wasm: &[u8]) -> Result<i64, StoreError> {
        self.ensure_tenant(&r.tenant)?;
        let tx = write_transaction(&mut self.conn).map_err(q("starting plugin upload"))?;
        let version: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM plugins WHERE tenant = ?1 AND kind = ?2",
                params![r.tenant, r.kind],
                |row| row.get(0),
            )
            .map_err(q("numbering plugin version"))?;
        tx.execute(
            "INSERT INTO plugins (tenant, kind, version, sha256, name, plugin_version, size, wasm, added_at, added_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                r.tenant,
                r.kind,
                version,
                r.sha256,
                r.name,
                r.plugin_version,
                r.size as i64,
                wasm,
                now_rfc3339(),
                r.added_by
            ],
        )
        .map_err(q("storing plugin"))?;
        tx.commit().map_err(q("committing plugin upload"))?;
        Ok(version)
    }

    fn plugins(&mut self, tenant: &str) -> Result<Vec<PluginRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT p.tenant, p.kind, p.version, p.sha256, p.name, p.plugin_version, p.size, p.added_at, p.added_by,
                        a.version IS NOT NULL
                 FROM plugins p LEFT JOIN active_plugins a
                   ON a.tenant = p.tenant AND a.kind = p.kind AND a.version = p.version
                 WHERE p.tenant = ?1 ORDER BY p.kind, p.version",
            )
            .map_err(q("preparing plugin list"))?;
        let rows = stmt.query_map(params![tenant], plugin_row).map_err(q("listing plugins"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(q("reading plugin row"))
    }

    fn activate_plugin(&mut self, tenant: &str, kind: &str, version: i64) -> Result<(), StoreError> {
        let exists: bool = self
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM plugins WHERE tenant = ?1 AND kind = ?2 AND version = ?3)",
                params![tenant, kind, version],
                |r| r.get(0),
            )
            .map_err(q("looking up plugin version"))?;
        if !exists {
            return Err(StoreError::NoSuchPlugin { tenant: tenant.into(), kind: kind.into(), version });
        }
        self.conn
            .execute(
                "INSERT INTO active_plugins (tenant, kind, version, activated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, kind) DO UPDATE SET version = excluded.version, activated_at = excluded.activated_at",
                params![tenant, kind, version, now_rfc3339()],
            )
            .map_err(q("activating plugin"))?;
        Ok(())
    }

    fn active_plugin(&mut self, tenant: &str, kind: &str) -> Result<Option<(PluginRecord, Vec<u8>)>, StoreError> {
        self.conn
            .query_row(
                "SELECT p.tenant, p.kind, p.version, p.sha256, p.name, p.plugin_version, p.size, p.added_at, p.added_by, 1, p.wasm
                 FROM active_plugins a JOIN plugins p
                   ON a.tenant = p.tenant AND a.kind = p.kind AND a.version = p.version
                 WHERE a.tenant = ?1 AND a.kind = ?2",
                params![tenant, kind],
                |row| Ok((plugin_row(row)?, row.get::<_, Vec<u8>>(10)?)),
            )
            .optional()
            .map_err(q("reading active plugin"))
    }

    fn plugin_health(&mut self, tenant: &str, kind: &str, sha256: &str) -> Result<PluginHealth, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT consecutive_failures, last_error, disabled_at FROM plugin_health WHERE tenant = ?1 AND kind = ?2 AND sha256 = ?3",
                params![tenant, kind, sha256],
                |r| {
                    Ok(PluginHealth {
                        consecutive_failures: r.get::<_, i64>(0)?.max(0) as u32,
                        last_error: r.get(1)?,
                        disabled_at: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(q("reading plugin health"))?
            .unwrap_or_default())
    }

    fn record_plugin_run(
        &mut self,
        tenant: &str,
        kind: &str,
        sha256: &str,
        error: Option<&str>,
        disable_after: u32,
    ) -> Result<PluginHealth, StoreError> {
        let mut h = self.plugin_health(tenant, kind, sha256)?;
        match error {
            None => h = PluginHealth::default(),
            Some(e) => {
                h.consecutive_failures += 1;
                h.last_error = Some(e.to_string());
                if h.consecutive_failures >= disable_after && h.disabled_at.is_none() {
                    h.disabled_at = Some(now_rfc3339());
                }
            }
        }
        self.conn
            .execute(
                "INSERT INTO plugin_health (tenant, kind, sha256, consecutive_failures, last_error, disabled_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant, kind, sha256) DO UPDATE SET consecutive_failures = excluded.consecutive_failures,
                    last_error = excluded.last_error, disabled_at = excluded.disabled_at",
                params![tenant, kind, sha256, h.consecutive_failures as i64, h.last_error, h.disabled_at],
            )
            .map_err(q("recording plugin health"))?;
        Ok(h)
    }

    fn enable_plugin(&mut self, tenant: &str, kind: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM plugin_health WHERE tenant = ?1 AND kind = ?2", params![tenant, kind])
            .map_err(q("re-enabling plugin"))?;
        Ok(())
    }

    fn conflict_decisions(&mut self, tenant: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, value, winner FROM conflict_decisions WHERE tenant = ?1")
            .map_err(q("preparing conflict decisions"))?;
        let rows = stmt
            .query_map(params![tenant], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(q("reading conflict decisions"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(q("reading conflict decision"))
    }

    fn decide_conflict(&mut self, tenant: &str, key: &str, value: &str, winner: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO conflict_decisions (tenant, key, value, winner, decided_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant, key, value) DO UPDATE SET winner = excluded.winner, decided_at = excluded.decided_at",
                params![tenant, key, value.to_lowercase(), winner, now_rfc3339()],
            )
            .map_err(q("recording conflict decision"))?;
        Ok(())
    }

    fn audit(&mut self, tenant: &str, kind: &str, actor: &str, detail: &serde_json::Value) -> Result<(), StoreError> {
        let tx = write_transaction(&mut self.conn).map_err(q("starting audit"))?;
        audit_append(&tx, tenant, kind, actor, detail)?;
        tx.commit().map_err(q("committing audit"))
    }

    fn audit_records(&mut self, tenant: Option<&str>, since: Option<&str>) -> Result<Vec<AuditRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, tenant, at, kind, actor, detail, prev_hash, hash FROM audit
                 WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR at >= ?2) ORDER BY tenant, seq",
            )
            .map_err(q("preparing audit"))?;
        let rows = stmt.query_map(params![tenant, since], audit_row).map_err(q("reading audit"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(q("reading audit record"))
    }

    fn audit_verify(&mut self) -> Result<u64, String> {
        let tenants: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare("SELECT tenant FROM audit UNION SELECT tenant FROM audit_checkpoints ORDER BY 1")
                .map_err(|e| e.to_string())?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| e.to_string())?;
            rows.collect::<Result<_, _>>().map_err(|e| e.to_string())?
        };
        let mut n = 0u64;
        for tenant in tenants {
            let checkpoint: Option<(i64, String)> = self
                .conn
                .query_row("SELECT seq, hash FROM audit_checkpoints WHERE tenant = ?1", params![tenant], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(|e| e.to_string())?;
            let mut chain = ChainCheck::new(&tenant, checkpoint);
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT seq, tenant, at, kind, actor, detail, prev_hash, hash FROM audit WHERE tenant = ?1 ORDER BY rowid",
                )
                .map_err(|e| e.to_string())?;
            let rows = stmt
                .query_map(params![tenant], |r| Ok((audit_row(r)?, r.get::<_, String>(5)?)))
                .map_err(|e| e.to_string())?;
            for row in rows {
                let (r, raw_detail) = row.map_err(|e| e.to_string())?;
                chain.check(r, &raw_detail)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn audit_prune(&mut self, tenant: &str, before: &str) -> Result<u64, StoreError> {
        let tx = write_transaction(&mut self.conn).map_err(q("starting audit prune"))?;
        let last: Option<(i64, String)> = tx
            .query_row(
                "SELECT seq, hash FROM audit WHERE tenant = ?1 AND at < ?2 ORDER BY seq DESC LIMIT 1",
                params![tenant, before],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(q("reading the audit chain"))?;
        let Some((seq, hash)) = last else {
            return Ok(0);
        };
        let n = tx
            .execute("DELETE FROM audit WHERE tenant = ?1 AND seq <= ?2", params![tenant, seq])
            .map_err(q("pruning the audit trail"))?;
        tx.execute(
            "INSERT INTO audit_checkpoints (tenant, seq, hash, pruned_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, pruned_at = excluded.pruned_at",
            params![tenant, seq, hash, now_rfc3339()],
        )
        .map_err(q("moving the audit checkpoint"))?;
        tx.commit().map_err(q("committing audit prune"))?;
        Ok(n as u64)
    }

    fn add_token(&mut self, t: &TokenRecord, hash: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO api_tokens (id, hash, name, tenants, role, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![t.id, hash, t.name, token_tenants_json(&t.tenants), t.role, t.created_at, t.expires_at],
            )
            .map_err(q("storing token"))?;
        Ok(())
    }

    fn tokens(&mut self) -> Result<Vec<TokenRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, name, tenants, role, created_at, expires_at, revoked_at, last_used_at FROM api_tokens ORDER BY created_at",
            )
            .map_err(q("preparing tokens"))?;
        let rows = stmt.query_map([], token_row).map_err(q("reading tokens"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(q("reading token"))
    }

    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let t = self
            .conn
            .query_row(
                "SELECT id, name, tenants, role, created_at, expires_at, revoked_at, last_used_at FROM api_tokens
                 WHERE hash = ?1 AND revoked_at IS NULL",
                params![hash],
                token_row,
            )
            .optional()
            .map_err(q("reading token"))?;
        if let Some(t) = &t {
            let _ = self
                .conn
                .execute("UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1", params![t.id, now_rfc3339()]);
        }
        Ok(t)
    }

    fn revoke_token(&mut self, id: &str) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, now_rfc3339()],
            )
            .map_err(q("revoking token"))?;
        Ok(n > 0)
    }

    fn events(&mut self, tenant: &str, after: i64, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, type, object_id, object_kind, version, idempotency_key, run_id, created_at, payload
                 FROM events WHERE tenant = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )
            .map_err(q("preparing events"))?;
        let rows = stmt
            .query_map(params![tenant, after, limit], |r| {
                Ok((
                    EventRecord {
                        seq: r.get(0)?,
                        event_type: r.get(1)?,
                        object_id: r.get(2)?,
                        object_kind: r.get(3)?,
                        version: r.get(4)?,
                        idempotency_key: r.get(5)?,
                        run_id: r.get(6)?,
                        created_at: r.get(7)?,
                        payload: serde_json::Value::Null,
                    },
                    r.get::<_, String>(8)?,
                ))
            })
            .map_err(q("reading events"))?;
        let mut out = Vec::new();
        for row in rows {
            let (mut e, payload) = row.map_err(q("reading event"))?;
            e.payload = crate::store::common::delivered_payload(tenant, &e, &payload)?;
            out.push(e);
        }
        Ok(out)
    }

    fn put_raw_attributes(&mut self, tenant: &str, source: &str, rows: &[(String, String)]) -> Result<(), StoreError> {
        let now = crate::util::now_rfc3339();
        let tx = write_transaction(&mut self.conn).map_err(q("keeping raw attributes"))?;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT INTO raw_attributes (tenant, object_id, source, attrs, read_at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (tenant, object_id) DO UPDATE SET source = excluded.source, attrs = excluded.attrs, read_at = excluded.read_at
                     WHERE raw_attributes.attrs <> excluded.attrs",
                )
                .map_err(q("keeping raw attributes"))?;
            for (id, attrs) in rows {
                put.execute(params![tenant, id, source, attrs, now]).map_err(q("keeping raw attributes"))?;
            }
        }
        tx.execute(
            "DELETE FROM raw_attributes WHERE tenant = ?1
               AND object_id NOT IN (SELECT id FROM users WHERE tenant = ?1)
               AND object_id NOT IN (SELECT id FROM groups WHERE tenant = ?1)",
            params![tenant],
        )
        .map_err(q("dropping raw attributes of deleted objects"))?;
        tx.commit().map_err(q("keeping raw attributes"))
    }

    fn clear_raw_attributes(&mut self, tenant: &str) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM raw_attributes WHERE tenant = ?1", params![tenant])
            .map_err(q("deleting raw attributes"))
    }

    fn map_memo(&mut self, tenant: &str, source: &str) -> Result<HashMap<String, MemoRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, input_digest, output_digest FROM map_memo WHERE tenant = ?1 AND source = ?2")
            .map_err(q("reading the mapping memo"))?;
        let mut rows = stmt.query(params![tenant, source]).map_err(q("reading the mapping memo"))?;
        let mut out = HashMap::new();
        while let Some(r) = rows.next().map_err(q("reading the mapping memo"))? {
            let read = |i: usize| r.get::<_, String>(i).map_err(q("reading the mapping memo"));
            let (id, input, output) = (read(0)?, read(1)?, read(2)?);
            if let Some(row) = MemoRow::from_hex(&input, &output) {
                out.insert(id, row);
            }
        }
        Ok(out)
    }

    fn put_map_memo(
        &mut self,
        tenant: &str,
        source: &str,
        rows: &[(String, MemoRow)],
        removed: &[String],
    ) -> Result<(), StoreError> {
        if rows.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let tx = write_transaction(&mut self.conn).map_err(q("writing the mapping memo"))?;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT INTO map_memo (tenant, source, id, input_digest, output_digest) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (tenant, source, id) DO UPDATE SET input_digest = excluded.input_digest,
                        output_digest = excluded.output_digest",
                )
                .map_err(q("writing the mapping memo"))?;
            for (id, row) in rows {
                put.execute(params![tenant, source, id, row.input_hex(), row.output_hex()])
                    .map_err(q("writing the mapping memo"))?;
            }
            let mut drop = tx
                .prepare_cached("DELETE FROM map_memo WHERE tenant = ?1 AND source = ?2 AND id = ?3")
                .map_err(q("writing the mapping memo"))?;
            for id in removed {
                drop.execute(params![tenant, source, id]).map_err(q("writing the mapping memo"))?;
            }
        }
        tx.commit().map_err(q("writing the mapping memo"))
    }

    fn raw_attributes(&mut self, tenant: &str, object_id: &str) -> Result<Option<(String, String)>, StoreError> {
        self.conn
            .query_row(
                "SELECT attrs, read_at FROM raw_attributes WHERE tenant = ?1 AND object_id = ?2",
                params![tenant, object_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(q("reading raw attributes"))
    }

    fn prune_events(&mut self, tenant: &str, before: &str) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM events WHERE tenant = ?1 AND created_at < ?2", params![tenant, before])
            .map_err(q("pruning events"))
    }

    fn webhook_state(&mut self, tenant: &str, endpoint: &str) -> Result<WebhookState, StoreError> {
        self.conn
            .query_row(
                "SELECT delivered_seq, attempts, next_attempt_at, last_error FROM webhook_state WHERE tenant = ?1 AND endpoint = ?2",
                params![tenant, endpoint],
                |r| {
                    Ok(WebhookState {
                        delivered_seq: r.get(0)?,
                        attempts: r.get(1)?,
                        next_attempt_at: r.get(2)?,
                        last_error: r.get(3)?,
                    })
                },
            )
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(q("reading webhook state"))
    }

    fn set_webhook_state(&mut self, tenant: &str, endpoint: &str, st: &WebhookState) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO webhook_state (tenant, endpoint, delivered_seq, attempts, next_attempt_at, last_error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant, endpoint) DO UPDATE SET delivered_seq = excluded.delivered_seq,
                   attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error",
                params![tenant, endpoint, st.delivered_seq, st.attempts, st.next_attempt_at, st.last_error],
            )
            .map_err(q("writing webhook state"))?;
        Ok(())
    }

    fn dead_letter(&mut self, tenant: &str, endpoint: &str, seq: i64, error: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO webhook_dead_letters (tenant, endpoint, seq, last_error, failed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![tenant, endpoint, seq, error, now_rfc3339()],
            )
            .map_err(q("writing dead letter"))?;
        Ok(())
    }

    fn dead_letters(&mut self, tenant: &str, endpoint: &str) -> Result<Vec<(i64, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, last_error FROM webhook_dead_letters WHERE tenant = ?1 AND endpoint = ?2 ORDER BY seq",
            )
            .map_err(q("preparing dead letters"))?;
        let rows = stmt
            .query_map(params![tenant, endpoint], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(q("reading dead letters"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(q("reading dead letter"))
    }

    fn clear_dead_letter(&mut self, tenant: &str, endpoint: &str, seq: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "DELETE FROM webhook_dead_letters WHERE tenant = ?1 AND endpoint = ?2 AND seq = ?3",
                params![tenant, endpoint, seq],
            )
            .map_err(q("clearing dead letter"))?;
        Ok(())
    }

    fn record_app_edit(&mut self, tenant: &str, edit: &AppEdit) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO app_edits (tenant, object_id, attribute, base, value, recorded_at, recorded_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (tenant, object_id, attribute) DO UPDATE SET value = excluded.value,
                   recorded_at = excluded.recorded_at, recorded_by = excluded.recorded_by",
                params![
                    tenant,
                    edit.object_id,
                    edit.attribute,
                    edit_list_json(&edit.base),
                    edit_list_json(&edit.value),
                    edit.recorded_at,
                    edit.recorded_by
                ],
            )
            .map_err(q("recording app edit"))?;
        Ok(())
    }

    fn app_edits(&mut self, tenant: &str) -> Result<Vec<AppEdit>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT object_id, attribute, base, value, recorded_at, recorded_by FROM app_edits
                 WHERE tenant = ?1 ORDER BY object_id, attribute",
            )
            .map_err(q("preparing app edits"))?;
        let rows = stmt
            .query_map(params![tenant], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(q("reading app edits"))?;
        let mut out = Vec::new();
        for row in rows {
            let (object_id, attribute, base, value, recorded_at, recorded_by) = row.map_err(q("reading app edit"))?;
            out.push(AppEdit {
                base: parse_edit_list(&base, &object_id, &attribute)?,
                value: parse_edit_list(&value, &object_id, &attribute)?,
                object_id,
                attribute,
                recorded_at,
                recorded_by,
            });
        }
        Ok(out)
    }

    fn settle_app_edits(&mut self, tenant: &str, actions: &[crate::conflict::EditAction]) -> Result<(), StoreError> {
        use crate::conflict::EditAction;
        let tx = write_transaction(&mut self.conn).map_err(q("starting app edit transaction"))?;
        for a in actions {
            match a {
                EditAction::Clear { object_id, attribute } => tx.execute(
                    "DELETE FROM app_edits WHERE tenant = ?1 AND object_id = ?2 AND attribute = ?3",
                    params![tenant, object_id, attribute],
                ),
                EditAction::Rebase { object_id, attribute, base } => tx.execute(
                    "UPDATE app_edits SET base = ?4 WHERE tenant = ?1 AND object_id = ?2 AND attribute = ?3",
                    params![tenant, object_id, attribute, edit_list_json(base)],
                ),
            }
            .map_err(q("settling app edit"))?;
        }
        tx.commit().map_err(q("committing app edits"))
    }

    fn dismiss_quarantine(&mut self, tenant: &str, anchor: &str) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM quarantine WHERE tenant = ?1 AND anchor = ?2", params![tenant, anchor])
            .map_err(q("dismissing quarantine"))
    }

    fn source_state(&mut self, tenant: &str, source: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM source_state WHERE tenant = ?1 AND source = ?2 AND key = ?3",
                params![tenant, source, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(q("reading source state"))
    }

    fn source_states(&mut self, tenant: &str, source: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, value FROM source_state WHERE tenant = ?1 AND source = ?2")
            .map_err(q("preparing source state"))?;
        let rows = stmt
            .query_map(params![tenant, source], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(q("reading source state"))?;
        rows.collect::<Result<BTreeMap<_, _>, _>>().map_err(q("reading source state row"))
    }

    fn set_source_state(&mut self, tenant: &str, source: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.ensure_tenant(tenant)?;
        let tx = write_transaction(&mut self.conn).map_err(q("starting a source state write"))?;
        check_fence(&tx, self.fence.as_ref())?;
        tx.execute(
            "INSERT INTO source_state (tenant, source, key, value, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (tenant, source, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![tenant, source, key, value, now_rfc3339()],
        )
        .map_err(q("writing source state"))?;
        tx.commit().map_err(q("committing source state"))?;
        Ok(())
    }

    fn claim_lease(&mut self, resource: &str, node: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        // One statement: the row is taken only when free, run out or ours, so
        // two nodes claiming at once cannot both win.
        let owner: Option<String> = self
            .conn
            .query_row(
                &format!(
                    "INSERT INTO leases (resource, owner, acquired_at, renewed_at, expires_at)
                     VALUES (?1, ?2, {NOW_MS}, {NOW_MS}, {NOW_MS} + ?3)
                     ON CONFLICT (resource) DO UPDATE SET
                         owner = excluded.owner,
                         acquired_at = CASE WHEN leases.owner = excluded.owner THEN leases.acquired_at ELSE excluded.acquired_at END,
                         renewed_at = excluded.renewed_at,
                         expires_at = excluded.expires_at
                     WHERE leases.owner = excluded.owner OR leases.expires_at <= excluded.renewed_at
                     RETURNING owner"
                ),
                params![resource, node, ttl_ms],
                |r| r.get(0),
            )
            .optional()
            .map_err(q("claiming a lease"))?;
        Ok(owner.as_deref() == Some(node))
    }

    fn release_lease(&mut self, resource: &str, node: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM leases WHERE resource = ?1 AND owner = ?2", params![resource, node])
            .map_err(q("releasing a lease"))?;
        Ok(())
    }

    fn leases(&mut self) -> Result<Vec<LeaseRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT resource, owner, acquired_at, renewed_at, expires_at, expires_at <= {NOW_MS} FROM leases ORDER BY resource"
            ))
            .map_err(q("preparing leases"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(LeaseRecord {
                    resource: r.get(0)?,
                    owner: r.get(1)?,
                    acquired_at: r.get(2)?,
                    renewed_at: r.get(3)?,
                    expires_at: r.get(4)?,
                    expired: r.get(5)?,
                })
            })
            .map_err(q("reading leases"))?;
        rows.collect::<Result<_, _>>().map_err(q("reading a lease"))
    }

    fn node_heartbeat(&mut self, node: &str, info: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                &format!(
                    "INSERT INTO nodes (node, info, started_at, seen_at) VALUES (?1, ?2, {NOW_MS}, {NOW_MS})
                     ON CONFLICT (node) DO UPDATE SET info = excluded.info, seen_at = excluded.seen_at"
                ),
                params![node, info],
            )
            .map_err(q("recording a node heartbeat"))?;
        Ok(())
    }

    fn nodes(&mut self, alive_ms: i64) -> Result<Vec<NodeRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT node, info, started_at, seen_at, seen_at > {NOW_MS} - ?1 FROM nodes ORDER BY node"
            ))
            .map_err(q("preparing nodes"))?;
        let rows = stmt
            .query_map(params![alive_ms], |r| {
                Ok(NodeRecord {
                    node: r.get(0)?,
                    info: r.get(1)?,
                    started_at: r.get(2)?,
                    seen_at: r.get(3)?,
                    alive: r.get(4)?,
                })
            })
            .map_err(q("reading nodes"))?;
        rows.collect::<Result<_, _>>().map_err(q("reading a node"))
    }

    fn remove_node(&mut self, node: &str) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM nodes WHERE node = ?1", params![node]).map_err(q("removing a node"))?;
        Ok(())
    }

    fn set_fence(&mut self, fence: Option<Fence>) {
        self.fence = fence;
    }
}

/// The seq and hash a tenant's chain continues from: its last record, or the
/// checkpoint pruning left.
fn audit_head(conn: &rusqlite::Connection, tenant: &str) -> Result<Option<(i64, String)>, StoreError> {
    let last = conn
        .query_row("SELECT seq, hash FROM audit WHERE tenant = ?1 ORDER BY seq DESC LIMIT 1", params![tenant], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(q("reading the audit chain"))?;
    match last {
        Some(head) => Ok(Some(head)),
        None => conn
            .query_row("SELECT seq, hash FROM audit_checkpoints WHERE tenant = ?1", params![tenant], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(q("reading the audit checkpoint")),
    }
}

fn insert_audit(
    conn: &rusqlite::Connection,
    tenant: &str,
    kind: &str,
    actor: &str,
    a: &NewAudit,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit (seq, tenant, at, kind, actor, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .map_err(q("preparing audit insert"))?
    .execute(params![a.seq, tenant, a.at, kind, actor, a.detail, a.prev_hash, a.hash])
    .map_err(q("appending to the audit trail"))?;
    Ok(())
}

/// Appends one record to the chain, inside the caller's transaction.
fn audit_append(
    conn: &rusqlite::Connection,
    tenant: &str,
    kind: &str,
    actor: &str,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    let record = AuditChain::after(tenant, audit_head(conn, tenant)?).next(kind, actor, detail);
    insert_audit(conn, tenant, kind, actor, &record)
}

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        trigger: r.get(2)?,
        dry_run: r.get(3)?,
        status: r.get(4)?,
        started_at: r.get(5)?,
        finished_at: r.get(6)?,
        summary: parse_summary(&r.get::<_, String>(7)?),
    })
}

fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    let detail: String = r.get(5)?;
    Ok(AuditRecord {
        seq: r.get(0)?,
        tenant: r.get(1)?,
        at: r.get(2)?,
        kind: r.get(3)?,
        actor: r.get(4)?,
        detail: parse_audit_detail(detail),
        prev_hash: r.get(6)?,
        hash: r.get(7)?,
    })
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    let tenants: String = r.get(2)?;
    Ok(TokenRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        tenants: parse_token_tenants(&tenants),
        role: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        revoked_at: r.get(6)?,
        last_used_at: r.get(7)?,
    })
}

fn plugin_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PluginRecord> {
    Ok(PluginRecord {
        tenant: r.get(0)?,
        kind: r.get(1)?,
        version: r.get(2)?,
        sha256: r.get(3)?,
        name: r.get(4)?,
        plugin_version: r.get(5)?,
        size: r.get::<_, i64>(6)?.max(0) as u64,
        added_at: r.get(7)?,
        added_by: r.get(8)?,
        active: r.get(9)?,
    })
}

/// Writes the events the outbox holds, inside the apply's transaction.
/// A deleted object's memberships, as a group and as a member. The member
/// index is named: for a DELETE from the WITHOUT ROWID table, SQLite
/// preferred scanning the tenant's whole primary-key range (every
/// membership; 25 ms per deleted user at 100,000 users) to the index.
const DELETE_MEMBERSHIPS_OF_SQL: [&str; 2] = [
    "DELETE FROM memberships WHERE tenant = ?1 AND group_id = ?2",
    "DELETE FROM memberships INDEXED BY memberships_member WHERE tenant = ?1 AND member_id = ?2",
];

const EVENT_INSERT_SQL: &str =
    "INSERT INTO events (tenant, seq, type, object_id, object_kind, version, idempotency_key, run_id, payload, created_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// `insert`: [`EVENT_INSERT_SQL`], prepared once per apply (looking it up in
/// the statement cache hashed the SQL text for each of a full sync's half
/// a million events).
fn write_events(insert: &mut rusqlite::CachedStatement<'_>, outbox: &mut Outbox<'_>) -> Result<(), StoreError> {
    let (tenant, run_id, now) = (outbox.tenant(), outbox.run_id(), outbox.now());
    for e in outbox.drain() {
        insert
            .execute(params![
                tenant,
                e.seq,
                e.event_type,
                e.object_id,
                e.object_kind,
                e.version,
                e.idempotency_key,
                run_id,
                e.payload,
                now
            ])
            .map_err(q("writing event"))?;
    }
    Ok(())
}

fn insert_object(
    tx: &rusqlite::Transaction<'_>,
    tenant: &str,
    source: &str,
    o: &PlannedObject,
    now: &str,
) -> Result<(), StoreError> {
    let attrs = serde_json::to_string(&o.attrs).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    match o.kind {
        EntryKind::User => tx
            .prepare_cached(
                "INSERT INTO users (tenant, id, source, anchor, dn, user_name, active, attrs, version, created_at, updated_at, dn_key, user_name_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?9, ?10, ?11)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    tenant,
                    o.id,
                    source,
                    o.anchor,
                    o.dn,
                    first(&o.attrs, "userName"),
                    is_active(&o.attrs),
                    attrs,
                    now,
                    dn_key(o.dn.as_deref()),
                    user_name_key(&o.attrs)
                ])
            }),
        EntryKind::Group => tx
            .prepare_cached(
                "INSERT INTO groups (tenant, id, source, anchor, dn, display_name, attrs, version, created_at, updated_at, dn_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?8, ?9)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    tenant,
                    o.id,
                    source,
                    o.anchor,
                    o.dn,
                    first(&o.attrs, "displayName"),
                    attrs,
                    now,
                    dn_key(o.dn.as_deref())
                ])
            }),
    }
    .map_err(q("inserting object"))?;
    Ok(())
}

fn update_object(
    tx: &rusqlite::Transaction<'_>,
    tenant: &str,
    o: &PlannedObject,
    from_version: i64,
    now: &str,
) -> Result<usize, StoreError> {
    let attrs = serde_json::to_string(&o.attrs).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    match o.kind {
        EntryKind::User => tx
            .prepare_cached(
                "UPDATE users SET dn = ?3, user_name = ?4, active = ?5, attrs = ?6, version = version + 1, updated_at = ?7,
                                  dn_key = ?9, user_name_key = ?10
                 WHERE tenant = ?1 AND id = ?2 AND version = ?8",
            )
            .and_then(|mut s| {
                s.execute(params![
                    tenant,
                    o.id,
                    o.dn,
                    first(&o.attrs, "userName"),
                    is_active(&o.attrs),
                    attrs,
                    now,
                    from_version,
                    dn_key(o.dn.as_deref()),
                    user_name_key(&o.attrs)
                ])
            }),
        EntryKind::Group => tx
            .prepare_cached(
                "UPDATE groups SET dn = ?3, display_name = ?4, attrs = ?5, version = version + 1, updated_at = ?6, dn_key = ?8
                 WHERE tenant = ?1 AND id = ?2 AND version = ?7",
            )
            .and_then(|mut s| {
                s.execute(params![
                    tenant,
                    o.id,
                    o.dn,
                    first(&o.attrs, "displayName"),
                    attrs,
                    now,
                    from_version,
                    dn_key(o.dn.as_deref())
                ])
            }),
    }
    .map_err(q("updating object"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dn::normalize_dn;
    use crate::plan::SourcePlan;

    /// The apply's commit does not run SQLite's checkpoint (it is the instant
    /// the changes are applied), but the next write does: the WAL never goes
    /// unchecked.
    #[test]
    fn the_apply_commit_leaves_the_checkpoint_to_the_next_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = SqliteStore::open(dir.path()).expect("store");
        // ≈ 6 MB of rows: well past the 1,000-page (4 MB) threshold.
        let changes = (0..3000)
            .map(|i| Change::Create {
                object: PlannedObject {
                    id: format!("u{i:05}"),
                    kind: EntryKind::User,
                    anchor: format!("anchor-{i}"),
                    dn: Some(format!("uid=user{i},ou=people,dc=x")),
                    attrs: [
                        ("userName".to_string(), vec![format!("user{i}")]),
                        ("title".to_string(), vec!["x".repeat(2000)]),
                    ]
                    .into_iter()
                    .collect(),
                },
            })
            .collect();
        let plan = Plan {
            tenant: "t".into(),
            sources: vec![SourcePlan {
                source: "ldap".into(),
                changes,
                memberships: Vec::new(),
                read_complete: true,
                existing_objects: 0,
            }],
        };
        let db_bytes = || std::fs::metadata(dir.path().join(DB_FILE)).expect("db file").len();
        let run = store.begin_run("t", "test", false).expect("run");
        let before = db_bytes();
        store.apply(&plan, run).expect("apply");
        assert_eq!(db_bytes(), before, "the apply's commit copied the WAL into the database file");
        let autocheckpoint: i64 = store.conn.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0)).expect("pragma");
        assert_eq!(autocheckpoint, WAL_AUTOCHECKPOINT_PAGES);
        store
            .finish_run(run, &RunOutcome { status: "applied".into(), summary: serde_json::json!({}) })
            .expect("finish");
        assert!(db_bytes() > before + 4_000_000, "the next write did not checkpoint: {} bytes", db_bytes());
    }

    /// Rows stored before migration 10 get their lookup keys from it: the DN
    /// normalised as `dn::normalize_dn` does, the userName lower-cased
    /// beyond ASCII.
    #[test]
    fn the_lookup_keys_of_older_rows_are_filled_in() {
        let mut store = SqliteStore::open_in_memory().expect("store");
        store.ensure_tenant("t").expect("tenant");
        store
            .conn
            .execute_batch(
                r#"INSERT INTO users (tenant, id, source, anchor, dn, user_name, attrs, version, created_at, updated_at)
                   VALUES ('t', 'u1', 's', 'a1', 'UID=Jörg , OU=People,DC=Example', 'Jörg', '{"userName":["Jörg"]}', 1, 'x', 'x');
                   INSERT INTO groups (tenant, id, source, anchor, dn, display_name, attrs, version, created_at, updated_at)
                   VALUES ('t', 'g1', 's', 'a2', 'CN=Staff,DC=Example', 'Staff', '{}', 1, 'x', 'x');"#,
            )
            .expect("rows without keys");
        let tx = store.conn.transaction().expect("tx");
        backfill_lookup_keys(&tx).expect("backfill");
        tx.commit().expect("commit");
        let user = store.users_by_user_name_keys("t", "s", &["jörg".into()]).expect("by userName");
        assert_eq!(user.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), ["u1"]);
        let keys = [normalize_dn("uid=Jörg,ou=People,dc=Example"), normalize_dn("cn=staff,dc=example")];
        let mut found: Vec<String> =
            store.objects_by_dn_keys("t", "s", &keys).expect("by DN").into_iter().map(|o| o.id).collect();
        found.sort();
        assert_eq!(found, ["g1", "u1"]);
    }

    /// Every keyed lookup of an incremental run goes through the index of
    /// its key, never a scan of the source's rows (which is what made a
    /// realtime change at 100,000 users cost 160 ms).
    #[test]
    fn keyed_lookups_use_the_key_index() {
        let store = SqliteStore::open_in_memory().expect("store");
        let mut queries: Vec<(String, &str)> = vec![
            (membership_lookup_sql("group_id"), "USING PRIMARY KEY (tenant=? AND group_id=?)"),
            (membership_lookup_sql("member_id"), "COVERING INDEX memberships_member (tenant=? AND member_id=?)"),
        ];
        for table in ["users", "groups"] {
            queries.push((object_lookup_sql(table, "id IN ({keys})"), "(tenant=? AND id=?)"));
            queries.push((object_lookup_sql(table, "anchor IN ({keys})"), "(tenant=? AND source=? AND anchor=?)"));
            queries.push((object_lookup_sql(table, "dn_key IN ({keys})"), "(tenant=? AND source=? AND dn_key=?)"));
        }
        queries.push((
            object_lookup_sql("users", "user_name_key IN ({keys})"),
            "(tenant=? AND source=? AND user_name_key=?)",
        ));
        queries.push((MEMBER_KEYS_SQL.to_string(), "USING COVERING INDEX users_member_keys (tenant=? AND id=?)"));
        queries.push((DELETE_MEMBERSHIPS_OF_SQL[0].to_string(), "USING PRIMARY KEY (tenant=? AND group_id=?)"));
        queries.push((
            DELETE_MEMBERSHIPS_OF_SQL[1].to_string(),
            "USING INDEX memberships_member (tenant=? AND member_id=?)",
        ));
        for (sql, want) in queries {
            let sql = format!("EXPLAIN QUERY PLAN {}", sql.replace("{keys}", "?3, ?4"));
            let plan: Vec<String> = store
                .conn
                .prepare(&sql)
                .and_then(|mut st| {
                    let values = ["t", "s", "a", "b"];
                    let bound = &values[..st.parameter_count()];
                    st.query_map(rusqlite::params_from_iter(bound), |r| r.get::<_, String>(3))?
                        .collect::<Result<_, _>>()
                })
                .expect("query plan");
            let plan = plan.join("; ");
            assert!(!plan.contains("SCAN") && plan.contains(want), "{sql}: {plan}");
        }
    }
}
