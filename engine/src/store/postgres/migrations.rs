//! Versioned schema migrations. Append only: a released migration never changes.
//!
//! Version 1 is the whole schema SQLite reached in its eleven migrations, as
//! PostgreSQL DDL. Every text column uses the "C" collation: SQLite compares
//! and sorts text byte by byte, and so must this store whatever the
//! database's default collation (listings come back in the same order, and
//! the RFC 3339 timestamps compare as strings in retention and `since`).
//! JSON stays text, so what is read back is exactly what was written.

use super::db::{Conn, get};
use crate::store::StoreError;
use crate::util::now_rfc3339;

pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial schema",
        r#"
CREATE TABLE tenants (
    id          TEXT COLLATE "C" PRIMARY KEY,
    created_at  TEXT COLLATE "C" NOT NULL
);

-- dn_key (dn::normalize_dn) and user_name_key (lower-cased userName) are
-- computed by the host: an incremental run looks objects up by them.
CREATE TABLE users (
    tenant         TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    id             TEXT COLLATE "C" NOT NULL,
    source         TEXT COLLATE "C" NOT NULL,
    anchor         TEXT COLLATE "C" NOT NULL,
    dn             TEXT COLLATE "C",
    user_name      TEXT COLLATE "C",
    active         BOOLEAN NOT NULL DEFAULT TRUE,
    attrs          TEXT COLLATE "C" NOT NULL,
    version        BIGINT NOT NULL,
    created_at     TEXT COLLATE "C" NOT NULL,
    updated_at     TEXT COLLATE "C" NOT NULL,
    dn_key         TEXT COLLATE "C",
    user_name_key  TEXT COLLATE "C",
    -- A changed group's stored members are matched by DN and anchor: the
    -- primary key covers them, answering from the index alone (SQLite's
    -- users_member_keys, without a second index on the same key).
    PRIMARY KEY (tenant, id) INCLUDE (dn, dn_key, anchor),
    UNIQUE (tenant, source, anchor)
);
CREATE INDEX users_dn_key ON users (tenant, source, dn_key);
CREATE INDEX users_user_name_key ON users (tenant, source, user_name_key);

CREATE TABLE groups (
    tenant        TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    id            TEXT COLLATE "C" NOT NULL,
    source        TEXT COLLATE "C" NOT NULL,
    anchor        TEXT COLLATE "C" NOT NULL,
    dn            TEXT COLLATE "C",
    display_name  TEXT COLLATE "C",
    attrs         TEXT COLLATE "C" NOT NULL,
    version       BIGINT NOT NULL,
    created_at    TEXT COLLATE "C" NOT NULL,
    updated_at    TEXT COLLATE "C" NOT NULL,
    dn_key        TEXT COLLATE "C",
    PRIMARY KEY (tenant, id) INCLUDE (dn, dn_key, anchor),
    UNIQUE (tenant, source, anchor)
);
CREATE INDEX groups_dn_key ON groups (tenant, source, dn_key);

-- Direct memberships only; nesting is computed when read.
CREATE TABLE memberships (
    tenant       TEXT COLLATE "C" NOT NULL,
    source       TEXT COLLATE "C" NOT NULL,
    group_id     TEXT COLLATE "C" NOT NULL,
    member_id    TEXT COLLATE "C" NOT NULL,
    member_kind  TEXT COLLATE "C" NOT NULL CHECK (member_kind IN ('user', 'group')),
    PRIMARY KEY (tenant, group_id, member_id)
);
-- The groups of a batch of members, from the index alone.
CREATE INDEX memberships_member ON memberships (tenant, member_id, group_id);
CREATE INDEX memberships_source ON memberships (tenant, source);

CREATE TABLE runs (
    id           BIGSERIAL PRIMARY KEY,
    tenant       TEXT COLLATE "C" NOT NULL,
    trigger      TEXT COLLATE "C" NOT NULL,
    dry_run      BOOLEAN NOT NULL,
    status       TEXT COLLATE "C" NOT NULL,
    started_at   TEXT COLLATE "C" NOT NULL,
    finished_at  TEXT COLLATE "C",
    summary      TEXT COLLATE "C" NOT NULL DEFAULT '{}'
);
CREATE INDEX runs_tenant ON runs (tenant, id);

CREATE TABLE quarantine (
    tenant      TEXT COLLATE "C" NOT NULL,
    source      TEXT COLLATE "C" NOT NULL,
    item_key    TEXT COLLATE "C" NOT NULL,
    anchor      TEXT COLLATE "C",
    kind        TEXT COLLATE "C",
    dn          TEXT COLLATE "C",
    stage       TEXT COLLATE "C" NOT NULL,
    reason      TEXT COLLATE "C" NOT NULL,
    plugin      TEXT COLLATE "C",
    run_id      BIGINT NOT NULL,
    first_seen  TEXT COLLATE "C" NOT NULL,
    last_seen   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, source, item_key)
);

CREATE TABLE source_state (
    tenant      TEXT COLLATE "C" NOT NULL,
    source      TEXT COLLATE "C" NOT NULL,
    key         TEXT COLLATE "C" NOT NULL,
    value       TEXT COLLATE "C" NOT NULL,
    updated_at  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, source, key)
);

-- Every uploaded version of a tenant's plugin, kept for rollback.
CREATE TABLE plugins (
    tenant          TEXT COLLATE "C" NOT NULL,
    kind            TEXT COLLATE "C" NOT NULL,
    version         BIGINT NOT NULL,
    sha256          TEXT COLLATE "C" NOT NULL,
    name            TEXT COLLATE "C" NOT NULL,
    plugin_version  TEXT COLLATE "C" NOT NULL,
    size            BIGINT NOT NULL,
    wasm            BYTEA NOT NULL,
    added_at        TEXT COLLATE "C" NOT NULL,
    added_by        TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, kind, version)
);

-- Which version of each kind a tenant runs.
CREATE TABLE active_plugins (
    tenant        TEXT COLLATE "C" NOT NULL,
    kind          TEXT COLLATE "C" NOT NULL,
    version       BIGINT NOT NULL,
    activated_at  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, kind)
);

-- Consecutive aborted runs per tenant plugin (by content hash); a plugin that
-- keeps failing is disabled for that tenant until an admin re-enables it.
CREATE TABLE plugin_health (
    tenant                TEXT COLLATE "C" NOT NULL,
    kind                  TEXT COLLATE "C" NOT NULL,
    sha256                TEXT COLLATE "C" NOT NULL,
    consecutive_failures  BIGINT NOT NULL,
    last_error            TEXT COLLATE "C",
    disabled_at           TEXT COLLATE "C",
    PRIMARY KEY (tenant, kind, sha256)
);

-- An admin's decision for a unique value two objects claim: this anchor wins.
CREATE TABLE conflict_decisions (
    tenant      TEXT COLLATE "C" NOT NULL,
    key         TEXT COLLATE "C" NOT NULL,
    value       TEXT COLLATE "C" NOT NULL,
    winner      TEXT COLLATE "C" NOT NULL,
    decided_at  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, key, value)
);

-- An attribute the application changed through Roster: its value, and the
-- directory's value it replaced (`base`), JSON arrays.
CREATE TABLE app_edits (
    tenant       TEXT COLLATE "C" NOT NULL,
    object_id    TEXT COLLATE "C" NOT NULL,
    attribute    TEXT COLLATE "C" NOT NULL,
    base         TEXT COLLATE "C" NOT NULL,
    value        TEXT COLLATE "C" NOT NULL,
    recorded_at  TEXT COLLATE "C" NOT NULL,
    recorded_by  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, object_id, attribute)
);

-- The transactional outbox: written in the same transaction as the change it
-- describes; `seq` is per tenant, gap-free and never reused (event_sequences
-- survives retention pruning).
CREATE TABLE events (
    tenant           TEXT COLLATE "C" NOT NULL,
    seq              BIGINT NOT NULL,
    type             TEXT COLLATE "C" NOT NULL,
    object_id        TEXT COLLATE "C" NOT NULL,
    object_kind      TEXT COLLATE "C" NOT NULL,
    version          BIGINT NOT NULL,
    idempotency_key  TEXT COLLATE "C" NOT NULL,
    run_id           BIGINT NOT NULL,
    payload          TEXT COLLATE "C" NOT NULL,
    created_at       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, seq)
);
CREATE INDEX events_created ON events (tenant, created_at);
CREATE TABLE event_sequences (
    tenant    TEXT COLLATE "C" PRIMARY KEY,
    last_seq  BIGINT NOT NULL
);
-- Per webhook endpoint: the last event delivered (or dead-lettered), and retry state.
CREATE TABLE webhook_state (
    tenant           TEXT COLLATE "C" NOT NULL,
    endpoint         TEXT COLLATE "C" NOT NULL,
    delivered_seq    BIGINT NOT NULL,
    attempts         BIGINT NOT NULL,
    next_attempt_at  TEXT COLLATE "C",
    last_error       TEXT COLLATE "C",
    PRIMARY KEY (tenant, endpoint)
);
CREATE TABLE webhook_dead_letters (
    tenant      TEXT COLLATE "C" NOT NULL,
    endpoint    TEXT COLLATE "C" NOT NULL,
    seq         BIGINT NOT NULL,
    last_error  TEXT COLLATE "C" NOT NULL,
    failed_at   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, endpoint, seq)
);

-- API tokens: only a SHA-256 of the secret is kept; the secret is shown once.
CREATE TABLE api_tokens (
    id            TEXT COLLATE "C" PRIMARY KEY,
    hash          TEXT COLLATE "C" NOT NULL UNIQUE,
    name          TEXT COLLATE "C" NOT NULL,
    tenants       TEXT COLLATE "C" NOT NULL,
    role          TEXT COLLATE "C" NOT NULL,
    created_at    TEXT COLLATE "C" NOT NULL,
    expires_at    TEXT COLLATE "C",
    revoked_at    TEXT COLLATE "C",
    last_used_at  TEXT COLLATE "C"
);

-- Append-only and hash-chained per tenant: each record's hash covers its
-- content and the previous record's hash, so an edit, a removal or a
-- reordering is detectable (`roster audit verify`). Pruning moves the
-- tenant's checkpoint (the last pruned record's seq and hash) forward, and
-- verification starts there. `position` is the order records were written
-- in (SQLite's rowid), which verification walks: a record whose seq was
-- changed shows up out of place.
CREATE TABLE audit (
    position   BIGSERIAL NOT NULL,
    tenant     TEXT COLLATE "C" NOT NULL,
    seq        BIGINT NOT NULL,
    at         TEXT COLLATE "C" NOT NULL,
    kind       TEXT COLLATE "C" NOT NULL,
    actor      TEXT COLLATE "C" NOT NULL,
    detail     TEXT COLLATE "C" NOT NULL,
    prev_hash  TEXT COLLATE "C" NOT NULL,
    hash       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, seq)
);
CREATE INDEX audit_at ON audit (tenant, at);
CREATE INDEX audit_position ON audit (tenant, position);
CREATE TABLE audit_checkpoints (
    tenant     TEXT COLLATE "C" PRIMARY KEY,
    seq        BIGINT NOT NULL,
    hash       TEXT COLLATE "C" NOT NULL,
    pruned_at  TEXT COLLATE "C" NOT NULL
);

-- [tenant.privacy] keep_raw_attributes: what the source returned for each
-- synced object, as JSON (attribute -> values), sensitive values digested.
CREATE TABLE raw_attributes (
    tenant     TEXT COLLATE "C" NOT NULL,
    object_id  TEXT COLLATE "C" NOT NULL,
    source     TEXT COLLATE "C" NOT NULL,
    attrs      TEXT COLLATE "C" NOT NULL,
    read_at    TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, object_id)
);
"#,
    ),
    (
        2,
        "leases: which serve node works on a source or a delivery target",
        r#"
-- Milliseconds since the epoch by the database's clock, so nodes with skewed
-- clocks still agree on when a lease ran out (see serve::cluster).
CREATE TABLE leases (
    resource    TEXT COLLATE "C" PRIMARY KEY,
    owner       TEXT COLLATE "C" NOT NULL,
    acquired_at BIGINT NOT NULL,
    renewed_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE TABLE nodes (
    node       TEXT COLLATE "C" PRIMARY KEY,
    info       TEXT COLLATE "C" NOT NULL,
    started_at BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL
);
"#,
    ),
    (
        3,
        "the mapping memo: entries not mapped again while unchanged",
        r#"
CREATE TABLE map_memo (
    tenant        TEXT COLLATE "C" NOT NULL,
    source        TEXT COLLATE "C" NOT NULL,
    id            TEXT COLLATE "C" NOT NULL,
    input_digest  TEXT COLLATE "C" NOT NULL,
    output_digest TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, source, id)
);
"#,
    ),
];

/// Any fixed number, the same in every roster: the advisory lock that lets
/// one process at a time migrate a database several processes share.
const MIGRATION_LOCK: i64 = 0x726f_7374_6572_0001;

/// Brings the schema up to date. `store` names the database in errors.
pub(super) fn migrate(conn: &mut Conn, store: &str) -> Result<(), StoreError> {
    conn.transaction("migrating", |tx| {
        // Taken before schema_migrations is even created: processes opening a
        // new database together must not both create it, nor both run a
        // migration. The others wait here, then find nothing left to do.
        tx.execute("taking the migration lock", "SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch(
            "creating schema_migrations",
            r#"CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT COLLATE "C" NOT NULL, applied_at TEXT COLLATE "C" NOT NULL);"#,
        )?;
        let row =
            tx.query_one("reading schema version", "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])?;
        let current: i64 = get(&row, 0, "reading schema version")?;
        let latest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        if current > latest {
            return Err(StoreError::Open {
                path: store.to_string(),
                message: format!(
                    "the store has schema version {current}, newer than this roster supports ({latest}); upgrade roster"
                ),
            });
        }
        for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            tx.batch("running migration", sql)?;
            tx.execute(
                "recording migration",
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                &[version, name, &now_rfc3339()],
            )?;
            tracing::info!(version, name, "store migrated");
        }
        Ok(())
    })
}
