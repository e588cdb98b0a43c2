//! Versioned schema migrations. Append only: a released migration never changes.

pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial schema",
        r#"
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL
);

CREATE TABLE users (
    tenant      TEXT NOT NULL REFERENCES tenants(id),
    id          TEXT NOT NULL,
    source      TEXT NOT NULL,
    anchor      TEXT NOT NULL,
    dn          TEXT,
    user_name   TEXT,
    active      INTEGER NOT NULL DEFAULT 1,
    attrs       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, source, anchor)
);

CREATE TABLE groups (
    tenant       TEXT NOT NULL REFERENCES tenants(id),
    id           TEXT NOT NULL,
    source       TEXT NOT NULL,
    anchor       TEXT NOT NULL,
    dn           TEXT,
    display_name TEXT,
    attrs        TEXT NOT NULL,
    version      INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, source, anchor)
);

-- Direct memberships only; nesting is computed when read.
CREATE TABLE memberships (
    tenant      TEXT NOT NULL,
    source      TEXT NOT NULL,
    group_id    TEXT NOT NULL,
    member_id   TEXT NOT NULL,
    member_kind TEXT NOT NULL CHECK (member_kind IN ('user', 'group')),
    PRIMARY KEY (tenant, group_id, member_id)
);
CREATE INDEX memberships_member ON memberships (tenant, member_id);
CREATE INDEX memberships_source ON memberships (tenant, source);

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant      TEXT NOT NULL,
    trigger     TEXT NOT NULL,
    dry_run     INTEGER NOT NULL,
    status      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    summary     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX runs_tenant ON runs (tenant, id);

CREATE TABLE quarantine (
    tenant      TEXT NOT NULL,
    source      TEXT NOT NULL,
    item_key    TEXT NOT NULL,
    anchor      TEXT,
    kind        TEXT,
    dn          TEXT,
    stage       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    plugin      TEXT,
    run_id      INTEGER NOT NULL,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    PRIMARY KEY (tenant, source, item_key)
);

CREATE TABLE source_state (
    tenant      TEXT NOT NULL,
    source      TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant, source, key)
);
"#,
    ),
    (
        2,
        "plugin registry",
        r#"
-- Every uploaded version of a tenant's plugin, kept for rollback.
CREATE TABLE plugins (
    tenant          TEXT NOT NULL,
    kind            TEXT NOT NULL,
    version         INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    name            TEXT NOT NULL,
    plugin_version  TEXT NOT NULL,
    size            INTEGER NOT NULL,
    wasm            BLOB NOT NULL,
    added_at        TEXT NOT NULL,
    added_by        TEXT NOT NULL,
    PRIMARY KEY (tenant, kind, version)
);

-- Which version of each kind a tenant runs.
CREATE TABLE active_plugins (
    tenant        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    activated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant, kind)
);
"#,
    ),
    (
        3,
        "plugin health",
        r#"
-- Consecutive aborted runs per tenant plugin (by content hash); a plugin that
-- keeps failing is disabled for that tenant until an admin re-enables it.
CREATE TABLE plugin_health (
    tenant                TEXT NOT NULL,
    kind                  TEXT NOT NULL,
    sha256                TEXT NOT NULL,
    consecutive_failures  INTEGER NOT NULL,
    last_error            TEXT,
    disabled_at           TEXT,
    PRIMARY KEY (tenant, kind, sha256)
);
"#,
    ),
    (
        4,
        "conflict decisions",
        r#"
-- An admin's decision for a unique value two objects claim: this anchor wins.
CREATE TABLE conflict_decisions (
    tenant      TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    winner      TEXT NOT NULL,
    decided_at  TEXT NOT NULL,
    PRIMARY KEY (tenant, key, value)
);
"#,
    ),
    (
        5,
        "app edits",
        r#"
-- An attribute the application changed through Roster: its value, and the
-- directory's value it replaced (`base`), JSON arrays. It stands until the
-- directory changes the attribute too; then conflict resolution decides.
CREATE TABLE app_edits (
    tenant       TEXT NOT NULL,
    object_id    TEXT NOT NULL,
    attribute    TEXT NOT NULL,
    base         TEXT NOT NULL,
    value        TEXT NOT NULL,
    recorded_at  TEXT NOT NULL,
    recorded_by  TEXT NOT NULL,
    PRIMARY KEY (tenant, object_id, attribute)
);
"#,
    ),
    (
        6,
        "events outbox and webhook delivery",
        r#"
-- The transactional outbox: written in the same transaction as the change it
-- describes; `seq` is per tenant, gap-free and never reused (event_sequences
-- survives retention pruning).
CREATE TABLE events (
    tenant           TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    type             TEXT NOT NULL,
    object_id        TEXT NOT NULL,
    object_kind      TEXT NOT NULL,
    version          INTEGER NOT NULL,
    idempotency_key  TEXT NOT NULL,
    run_id           INTEGER NOT NULL,
    payload          TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    PRIMARY KEY (tenant, seq)
);
CREATE INDEX events_created ON events (tenant, created_at);
CREATE TABLE event_sequences (
    tenant    TEXT PRIMARY KEY,
    last_seq  INTEGER NOT NULL
);
-- Per webhook endpoint: the last event delivered (or dead-lettered), and retry state.
CREATE TABLE webhook_state (
    tenant           TEXT NOT NULL,
    endpoint         TEXT NOT NULL,
    delivered_seq    INTEGER NOT NULL,
    attempts         INTEGER NOT NULL,
    next_attempt_at  TEXT,
    last_error       TEXT,
    PRIMARY KEY (tenant, endpoint)
);
CREATE TABLE webhook_dead_letters (
    tenant      TEXT NOT NULL,
    endpoint    TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    last_error  TEXT NOT NULL,
    failed_at   TEXT NOT NULL,
    PRIMARY KEY (tenant, endpoint, seq)
);
"#,
    ),
    (
        7,
        "api tokens",
        r#"
-- API tokens: only a SHA-256 of the secret is kept; the secret is shown once.
CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    hash          TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    tenants       TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    revoked_at    TEXT,
    last_used_at  TEXT
);
"#,
    ),
    (
        8,
        "audit trail",
        r#"
-- Append-only and hash-chained per tenant: each record's hash covers its
-- content and the previous record's hash, so an edit, a removal or a
-- reordering is detectable (`roster audit verify`). A chain per tenant lets
-- each tenant keep its own retention: pruning moves the tenant's checkpoint
-- (the last pruned record's seq and hash) forward, and verification starts
-- there.
CREATE TABLE audit (
    tenant     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    at         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    actor      TEXT NOT NULL,
    detail     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    PRIMARY KEY (tenant, seq)
);
CREATE INDEX audit_at ON audit (tenant, at);
CREATE TABLE audit_checkpoints (
    tenant     TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    hash       TEXT NOT NULL,
    pruned_at  TEXT NOT NULL
);
"#,
    ),
    (
        9,
        "raw source attributes, kept only for tenants that opt in",
        r#"
-- [tenant.privacy] keep_raw_attributes: what the source returned for each
-- synced object, as JSON (attribute -> values), sensitive values digested.
-- Rows of objects that no longer exist, and all of a tenant's rows once it
-- turns the option off, are deleted by the next applied run.
CREATE TABLE raw_attributes (
    tenant     TEXT NOT NULL,
    object_id  TEXT NOT NULL,
    source     TEXT NOT NULL,
    attrs      TEXT NOT NULL,
    read_at    TEXT NOT NULL,
    PRIMARY KEY (tenant, object_id)
);
"#,
    ),
    (
        10,
        "lookup keys for incremental runs",
        r#"
-- An incremental run loads only the stored objects around its changes: it
-- finds group members by normalized DN (dn::normalize_dn) and unique-key
-- claimants by lower-cased userName. The host computes both keys (SQLite's
-- lower() is ASCII only); rows stored before this migration get them from
-- the Rust step that runs right after it.
ALTER TABLE users ADD COLUMN dn_key TEXT;
ALTER TABLE users ADD COLUMN user_name_key TEXT;
ALTER TABLE groups ADD COLUMN dn_key TEXT;
CREATE INDEX users_dn_key ON users (tenant, source, dn_key);
CREATE INDEX users_user_name_key ON users (tenant, source, user_name_key);
CREATE INDEX groups_dn_key ON groups (tenant, source, dn_key);
"#,
    ),
    (
        11,
        "covering indexes for a changed group's members and a member's groups",
        r#"
-- A changed group's stored members are matched against its member values by
-- DN and anchor (sync::neighborhood): these indexes answer that from the
-- index alone, without reading each member's row.
CREATE INDEX users_member_keys ON users (tenant, id, dn, dn_key, anchor);
CREATE INDEX groups_member_keys ON groups (tenant, id, dn, dn_key, anchor);
-- The groups of a batch of members, from the index alone.
DROP INDEX memberships_member;
CREATE INDEX memberships_member ON memberships (tenant, member_id, group_id);
"#,
    ),
    (
        12,
        "leases: which serve node works on a source or a delivery target",
        r#"
-- Times are milliseconds since the epoch by the store's clock, so nodes with
-- skewed clocks still agree on when a lease ran out (see serve::cluster).
CREATE TABLE leases (
    resource TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    acquired_at INTEGER NOT NULL,
    renewed_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE nodes (
    node TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    seen_at INTEGER NOT NULL
);
"#,
    ),
    (
        13,
        "the mapping memo: entries not mapped again while unchanged",
        r#"
-- Digests only (see mapping::memo). A cache of a pure function, written
-- outside the apply transaction: any state of it is consistent.
CREATE TABLE map_memo (
    tenant TEXT NOT NULL,
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    input_digest TEXT NOT NULL,
    output_digest TEXT NOT NULL,
    PRIMARY KEY (tenant, source, id)
) WITHOUT ROWID;
"#,
    ),
    (
        14,
        "memberships keyed by their primary key alone",
        r#"
-- A membership is nothing but its key: as a rowid table it was stored twice,
-- in the table and in its primary-key index, and a full sync wrote both for
-- every one of hundreds of thousands of rows. WITHOUT ROWID keeps one B-tree.
-- The index on (tenant, source) goes too: keyed lookups never use it (see
-- membership_lookup_sql), and loading a source's memberships reads the
-- tenant's range of the primary key, which is the same rows for a tenant
-- with one source.
CREATE TABLE memberships_by_key (
    tenant      TEXT NOT NULL,
    source      TEXT NOT NULL,
    group_id    TEXT NOT NULL,
    member_id   TEXT NOT NULL,
    member_kind TEXT NOT NULL CHECK (member_kind IN ('user', 'group')),
    PRIMARY KEY (tenant, group_id, member_id)
) WITHOUT ROWID;
INSERT INTO memberships_by_key (tenant, source, group_id, member_id, member_kind)
    SELECT tenant, source, group_id, member_id, member_kind FROM memberships;
DROP TABLE memberships;
ALTER TABLE memberships_by_key RENAME TO memberships;
CREATE INDEX memberships_member ON memberships (tenant, member_id, group_id);
"#,
    ),
];

/// The migration whose new columns [`super::backfill_lookup_keys`] fills.
pub const LOOKUP_KEYS: i64 = 10;
