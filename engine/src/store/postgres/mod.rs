//! The PostgreSQL store (`[store] url = "postgres://…"`), which several roster
//! processes can share: it behaves as the SQLite store does, call for call.
//!
//! What sharing takes: migrations run under an advisory lock; a tenant's event
//! numbers and audit chain are extended under a per-tenant advisory lock
//! ([`db::Db::lock_tenant`]), so both stay gap-free and linear whichever
//! process writes; reads that take several statements see one snapshot.

mod apply;
mod audit;
mod db;
mod migrations;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use postgres::{GenericClient, Row};

pub use self::db::PgTarget;
pub(crate) use self::db::redacted;
use self::db::{Conn, Db, connect, get};
use super::common::{
    StoredRow, USER_COLUMNS, edit_list_json, entry_kind, parse_edit_list, parse_summary, parse_token_tenants,
    quarantine_key, run_audit_detail, stored_from_row, table, token_tenants_json,
};
use super::{
    AppEdit, ApplyStats, AuditRecord, EventRecord, Fence, LeaseRecord, MemberKey, MembershipEnd, MemoRow, NodeRecord,
    PluginHealth, PluginRecord, QuarantineItem, QuarantineRecord, RunOutcome, RunRecord, Settled, Store, StoreError,
    TokenRecord, WebhookState,
};
use crate::diff::Snapshot;
use crate::model::Stored;
use crate::plan::Plan;
use crate::source::EntryKind;
use crate::util::now_rfc3339;

/// Rows one statement writes at most: bulk writes go as arrays
/// (`UNNEST($1::text[], …)`), a batch per round trip, never a row per round
/// trip. Tiny under test, so that small test data crosses batch boundaries.
const BATCH: usize = if cfg!(test) { 4 } else { 5_000 };

pub struct PgStore {
    target: PgTarget,
    /// `None` until connected, and again once the connection broke: the next
    /// call connects anew.
    conn: Option<Conn>,
    fence: Option<Fence>,
}

/// Now, in milliseconds since the epoch, by the database's clock (leases).
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

impl PgStore {
    /// Connects to the database at `url` (no password, system roots) and migrates it.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_target(PgTarget { url: url.to_string(), password: None, ca_file: None })
    }

    /// Connects to the database `[store]` names and migrates it.
    pub fn open_target(target: PgTarget) -> Result<Self, StoreError> {
        let name = redacted(&target.url);
        let mut store = Self { target, conn: None, fence: None };
        store.with(move |c| migrations::migrate(c, &name))?;
        Ok(store)
    }

    /// Runs `f` on the connection, connecting first if need be.
    ///
    /// The synchronous client drives its own tokio runtime, and panics when
    /// called from a thread already inside one, which is where the HTTP API
    /// handlers and the webhook tasks call the store from. There the call
    /// runs on a plain thread of its own, the caller waiting for it.
    fn with<T: Send>(&mut self, f: impl FnOnce(&mut Conn) -> Result<T, StoreError> + Send) -> Result<T, StoreError> {
        let Self { target, conn, .. } = self;
        let call = move || {
            let c = connected(conn, target)?;
            let out = f(c);
            // The client does not notice by itself that the server went
            // away; a failed call that finds it gone leaves it to be replaced.
            if matches!(out, Err(StoreError::Query { .. })) && !c.is_usable() {
                *conn = None;
            }
            out
        };
        if in_async_runtime() {
            std::thread::scope(|s| s.spawn(call).join())
                .map_err(|_| StoreError::Query { context: "postgres", message: "the store call panicked".into() })?
        } else {
            call()
        }
    }
}

fn in_async_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

/// The live connection in `slot`, connecting if there is none (or it broke:
/// a server restart, a dropped network), so a long-running `roster serve`
/// recovers by itself. Prepared statements go with the old connection.
fn connected<'c>(slot: &'c mut Option<Conn>, target: &PgTarget) -> Result<&'c mut Conn, StoreError> {
    if slot.as_ref().is_some_and(Conn::is_closed) {
        *slot = None;
    }
    let conn = match slot.take() {
        Some(conn) => conn,
        None => Conn::new(connect(target)?),
    };
    Ok(slot.insert(conn))
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Closing the client goes through its runtime too (see `with`).
        if let Some(conn) = self.conn.take()
            && in_async_runtime()
        {
            let _ = std::thread::spawn(move || drop(conn)).join();
        }
    }
}

fn ensure_tenant<C: GenericClient>(db: &mut Db<'_, C>, tenant: &str) -> Result<(), StoreError> {
    db.execute(
        "creating tenant",
        "INSERT INTO tenants (id, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&tenant, &now_rfc3339()],
    )?;
    Ok(())
}

fn stored_rows(rows: &[Row], kind: EntryKind, context: &'static str) -> Result<Vec<Stored>, StoreError> {
    rows.iter()
        .map(|r| {
            let row: StoredRow = (
                get(r, 0, context)?,
                get(r, 1, context)?,
                get(r, 2, context)?,
                get(r, 3, context)?,
                get(r, 4, context)?,
                get(r, 5, context)?,
                get(r, 6, context)?,
                get(r, 7, context)?,
            );
            stored_from_row(row, kind)
        })
        .collect()
}

/// Objects of the source whose `column` is one of `keys`: users, then (with
/// `groups`) groups, each in the order of the key's index.
fn objects_where(
    db: &mut Db<'_, postgres::Client>,
    tenant: &str,
    source: &str,
    column: &str,
    keys: &[String],
    groups: bool,
) -> Result<Vec<Stored>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let tables: &[EntryKind] = if groups { &[EntryKind::User, EntryKind::Group] } else { &[EntryKind::User] };
    let mut out = Vec::new();
    for kind in tables {
        let rows =
            db.query("looking up objects", &object_lookup_sql(table(*kind), column), &[&tenant, &source, &keys])?;
        out.extend(stored_rows(&rows, *kind, "reading object row")?);
    }
    Ok(out)
}

/// Objects of `table` whose `column` is one of `$3`, in the order of the
/// column's index (`$1` tenant, `$2` source).
fn object_lookup_sql(table: &str, column: &str) -> String {
    let order = if column == "id" { "id".to_string() } else { format!("{column}, id") };
    format!(
        "SELECT {USER_COLUMNS} FROM {table} WHERE tenant = $1 AND source = $2 AND {column} = ANY($3) ORDER BY {order}"
    )
}

/// Memberships whose `end` is one of `$2` (`$1` tenant). Ids are unique to
/// their source (they derive from it), so the source is not filtered on: the
/// id's index alone answers.
fn membership_lookup_sql(end: MembershipEnd) -> &'static str {
    match end {
        MembershipEnd::Group => {
            "SELECT group_id, member_id FROM memberships WHERE tenant = $1 AND group_id = ANY($2)
              ORDER BY group_id, member_id"
        }
        MembershipEnd::Member => {
            "SELECT group_id, member_id FROM memberships WHERE tenant = $1 AND member_id = ANY($2)
              ORDER BY member_id, group_id"
        }
    }
}

/// The members of a batch of groups (`$2`) with their lookup keys, users
/// first, as SQLite answers; not filtered on the source, for the reason
/// [`membership_lookup_sql`] gives.
const MEMBER_KEYS_SQL: &str = "
    SELECT group_id, member_id, dn, dn_key, anchor FROM (
        SELECT 0 AS part, m.group_id, m.member_id, o.dn, o.dn_key, o.anchor FROM memberships m
          JOIN users o ON o.tenant = m.tenant AND o.id = m.member_id
         WHERE m.tenant = $1 AND m.group_id = ANY($2) AND m.member_kind = 'user'
        UNION ALL
        SELECT 1, m.group_id, m.member_id, o.dn, o.dn_key, o.anchor FROM memberships m
          JOIN groups o ON o.tenant = m.tenant AND o.id = m.member_id
         WHERE m.tenant = $1 AND m.group_id = ANY($2) AND m.member_kind = 'group'
    ) k ORDER BY part, group_id, member_id";

fn pairs(rows: &[Row], context: &'static str) -> Result<Vec<(String, String)>, StoreError> {
    rows.iter().map(|r| Ok((get(r, 0, context)?, get(r, 1, context)?))).collect()
}

fn run_row(r: &Row) -> Result<RunRecord, StoreError> {
    let c = "reading run row";
    Ok(RunRecord {
        id: get(r, 0, c)?,
        tenant: get(r, 1, c)?,
        trigger: get(r, 2, c)?,
        dry_run: get(r, 3, c)?,
        status: get(r, 4, c)?,
        started_at: get(r, 5, c)?,
        finished_at: get(r, 6, c)?,
        summary: parse_summary(get(r, 7, c)?),
    })
}

const RUN_COLUMNS: &str = "id, tenant, trigger, dry_run, status, started_at, finished_at, summary";

fn plugin_row(r: &Row) -> Result<PluginRecord, StoreError> {
    let c = "reading plugin row";
    Ok(PluginRecord {
        tenant: get(r, 0, c)?,
        kind: get(r, 1, c)?,
        version: get(r, 2, c)?,
        sha256: get(r, 3, c)?,
        name: get(r, 4, c)?,
        plugin_version: get(r, 5, c)?,
        size: get::<i64>(r, 6, c)?.max(0) as u64,
        added_at: get(r, 7, c)?,
        added_by: get(r, 8, c)?,
        active: get(r, 9, c)?,
    })
}

const TOKEN_COLUMNS: &str = "id, name, tenants, role, created_at, expires_at, revoked_at, last_used_at";

fn token_row(r: &Row) -> Result<TokenRecord, StoreError> {
    let c = "reading token";
    Ok(TokenRecord {
        id: get(r, 0, c)?,
        name: get(r, 1, c)?,
        tenants: parse_token_tenants(get(r, 2, c)?),
        role: get(r, 3, c)?,
        created_at: get(r, 4, c)?,
        expires_at: get(r, 5, c)?,
        revoked_at: get(r, 6, c)?,
        last_used_at: get(r, 7, c)?,
    })
}

/// A stored count that must fit the type the trait returns.
fn to_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn plugin_health<C: GenericClient>(
    db: &mut Db<'_, C>,
    tenant: &str,
    kind: &str,
    sha256: &str,
) -> Result<PluginHealth, StoreError> {
    let c = "reading plugin health";
    let row = db.query_opt(
        c,
        "SELECT consecutive_failures, last_error, disabled_at FROM plugin_health
          WHERE tenant = $1 AND kind = $2 AND sha256 = $3",
        &[&tenant, &kind, &sha256],
    )?;
    let Some(r) = row else { return Ok(PluginHealth::default()) };
    Ok(PluginHealth {
        consecutive_failures: to_u32(get(&r, 0, c)?),
        last_error: get(&r, 1, c)?,
        disabled_at: get(&r, 2, c)?,
    })
}

impl Store for PgStore {
    fn ensure_tenant(&mut self, tenant: &str) -> Result<(), StoreError> {
        self.with(|c| ensure_tenant(&mut c.db(), tenant))
    }

    fn snapshot(&mut self, tenant: &str, source: &str) -> Result<Snapshot, StoreError> {
        // One snapshot for objects and memberships: another process may apply in between.
        self.with(|c| {
            c.snapshot("reading a snapshot", |tx| {
                let mut snap = Snapshot::default();
                for kind in [EntryKind::User, EntryKind::Group] {
                    let sql = format!("SELECT {USER_COLUMNS} FROM {} WHERE tenant = $1 AND source = $2", table(kind));
                    let rows = tx.query("reading objects", &sql, &[&tenant, &source])?;
                    for o in stored_rows(&rows, kind, "reading object row")? {
                        snap.objects.insert(o.id.clone(), o);
                    }
                }
                let rows = tx.query(
                    "reading memberships",
                    "SELECT group_id, member_id FROM memberships WHERE tenant = $1 AND source = $2",
                    &[&tenant, &source],
                )?;
                snap.memberships = pairs(&rows, "reading membership row")?.into_iter().collect();
                Ok(snap)
            })
        })
    }

    fn source_anchors(
        &mut self,
        tenant: &str,
        source: &str,
    ) -> Result<BTreeMap<EntryKind, BTreeSet<String>>, StoreError> {
        self.with(|c| {
            c.snapshot("reading anchors", |tx| {
                let mut by_kind = BTreeMap::new();
                for kind in [EntryKind::User, EntryKind::Group] {
                    let sql = format!("SELECT anchor FROM {} WHERE tenant = $1 AND source = $2", table(kind));
                    let rows = tx.query("reading anchors", &sql, &[&tenant, &source])?;
                    let anchors =
                        rows.iter().map(|r| get(r, 0, "reading anchor row")).collect::<Result<BTreeSet<_>, _>>()?;
                    by_kind.insert(kind, anchors);
                }
                Ok(by_kind)
            })
        })
    }

    fn objects_by_ids(&mut self, tenant: &str, source: &str, ids: &[String]) -> Result<Vec<Stored>, StoreError> {
        self.with(|c| objects_where(&mut c.db(), tenant, source, "id", ids, true))
    }

    fn objects_by_anchors(
        &mut self,
        tenant: &str,
        source: &str,
        anchors: &[String],
    ) -> Result<Vec<Stored>, StoreError> {
        self.with(|c| objects_where(&mut c.db(), tenant, source, "anchor", anchors, true))
    }

    fn objects_by_dn_keys(&mut self, tenant: &str, source: &str, keys: &[String]) -> Result<Vec<Stored>, StoreError> {
        self.with(|c| objects_where(&mut c.db(), tenant, source, "dn_key", keys, true))
    }

    fn users_by_user_name_keys(
        &mut self,
        tenant: &str,
        source: &str,
        keys: &[String],
    ) -> Result<Vec<Stored>, StoreError> {
        self.with(|c| objects_where(&mut c.db(), tenant, source, "user_name_key", keys, false))
    }

    fn memberships_touching(
        &mut self,
        tenant: &str,
        _source: &str,
        ids: &[String],
        end: MembershipEnd,
    ) -> Result<Vec<(String, String)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = membership_lookup_sql(end);
        self.with(|c| pairs(&c.db().query("looking up memberships", sql, &[&tenant, &ids])?, "reading membership row"))
    }

    fn member_keys(&mut self, tenant: &str, _source: &str, group_ids: &[String]) -> Result<Vec<MemberKey>, StoreError> {
        if group_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.with(|c| {
            let context = "reading member keys";
            let rows = c.db().query("looking up member keys", MEMBER_KEYS_SQL, &[&tenant, &group_ids])?;
            rows.iter()
                .map(|r| {
                    Ok(MemberKey {
                        group_id: get(r, 0, context)?,
                        member_id: get(r, 1, context)?,
                        dn: get(r, 2, context)?,
                        dn_key: get(r, 3, context)?,
                        anchor: get(r, 4, context)?,
                    })
                })
                .collect()
        })
    }

    fn object_count(&mut self, tenant: &str, source: &str) -> Result<u64, StoreError> {
        self.with(|c| {
            let row = c.db().query_one(
                "counting objects",
                "SELECT (SELECT COUNT(*) FROM users WHERE tenant = $1 AND source = $2)
                      + (SELECT COUNT(*) FROM groups WHERE tenant = $1 AND source = $2)",
                &[&tenant, &source],
            )?;
            Ok(get::<i64>(&row, 0, "counting objects")?.max(0) as u64)
        })
    }

    fn begin_run(&mut self, tenant: &str, trigger: &str, dry_run: bool) -> Result<i64, StoreError> {
        self.with(|c| {
            let mut db = c.db();
            ensure_tenant(&mut db, tenant)?;
            let row = db.query_one(
                "recording run start",
                "INSERT INTO runs (tenant, trigger, dry_run, status, started_at) VALUES ($1, $2, $3, 'running', $4)
                 RETURNING id",
                &[&tenant, &trigger, &dry_run, &now_rfc3339()],
            )?;
            get(&row, 0, "recording run start")
        })
    }

    fn finish_run(&mut self, run_id: i64, outcome: &RunOutcome) -> Result<(), StoreError> {
        self.with(|c| {
            c.transaction("recording run end", |tx| {
                let row = tx.query_opt(
                    "recording run end",
                    "UPDATE runs SET status = $2, finished_at = $3, summary = $4 WHERE id = $1 RETURNING tenant, trigger",
                    &[&run_id, &outcome.status, &now_rfc3339(), &outcome.summary.to_string()],
                )?;
                let Some(row) = row else {
                    return Err(StoreError::Query { context: "reading run", message: format!("no run {run_id}") });
                };
                let (tenant, trigger): (String, String) = (get(&row, 0, "reading run")?, get(&row, 1, "reading run")?);
                audit::append(tx, &tenant, "run", &trigger, &run_audit_detail(run_id, outcome, &trigger))
            })
        })
    }

    fn runs(&mut self, tenant: &str, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        self.with(|c| {
            let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE tenant = $1 ORDER BY id DESC LIMIT $2");
            c.db().query("reading runs", &sql, &[&tenant, &i64::from(limit)])?.iter().map(run_row).collect()
        })
    }

    fn run(&mut self, tenant: &str, id: i64) -> Result<Option<RunRecord>, StoreError> {
        self.with(|c| {
            let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE tenant = $1 AND id = $2");
            c.db().query_opt("reading run", &sql, &[&tenant, &id])?.as_ref().map(run_row).transpose()
        })
    }

    fn mark_run_approved(&mut self, blocked_run: i64, by_run: i64) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c.db().execute(
                "marking a run approved",
                "UPDATE runs SET status = 'approved',
                        summary = jsonb_set(summary::jsonb, '{approved_by_run}', to_jsonb($2::bigint))::text
                  WHERE id = $1 AND status = 'blocked'",
                &[&blocked_run, &by_run],
            )?;
            Ok(n == 1)
        })
    }

    fn apply(&mut self, plan: &Plan, run_id: i64) -> Result<ApplyStats, StoreError> {
        let fence = self.fence.clone();
        self.with(|c| apply::apply(c, plan, run_id, fence.as_ref()))
    }

    fn record_quarantine(
        &mut self,
        tenant: &str,
        source: &str,
        run_id: i64,
        items: &[QuarantineItem],
        settled: &Settled,
    ) -> Result<(), StoreError> {
        // Items are upserted in one statement, which may touch a row only
        // once: of several items with one key, the last is what a row-by-row
        // upsert would have left (the first seen time is the row's either way).
        let keys: Vec<String> = items.iter().map(quarantine_key).collect();
        let mut last_of_key: HashMap<&str, usize> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            last_of_key.insert(key, i);
        }
        let upserts: Vec<(&str, &QuarantineItem)> = keys
            .iter()
            .zip(items)
            .enumerate()
            .filter(|(i, (key, _))| last_of_key.get(key.as_str()) == Some(i))
            .map(|(_, (key, it))| (key.as_str(), it))
            .collect();
        self.with(|c| {
            ensure_tenant(&mut c.db(), tenant)?;
            let now = now_rfc3339();
            c.transaction("recording quarantine", |tx| {
                match settled {
                    Settled::All => {
                        tx.execute(
                            "marking quarantine",
                            "UPDATE quarantine SET run_id = -1 WHERE tenant = $1 AND source = $2",
                            &[&tenant, &source],
                        )?;
                    }
                    Settled::Anchors(anchors) => {
                        tx.execute(
                            "marking quarantine",
                            "UPDATE quarantine SET run_id = -1 WHERE tenant = $1 AND source = $2 AND anchor = ANY($3)",
                            &[&tenant, &source, anchors],
                        )?;
                    }
                    Settled::Nothing => {}
                }
                for chunk in upserts.chunks(BATCH) {
                    let keys: Vec<&str> = chunk.iter().map(|(key, _)| *key).collect();
                    let anchors: Vec<Option<&str>> = chunk.iter().map(|(_, it)| it.anchor.as_deref()).collect();
                    let kinds: Vec<Option<&str>> = chunk.iter().map(|(_, it)| it.kind.map(|k| k.as_str())).collect();
                    let dns: Vec<Option<&str>> = chunk.iter().map(|(_, it)| it.dn.as_deref()).collect();
                    let stages: Vec<&str> = chunk.iter().map(|(_, it)| it.stage.as_str()).collect();
                    let reasons: Vec<&str> = chunk.iter().map(|(_, it)| it.reason.as_str()).collect();
                    let plugins: Vec<Option<&str>> = chunk.iter().map(|(_, it)| it.plugin.as_deref()).collect();
                    tx.execute(
                        "recording quarantine",
                        "INSERT INTO quarantine (tenant, source, item_key, anchor, kind, dn, stage, reason, plugin, run_id, first_seen, last_seen)
                         SELECT $1, $2, i.item_key, i.anchor, i.kind, i.dn, i.stage, i.reason, i.plugin, $3, $4, $4
                           FROM UNNEST($5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
                                AS i(item_key, anchor, kind, dn, stage, reason, plugin)
                         ON CONFLICT (tenant, source, item_key) DO UPDATE SET
                            anchor = excluded.anchor, kind = excluded.kind, dn = excluded.dn, stage = excluded.stage,
                            reason = excluded.reason, plugin = excluded.plugin, run_id = excluded.run_id,
                            last_seen = excluded.last_seen",
                        &[&tenant, &source, &run_id, &now, &keys, &anchors, &kinds, &dns, &stages, &reasons, &plugins],
                    )?;
                }
                if *settled != Settled::Nothing {
                    tx.execute(
                        "clearing resolved quarantine",
                        "DELETE FROM quarantine WHERE tenant = $1 AND source = $2 AND run_id = -1",
                        &[&tenant, &source],
                    )?;
                }
                Ok(())
            })
        })
    }

    fn quarantine(&mut self, tenant: &str) -> Result<Vec<QuarantineRecord>, StoreError> {
        self.with(|c| {
            // NULLS FIRST: where SQLite sorts them.
            let rows = c.db().query(
                "reading quarantine",
                "SELECT source, anchor, kind, dn, stage, reason, plugin, first_seen, last_seen, run_id
                   FROM quarantine WHERE tenant = $1 ORDER BY source, dn NULLS FIRST, anchor NULLS FIRST",
                &[&tenant],
            )?;
            let ctx = "reading quarantine row";
            rows.iter()
                .map(|r| {
                    Ok(QuarantineRecord {
                        item: QuarantineItem {
                            source: get(r, 0, ctx)?,
                            anchor: get(r, 1, ctx)?,
                            kind: get::<Option<&str>>(r, 2, ctx)?.map(entry_kind),
                            dn: get(r, 3, ctx)?,
                            stage: get(r, 4, ctx)?,
                            reason: get(r, 5, ctx)?,
                            plugin: get(r, 6, ctx)?,
                        },
                        first_seen: get(r, 7, ctx)?,
                        last_seen: get(r, 8, ctx)?,
                        run_id: get(r, 9, ctx)?,
                    })
                })
                .collect()
        })
    }

    fn users(&mut self, tenant: &str) -> Result<Vec<Stored>, StoreError> {
        self.with(|c| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant = $1 ORDER BY user_name NULLS FIRST, id");
            stored_rows(&c.db().query("reading users", &sql, &[&tenant])?, EntryKind::User, "reading user row")
        })
    }

    fn groups(&mut self, tenant: &str) -> Result<Vec<Stored>, StoreError> {
        self.with(|c| {
            let sql =
                format!("SELECT {USER_COLUMNS} FROM groups WHERE tenant = $1 ORDER BY display_name NULLS FIRST, id");
            stored_rows(&c.db().query("reading groups", &sql, &[&tenant])?, EntryKind::Group, "reading group row")
        })
    }

    fn memberships(&mut self, tenant: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.with(|c| {
            let rows = c.db().query(
                "reading memberships",
                "SELECT group_id, member_id FROM memberships WHERE tenant = $1 ORDER BY group_id, member_id",
                &[&tenant],
            )?;
            pairs(&rows, "reading membership row")
        })
    }

    fn add_plugin(&mut self, r: &PluginRecord, wasm: &[u8]) -> Result<i64, StoreError> {
        self.with(|c| {
            ensure_tenant(&mut c.db(), &r.tenant)?;
            c.transaction("storing plugin", |tx| {
                // Numbering reads the last version: two uploads at once must not both take it.
                tx.lock_tenant(&r.tenant)?;
                let row = tx.query_one(
                    "numbering plugin version",
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM plugins WHERE tenant = $1 AND kind = $2",
                    &[&r.tenant, &r.kind],
                )?;
                let version: i64 = get(&row, 0, "numbering plugin version")?;
                let size = i64::try_from(r.size).unwrap_or(i64::MAX);
                tx.execute(
                    "storing plugin",
                    "INSERT INTO plugins (tenant, kind, version, sha256, name, plugin_version, size, wasm, added_at, added_by)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    &[
                        &r.tenant,
                        &r.kind,
                        &version,
                        &r.sha256,
                        &r.name,
                        &r.plugin_version,
                        &size,
                        &wasm,
                        &now_rfc3339(),
                        &r.added_by,
                    ],
                )?;
                Ok(version)
            })
        })
    }

    fn plugins(&mut self, tenant: &str) -> Result<Vec<PluginRecord>, StoreError> {
        self.with(|c| {
            let rows = c.db().query(
                "listing plugins",
                "SELECT p.tenant, p.kind, p.version, p.sha256, p.name, p.plugin_version, p.size, p.added_at, p.added_by,
                        a.version IS NOT NULL
                   FROM plugins p LEFT JOIN active_plugins a
                     ON a.tenant = p.tenant AND a.kind = p.kind AND a.version = p.version
                  WHERE p.tenant = $1 ORDER BY p.kind, p.version",
                &[&tenant],
            )?;
            rows.iter().map(plugin_row).collect()
        })
    }

    fn activate_plugin(&mut self, tenant: &str, kind: &str, version: i64) -> Result<(), StoreError> {
        self.with(|c| {
            let mut db = c.db();
            let row = db.query_one(
                "looking up plugin version",
                "SELECT EXISTS (SELECT 1 FROM plugins WHERE tenant = $1 AND kind = $2 AND version = $3)",
                &[&tenant, &kind, &version],
            )?;
            if !get::<bool>(&row, 0, "looking up plugin version")? {
                return Err(StoreError::NoSuchPlugin { tenant: tenant.into(), kind: kind.into(), version });
            }
            db.execute(
                "activating plugin",
                "INSERT INTO active_plugins (tenant, kind, version, activated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant, kind) DO UPDATE SET version = excluded.version, activated_at = excluded.activated_at",
                &[&tenant, &kind, &version, &now_rfc3339()],
            )?;
            Ok(())
        })
    }

    fn active_plugin(&mut self, tenant: &str, kind: &str) -> Result<Option<(PluginRecord, Vec<u8>)>, StoreError> {
        self.with(|c| {
            let row = c.db().query_opt(
                "reading active plugin",
                "SELECT p.tenant, p.kind, p.version, p.sha256, p.name, p.plugin_version, p.size, p.added_at, p.added_by,
                        TRUE, p.wasm
                   FROM active_plugins a JOIN plugins p
                     ON a.tenant = p.tenant AND a.kind = p.kind AND a.version = p.version
                  WHERE a.tenant = $1 AND a.kind = $2",
                &[&tenant, &kind],
            )?;
            row.map(|r| Ok((plugin_row(&r)?, get(&r, 10, "reading active plugin")?))).transpose()
        })
    }

    fn plugin_health(&mut self, tenant: &str, kind: &str, sha256: &str) -> Result<PluginHealth, StoreError> {
        self.with(|c| plugin_health(&mut c.db(), tenant, kind, sha256))
    }

    fn record_plugin_run(
        &mut self,
        tenant: &str,
        kind: &str,
        sha256: &str,
        error: Option<&str>,
        disable_after: u32,
    ) -> Result<PluginHealth, StoreError> {
        self.with(|c| {
            c.transaction("recording plugin health", |tx| {
                // A read, then a write: processes recording runs of one plugin
                // at once must each count the other's failure.
                tx.lock_tenant(tenant)?;
                let mut h = plugin_health(tx, tenant, kind, sha256)?;
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
                tx.execute(
                    "recording plugin health",
                    "INSERT INTO plugin_health (tenant, kind, sha256, consecutive_failures, last_error, disabled_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (tenant, kind, sha256) DO UPDATE SET consecutive_failures = excluded.consecutive_failures,
                        last_error = excluded.last_error, disabled_at = excluded.disabled_at",
                    &[&tenant, &kind, &sha256, &i64::from(h.consecutive_failures), &h.last_error, &h.disabled_at],
                )?;
                Ok(h)
            })
        })
    }

    fn enable_plugin(&mut self, tenant: &str, kind: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.db().execute(
                "re-enabling plugin",
                "DELETE FROM plugin_health WHERE tenant = $1 AND kind = $2",
                &[&tenant, &kind],
            )?;
            Ok(())
        })
    }

    fn conflict_decisions(&mut self, tenant: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        self.with(|c| {
            let rows = c.db().query(
                "reading conflict decisions",
                "SELECT key, value, winner FROM conflict_decisions WHERE tenant = $1 ORDER BY key, value",
                &[&tenant],
            )?;
            let ctx = "reading conflict decision";
            rows.iter().map(|r| Ok((get(r, 0, ctx)?, get(r, 1, ctx)?, get(r, 2, ctx)?))).collect()
        })
    }

    fn decide_conflict(&mut self, tenant: &str, key: &str, value: &str, winner: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.db().execute(
                "recording conflict decision",
                "INSERT INTO conflict_decisions (tenant, key, value, winner, decided_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant, key, value) DO UPDATE SET winner = excluded.winner, decided_at = excluded.decided_at",
                &[&tenant, &key, &value.to_lowercase(), &winner, &now_rfc3339()],
            )?;
            Ok(())
        })
    }

    fn audit(&mut self, tenant: &str, kind: &str, actor: &str, detail: &serde_json::Value) -> Result<(), StoreError> {
        self.with(|c| {
            c.transaction("appending to the audit trail", |tx| audit::append(tx, tenant, kind, actor, detail))
        })
    }

    fn put_raw_attributes(&mut self, tenant: &str, source: &str, rows: &[(String, String)]) -> Result<(), StoreError> {
        // One statement may touch a row once: of several rows of one object
        // the last one stands, and is rewritten (read again now) even if
        // unchanged when the object's rows differed, as a row-by-row upsert
        // would have done. Such objects (`forced`) take a statement of their own.
        let mut last: HashMap<&str, (&str, bool)> = HashMap::new();
        for (id, attrs) in rows {
            last.entry(id.as_str())
                .and_modify(|(prev, differed)| {
                    *differed |= *prev != attrs.as_str();
                    *prev = attrs.as_str();
                })
                .or_insert((attrs.as_str(), false));
        }
        let (forced, unforced): (Vec<_>, Vec<_>) = last.into_iter().partition(|(_, (_, differed))| *differed);
        self.with(|c| {
            let now = now_rfc3339();
            c.transaction("keeping raw attributes", |tx| {
                for (puts, when) in [(&unforced, "WHERE raw_attributes.attrs <> excluded.attrs"), (&forced, "")] {
                    let sql = format!(
                        "INSERT INTO raw_attributes (tenant, object_id, source, attrs, read_at)
                         SELECT $1, r.object_id, $2, r.attrs, $3 FROM UNNEST($4::text[], $5::text[]) AS r(object_id, attrs)
                         ON CONFLICT (tenant, object_id) DO UPDATE SET source = excluded.source, attrs = excluded.attrs,
                            read_at = excluded.read_at {when}"
                    );
                    for chunk in puts.chunks(BATCH) {
                        let ids: Vec<&str> = chunk.iter().map(|(id, _)| *id).collect();
                        let attrs: Vec<&str> = chunk.iter().map(|(_, (attrs, _))| *attrs).collect();
                        tx.execute("keeping raw attributes", &sql, &[&tenant, &source, &now, &ids, &attrs])?;
                    }
                }
                tx.execute(
                    "dropping raw attributes of deleted objects",
                    "DELETE FROM raw_attributes r WHERE r.tenant = $1
                        AND NOT EXISTS (SELECT 1 FROM users u WHERE u.tenant = $1 AND u.id = r.object_id)
                        AND NOT EXISTS (SELECT 1 FROM groups g WHERE g.tenant = $1 AND g.id = r.object_id)",
                    &[&tenant],
                )?;
                Ok(())
            })
        })
    }

    fn clear_raw_attributes(&mut self, tenant: &str) -> Result<usize, StoreError> {
        self.with(|c| {
            let n = c.db().execute(
                "deleting raw attributes",
                "DELETE FROM raw_attributes WHERE tenant = $1",
                &[&tenant],
            )?;
            Ok(to_usize(n))
        })
    }

    fn map_memo(&mut self, tenant: &str, source: &str) -> Result<HashMap<String, MemoRow>, StoreError> {
        self.with(|c| {
            let rows = c.db().query(
                "reading the mapping memo",
                "SELECT id, input_digest, output_digest FROM map_memo WHERE tenant = $1 AND source = $2",
                &[&tenant, &source],
            )?;
            let context = "reading the mapping memo";
            let mut out = HashMap::new();
            for r in &rows {
                let (id, input, output): (String, String, String) =
                    (get(r, 0, context)?, get(r, 1, context)?, get(r, 2, context)?);
                if let Some(row) = MemoRow::from_hex(&input, &output) {
                    out.insert(id, row);
                }
            }
            Ok(out)
        })
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
        // One statement may touch a row once: the last row of an id stands.
        let mut last: HashMap<&str, &MemoRow> = HashMap::new();
        for (id, row) in rows {
            last.insert(id.as_str(), row);
        }
        let puts: Vec<(&str, &MemoRow)> = last.into_iter().collect();
        self.with(|c| {
            c.transaction("writing the mapping memo", |tx| {
                for chunk in puts.chunks(BATCH) {
                    let ids: Vec<&str> = chunk.iter().map(|(id, _)| *id).collect();
                    let inputs: Vec<String> = chunk.iter().map(|(_, r)| r.input_hex()).collect();
                    let outputs: Vec<String> = chunk.iter().map(|(_, r)| r.output_hex()).collect();
                    tx.execute(
                        "writing the mapping memo",
                        "INSERT INTO map_memo (tenant, source, id, input_digest, output_digest)
                         SELECT $1, $2, m.id, m.input, m.output FROM UNNEST($3::text[], $4::text[], $5::text[]) AS m(id, input, output)
                         ON CONFLICT (tenant, source, id) DO UPDATE SET input_digest = excluded.input_digest,
                            output_digest = excluded.output_digest",
                        &[&tenant, &source, &ids, &inputs, &outputs],
                    )?;
                }
                for chunk in removed.chunks(BATCH) {
                    let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
                    tx.execute(
                        "writing the mapping memo",
                        "DELETE FROM map_memo WHERE tenant = $1 AND source = $2 AND id = ANY($3::text[])",
                        &[&tenant, &source, &ids],
                    )?;
                }
                Ok(())
            })
        })
    }

    fn raw_attributes(&mut self, tenant: &str, object_id: &str) -> Result<Option<(String, String)>, StoreError> {
        self.with(|c| {
            let row = c.db().query_opt(
                "reading raw attributes",
                "SELECT attrs, read_at FROM raw_attributes WHERE tenant = $1 AND object_id = $2",
                &[&tenant, &object_id],
            )?;
            row.map(|r| Ok((get(&r, 0, "reading raw attributes")?, get(&r, 1, "reading raw attributes")?))).transpose()
        })
    }

    fn audit_records(&mut self, tenant: Option<&str>, since: Option<&str>) -> Result<Vec<AuditRecord>, StoreError> {
        self.with(|c| audit::records(&mut c.db(), tenant, since))
    }

    fn audit_verify(&mut self) -> Result<u64, String> {
        self.with(audit::verify).map_err(|e| e.to_string())?
    }

    fn audit_prune(&mut self, tenant: &str, before: &str) -> Result<u64, StoreError> {
        self.with(|c| c.transaction("pruning the audit trail", |tx| audit::prune(tx, tenant, before)))
    }

    fn add_token(&mut self, t: &TokenRecord, hash: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.db().execute(
                "storing token",
                "INSERT INTO api_tokens (id, hash, name, tenants, role, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&t.id, &hash, &t.name, &token_tenants_json(&t.tenants), &t.role, &t.created_at, &t.expires_at],
            )?;
            Ok(())
        })
    }

    fn tokens(&mut self) -> Result<Vec<TokenRecord>, StoreError> {
        self.with(|c| {
            let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at");
            c.db().query("reading tokens", &sql, &[])?.iter().map(token_row).collect()
        })
    }

    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.with(|c| {
            let mut db = c.db();
            let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE hash = $1 AND revoked_at IS NULL");
            let token = db.query_opt("reading token", &sql, &[&hash])?.as_ref().map(token_row).transpose()?;
            if let Some(t) = &token {
                // Best effort, as in SQLite: a failed stamp must not refuse a valid token.
                let _ = db.execute(
                    "stamping token use",
                    "UPDATE api_tokens SET last_used_at = $2 WHERE id = $1",
                    &[&t.id, &now_rfc3339()],
                );
            }
            Ok(token)
        })
    }

    fn revoke_token(&mut self, id: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c.db().execute(
                "revoking token",
                "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                &[&id, &now_rfc3339()],
            )?;
            Ok(n > 0)
        })
    }

    fn events(&mut self, tenant: &str, after: i64, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
        self.with(|c| {
            let rows = c.db().query(
                "reading events",
                "SELECT seq, type, object_id, object_kind, version, idempotency_key, run_id, created_at, payload
                   FROM events WHERE tenant = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&tenant, &after, &i64::from(limit)],
            )?;
            let ctx = "reading event";
            rows.iter()
                .map(|r| {
                    let mut e = EventRecord {
                        seq: get(r, 0, ctx)?,
                        event_type: get(r, 1, ctx)?,
                        object_id: get(r, 2, ctx)?,
                        object_kind: get(r, 3, ctx)?,
                        version: get(r, 4, ctx)?,
                        idempotency_key: get(r, 5, ctx)?,
                        run_id: get(r, 6, ctx)?,
                        created_at: get(r, 7, ctx)?,
                        payload: serde_json::Value::Null,
                    };
                    e.payload = crate::store::common::delivered_payload(tenant, &e, get(r, 8, ctx)?)?;
                    Ok(e)
                })
                .collect()
        })
    }

    fn prune_events(&mut self, tenant: &str, before: &str) -> Result<usize, StoreError> {
        self.with(|c| {
            let n = c.db().execute(
                "pruning events",
                "DELETE FROM events WHERE tenant = $1 AND created_at < $2",
                &[&tenant, &before],
            )?;
            Ok(to_usize(n))
        })
    }

    fn webhook_state(&mut self, tenant: &str, endpoint: &str) -> Result<WebhookState, StoreError> {
        self.with(|c| {
            let row = c.db().query_opt(
                "reading webhook state",
                "SELECT delivered_seq, attempts, next_attempt_at, last_error FROM webhook_state
                  WHERE tenant = $1 AND endpoint = $2",
                &[&tenant, &endpoint],
            )?;
            let Some(r) = row else { return Ok(WebhookState::default()) };
            let ctx = "reading webhook state";
            Ok(WebhookState {
                delivered_seq: get(&r, 0, ctx)?,
                attempts: to_u32(get(&r, 1, ctx)?),
                next_attempt_at: get(&r, 2, ctx)?,
                last_error: get(&r, 3, ctx)?,
            })
        })
    }

    fn set_webhook_state(&mut self, tenant: &str, endpoint: &str, st: &WebhookState) -> Result<(), StoreError> {
        self.with(|c| {
            c.db().execute(
                "writing webhook state",
                "INSERT INTO webhook_state (tenant, endpoint, delivered_seq, attempts, next_attempt_at, last_error)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (tenant, endpoint) DO UPDATE SET delivered_seq = excluded.delivered_seq,
                   attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error",
                &[&tenant, &endpoint, &st.delivered_seq, &i64::from(st.attempts), &st.next_attempt_at, &st.last_error],
            )?;
            Ok(())
        })
    }

    fn dead_letter(&mut self, tenant: &str, endpoint: &str, seq: i64, error: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.db().execute(
                "writing dead letter",
                "INSERT INTO webhook_dead_letters (tenant, endpoint, seq, last_error, failed_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant, endpoint, seq) DO UPDATE SET last_error = excluded.last_error,
                   failed_at = excluded.failed_at",
                &[&tenant, &endpoint, &seq, &error, &now_rfc3339()],
            )?;
            Ok(())
        })
    }

    fn dead_letters(&mut self, tenant: &str, endpoint: &str) -> Result<Vec<(i64, String)>, StoreError> {
        self.with(|c| {
            let rows = c.db().query(
                "reading dead letters",
                "SELECT seq, last_error FROM webhook_dead_letters WHERE tenant = $1 AND endpoint = $2 ORDER BY seq",
                &[&tenant, &endpoint],
            )?;
            rows.iter().map(|r| Ok((get(r, 0, "reading dead letter")?, get(r, 1, "reading dead letter")?))).collect()
        })
    }

    fn clear_dead_letter(&mut self, tenant: &str, endpoint: &str, seq: i64) -> Result<(), StoreError> {
        self.with(|c| {
            c.db().execute(
                "clearing dead letter",
                "DELETE FROM webhook_dead_letters WHERE tenant = $1 AND endpoint = $2 AND seq = $3",
                &[&tenant, &endpoint, &seq],
            )?;
            Ok(())
        })
    }

    fn record_app_edit(&mut self, tenant: &str, edit: &AppEdit) -> Result<(), StoreError> {
        self.with(|c| {
            c.db().execute(
                "recording app edit",
                "INSERT INTO app_edits (tenant, object_id, attribute, base, value, recorded_at, recorded_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (tenant, object_id, attribute) DO UPDATE SET value = excluded.value,
                   recorded_at = excluded.recorded_at, recorded_by = excluded.recorded_by",
                &[
                    &tenant,
                    &edit.object_id,
                    &edit.attribute,
                    &edit_list_json(&edit.base),
                    &edit_list_json(&edit.value),
                    &edit.recorded_at,
                    &edit.recorded_by,
                ],
            )?;
            Ok(())
        })
    }

    fn app_edits(&mut self, tenant: &str) -> Result<Vec<AppEdit>, StoreError> {
        self.with(|c| {
            let rows = c.db().query(
                "reading app edits",
                "SELECT object_id, attribute, base, value, recorded_at, recorded_by FROM app_edits
                  WHERE tenant = $1 ORDER BY object_id, attribute",
                &[&tenant],
            )?;
            let ctx = "reading app edit";
            rows.iter()
                .map(|r| {
                    let (object_id, attribute): (String, String) = (get(r, 0, ctx)?, get(r, 1, ctx)?);
                    Ok(AppEdit {
                        base: parse_edit_list(get(r, 2, ctx)?, &object_id, &attribute)?,
                        value: parse_edit_list(get(r, 3, ctx)?, &object_id, &attribute)?,
                        recorded_at: get(r, 4, ctx)?,
                        recorded_by: get(r, 5, ctx)?,
                        object_id,
                        attribute,
                    })
                })
                .collect()
        })
    }

    fn settle_app_edits(&mut self, tenant: &str, actions: &[crate::conflict::EditAction]) -> Result<(), StoreError> {
        use crate::conflict::EditAction;
        // Two statements instead of one per action, with the outcome the
        // actions have in order: a clear removes the edit whatever comes
        // before or after it (a later rebase finds nothing), else the last
        // rebase stands.
        let mut cleared: BTreeSet<(&str, &str)> = BTreeSet::new();
        let mut rebased: BTreeMap<(&str, &str), &[String]> = BTreeMap::new();
        for a in actions {
            match a {
                EditAction::Clear { object_id, attribute } => {
                    cleared.insert((object_id, attribute));
                }
                EditAction::Rebase { object_id, attribute, base } => {
                    rebased.insert((object_id, attribute), base);
                }
            }
        }
        rebased.retain(|key, _| !cleared.contains(key));
        let clear_ids: Vec<&str> = cleared.iter().map(|k| k.0).collect();
        let clear_attrs: Vec<&str> = cleared.iter().map(|k| k.1).collect();
        let rebase_ids: Vec<&str> = rebased.keys().map(|k| k.0).collect();
        let rebase_attrs: Vec<&str> = rebased.keys().map(|k| k.1).collect();
        let bases: Vec<String> = rebased.values().map(|b| edit_list_json(b)).collect();
        self.with(|c| {
            c.transaction("settling app edits", |tx| {
                if !clear_ids.is_empty() {
                    tx.execute(
                        "settling app edit",
                        "DELETE FROM app_edits e USING UNNEST($2::text[], $3::text[]) AS c(object_id, attribute)
                          WHERE e.tenant = $1 AND e.object_id = c.object_id AND e.attribute = c.attribute",
                        &[&tenant, &clear_ids, &clear_attrs],
                    )?;
                }
                if !rebase_ids.is_empty() {
                    tx.execute(
                        "settling app edit",
                        "UPDATE app_edits e SET base = r.base
                           FROM UNNEST($2::text[], $3::text[], $4::text[]) AS r(object_id, attribute, base)
                          WHERE e.tenant = $1 AND e.object_id = r.object_id AND e.attribute = r.attribute",
                        &[&tenant, &rebase_ids, &rebase_attrs, &bases],
                    )?;
                }
                Ok(())
            })
        })
    }

    fn dismiss_quarantine(&mut self, tenant: &str, anchor: &str) -> Result<usize, StoreError> {
        self.with(|c| {
            let n = c.db().execute(
                "dismissing quarantine",
                "DELETE FROM quarantine WHERE tenant = $1 AND anchor = $2",
                &[&tenant, &anchor],
            )?;
            Ok(to_usize(n))
        })
    }

    fn source_state(&mut self, tenant: &str, source: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            let row = c.db().query_opt(
                "reading source state",
                "SELECT value FROM source_state WHERE tenant = $1 AND source = $2 AND key = $3",
                &[&tenant, &source, &key],
            )?;
            row.map(|r| get(&r, 0, "reading source state")).transpose()
        })
    }

    fn source_states(&mut self, tenant: &str, source: &str) -> Result<BTreeMap<String, String>, StoreError> {
        self.with(|c| {
            let rows = c.db().query(
                "reading source state",
                "SELECT key, value FROM source_state WHERE tenant = $1 AND source = $2",
                &[&tenant, &source],
            )?;
            rows.iter()
                .map(|r| Ok((get(r, 0, "reading source state row")?, get(r, 1, "reading source state row")?)))
                .collect()
        })
    }

    fn set_source_state(&mut self, tenant: &str, source: &str, key: &str, value: &str) -> Result<(), StoreError> {
        let fence = self.fence.clone();
        self.with(|c| {
            ensure_tenant(&mut c.db(), tenant)?;
            c.transaction("writing source state", |db| {
                check_fence(db, fence.as_ref())?;
                db.execute(
                    "writing source state",
                    "INSERT INTO source_state (tenant, source, key, value, updated_at) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (tenant, source, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    &[&tenant, &source, &key, &value, &now_rfc3339()],
                )?;
                Ok(())
            })
        })
    }

    fn claim_lease(&mut self, resource: &str, node: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        // One statement: the row is taken only when free, run out or ours; two
        // nodes claiming at once serialise on the row and only one wins.
        let sql = format!(
            "INSERT INTO leases (resource, owner, acquired_at, renewed_at, expires_at)
             VALUES ($1, $2, {NOW_MS}, {NOW_MS}, {NOW_MS} + $3)
             ON CONFLICT (resource) DO UPDATE SET
                 owner = excluded.owner,
                 acquired_at = CASE WHEN leases.owner = excluded.owner THEN leases.acquired_at ELSE excluded.acquired_at END,
                 renewed_at = excluded.renewed_at,
                 expires_at = excluded.expires_at
             WHERE leases.owner = excluded.owner OR leases.expires_at <= excluded.renewed_at
             RETURNING owner"
        );
        self.with(|c| {
            let row = c.db().query_opt("claiming a lease", &sql, &[&resource, &node, &ttl_ms])?;
            let owner: Option<String> = row.map(|r| get(&r, 0, "claiming a lease")).transpose()?;
            Ok(owner.as_deref() == Some(node))
        })
    }

    fn release_lease(&mut self, resource: &str, node: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.db().execute(
                "releasing a lease",
                "DELETE FROM leases WHERE resource = $1 AND owner = $2",
                &[&resource, &node],
            )?;
            Ok(())
        })
    }

    fn leases(&mut self) -> Result<Vec<LeaseRecord>, StoreError> {
        let sql = format!(
            "SELECT resource, owner, acquired_at, renewed_at, expires_at, expires_at <= {NOW_MS} FROM leases ORDER BY resource"
        );
        self.with(|c| {
            let context = "reading leases";
            c.db()
                .query(context, &sql, &[])?
                .iter()
                .map(|r| {
                    Ok(LeaseRecord {
                        resource: get(r, 0, context)?,
                        owner: get(r, 1, context)?,
                        acquired_at: get(r, 2, context)?,
                        renewed_at: get(r, 3, context)?,
                        expires_at: get(r, 4, context)?,
                        expired: get(r, 5, context)?,
                    })
                })
                .collect()
        })
    }

    fn node_heartbeat(&mut self, node: &str, info: &str) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO nodes (node, info, started_at, seen_at) VALUES ($1, $2, {NOW_MS}, {NOW_MS})
             ON CONFLICT (node) DO UPDATE SET info = excluded.info, seen_at = excluded.seen_at"
        );
        self.with(|c| {
            c.db().execute("recording a node heartbeat", &sql, &[&node, &info])?;
            Ok(())
        })
    }

    fn nodes(&mut self, alive_ms: i64) -> Result<Vec<NodeRecord>, StoreError> {
        let sql = format!("SELECT node, info, started_at, seen_at, seen_at > {NOW_MS} - $1 FROM nodes ORDER BY node");
        self.with(|c| {
            let context = "reading nodes";
            c.db()
                .query(context, &sql, &[&alive_ms])?
                .iter()
                .map(|r| {
                    Ok(NodeRecord {
                        node: get(r, 0, context)?,
                        info: get(r, 1, context)?,
                        started_at: get(r, 2, context)?,
                        seen_at: get(r, 3, context)?,
                        alive: get(r, 4, context)?,
                    })
                })
                .collect()
        })
    }

    fn remove_node(&mut self, node: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.db().execute("removing a node", "DELETE FROM nodes WHERE node = $1", &[&node])?;
            Ok(())
        })
    }

    fn set_fence(&mut self, fence: Option<Fence>) {
        self.fence = fence;
    }
}

/// Fails unless the fence's leases are all held, inside the write's
/// transaction. `FOR SHARE` keeps another node from taking a lease over until
/// this transaction ends, so a write never lands after its lease moved.
fn check_fence(db: &mut Db<'_, postgres::Transaction<'_>>, fence: Option<&Fence>) -> Result<(), StoreError> {
    let Some(fence) = fence else { return Ok(()) };
    let sql = format!("SELECT 1 FROM leases WHERE resource = $1 AND owner = $2 AND expires_at > {NOW_MS} FOR SHARE");
    for resource in &fence.resources {
        if db.query_opt("checking the lease", &sql, &[resource, &fence.node])?.is_none() {
            return Err(StoreError::LeaseLost { node: fence.node.clone(), resource: resource.clone() });
        }
    }
    Ok(())
}
