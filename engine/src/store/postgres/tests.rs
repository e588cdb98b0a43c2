//! Against a real PostgreSQL (`ROSTER_TEST_POSTGRES_URL`, by default the
//! server on 127.0.0.1:5432 as `postgres`). Each test works in a database of
//! its own, created for it and dropped after. Without a server they fail:
//! a skipped test would pass for a backend that was never run.

use std::sync::{Arc, Barrier};

use super::PgStore;
use crate::conflict::EditAction;
use crate::model::Stored;
use crate::plan::{AttrChange, Change, MemberObject, MembershipChange, Plan, PlannedObject, SourcePlan};
use crate::source::EntryKind;
use crate::store::sqlite::SqliteStore;
use crate::store::{
    AppEdit, Fence, MembershipEnd, PluginRecord, QuarantineItem, RunOutcome, Settled, Store, StoreError, TokenRecord,
    WebhookState,
};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn admin_url() -> String {
    std::env::var("ROSTER_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string())
}

fn admin() -> postgres::Client {
    let url = admin_url();
    postgres::Client::connect(&url, postgres::NoTls).unwrap_or_else(|e| {
        panic!("these tests need PostgreSQL at {url} (set ROSTER_TEST_POSTGRES_URL to use another): {e}")
    })
}

/// A fresh database, dropped when the test ends (passed or not).
struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    fn new() -> Self {
        Self::with_options("")
    }

    /// With `CREATE DATABASE` options (a collation, say).
    fn with_options(options: &str) -> Self {
        let name = format!("roster_unit_{}", uuid::Uuid::new_v4().simple());
        admin().batch_execute(&format!("CREATE DATABASE {name} {options}")).expect("creating the test database");
        let mut url = url::Url::parse(&admin_url()).expect("ROSTER_TEST_POSTGRES_URL is a URL");
        url.set_path(&name);
        Self { name, url: url.to_string() }
    }

    fn open(&self) -> PgStore {
        PgStore::open(&self.url).expect("opening the store")
    }

    /// A plain connection, to look at (or tamper with) the tables.
    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connecting to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = admin().batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

fn attrs(pairs: &[(&str, &[&str])]) -> crate::model::Attributes {
    pairs.iter().map(|(k, v)| (*k, v.iter().copied())).collect()
}

fn user(id: &str, name: &str) -> PlannedObject {
    PlannedObject {
        id: id.into(),
        kind: EntryKind::User,
        anchor: format!("anchor-{id}"),
        dn: Some(format!("uid={name},ou=People,dc=Example")),
        attrs: attrs(&[("userName", &[name]), ("roles", &["reader"]), ("emails", &[&format!("{name}@example.com")])]),
    }
}

fn group(id: &str, name: &str) -> PlannedObject {
    PlannedObject {
        id: id.into(),
        kind: EntryKind::Group,
        anchor: format!("anchor-{id}"),
        dn: Some(format!("cn={name},ou=Groups,dc=Example")),
        attrs: attrs(&[("displayName", &[name])]),
    }
}

fn create(object: PlannedObject) -> Change {
    Change::Create { object }
}

fn update(object: PlannedObject, from_version: i64, changes: Vec<AttrChange>) -> Change {
    Change::Update { object, from_version, changes }
}

fn delete(o: &PlannedObject) -> Change {
    Change::Delete {
        id: o.id.clone(),
        kind: o.kind,
        anchor: o.anchor.clone(),
        dn: o.dn.clone(),
        label: o.attrs.iter().next().and_then(|(_, v)| v.first()).map(str::to_string).unwrap_or_default(),
    }
}

fn member(add: bool, group: &str, member: &str, kind: EntryKind) -> MembershipChange {
    MembershipChange {
        add,
        group: MemberObject::new(EntryKind::Group, group, &format!("label of {group}")),
        member: MemberObject::new(kind, member, &format!("label of {member}")),
    }
}

fn plan(tenant: &str, changes: Vec<Change>, memberships: Vec<MembershipChange>) -> Plan {
    Plan {
        tenant: tenant.into(),
        sources: vec![SourcePlan {
            source: "ldap".into(),
            changes,
            memberships,
            read_complete: true,
            existing_objects: 0,
        }],
    }
}

fn apply(store: &mut dyn Store, plan: &Plan) -> Result<(), StoreError> {
    let run = store.begin_run(&plan.tenant, "test", false).expect("run");
    store.apply(plan, run).map(|_| ())
}

fn ids(objects: &[Stored]) -> Vec<&str> {
    objects.iter().map(|o| o.id.as_str()).collect()
}

fn event_seqs(store: &mut dyn Store, tenant: &str) -> Vec<i64> {
    store.events(tenant, 0, 1_000_000).expect("events").iter().map(|e| e.seq).collect()
}

/// Users u1..u3 in g1 (u1, u2) and g2 (g1): more than one batch of each
/// kind of write, as the tests' batch size is small.
fn directory_plan(tenant: &str) -> Plan {
    let mut changes: Vec<Change> = (1..=9).map(|i| create(user(&format!("u{i}"), &format!("User{i}")))).collect();
    changes.push(create(group("g1", "Staff")));
    changes.push(create(group("g2", "Everyone")));
    let mut memberships: Vec<MembershipChange> =
        (1..=9).map(|i| member(true, "g1", &format!("u{i}"), EntryKind::User)).collect();
    memberships.push(member(true, "g2", "g1", EntryKind::Group));
    plan(tenant, changes, memberships)
}

#[test]
fn migrating_twice_is_a_no_op_and_a_newer_schema_is_refused() {
    let db = TestDb::new();
    drop(db.open());
    drop(db.open());
    let mut c = db.client();
    let versions: Vec<i64> = c
        .query("SELECT version FROM schema_migrations ORDER BY version", &[])
        .expect("versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let every: Vec<i64> = super::migrations::MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(versions, every, "each migration once");
    c.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', 'x')", &[]).expect("future version");
    match PgStore::open(&db.url) {
        Err(StoreError::Open { message, .. }) => assert!(message.contains("newer than this roster"), "{message}"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
}

#[test]
fn processes_opening_a_new_database_together_all_succeed() {
    let db = TestDb::new();
    let url = Arc::new(db.url.clone());
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                PgStore::open(&url).map(drop)
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread").expect("open");
    }
    let n: i64 = db.client().query_one("SELECT COUNT(*) FROM schema_migrations", &[]).expect("count").get(0);
    assert_eq!(n as usize, super::migrations::MIGRATIONS.len(), "each migration once");
}

#[test]
fn an_applied_plan_is_in_the_snapshot_and_listings() {
    let db = TestDb::new();
    let mut store = db.open();
    apply(&mut store, &directory_plan("t")).expect("apply");
    let snap = store.snapshot("t", "ldap").expect("snapshot");
    assert_eq!(snap.objects.len(), 11);
    assert_eq!(snap.memberships.len(), 10);
    assert!(snap.memberships.contains(&("g2".to_string(), "g1".to_string())));
    let u1 = &snap.objects["u1"];
    assert_eq!((u1.version, u1.kind, u1.attrs.first("userName").unwrap_or_default()), (1, EntryKind::User, "User1"));
    assert!(store.snapshot("t", "other").expect("other source").objects.is_empty());
    let users = store.users("t").expect("users");
    assert_eq!(ids(&users), ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9"]);
    assert_eq!(ids(&store.groups("t").expect("groups")), ["g2", "g1"], "by display name");
    assert_eq!(store.object_count("t", "ldap").expect("count"), 11);
    assert_eq!(store.source_anchors("t", "ldap").expect("anchors")[&EntryKind::Group].len(), 2);
    // 9 creates + 9 role assignments + 2 group creates + 10 memberships.
    assert_eq!(event_seqs(&mut store, "t"), (1..=30).collect::<Vec<_>>());
    assert_eq!(store.audit_verify(), Ok(12), "one record per change and one for the memberships");
}

#[test]
fn an_update_planned_against_an_old_version_conflicts_and_writes_nothing() {
    let db = TestDb::new();
    let mut store = db.open();
    apply(&mut store, &directory_plan("t")).expect("apply");
    let mut renamed = user("u2", "Renamed");
    let change = AttrChange { attr: "userName".into(), old: vec!["User2".into()], new: vec!["Renamed".into()] };
    apply(&mut store, &plan("t", vec![update(renamed.clone(), 1, vec![change.clone()])], vec![])).expect("update");
    let events = event_seqs(&mut store, "t").len();
    renamed.attrs.insert("title".into(), vec!["Boss".into()]);
    // Planned against version 1, while the store is at 2; with a create
    // before it, which must not stay either.
    let stale = plan("t", vec![create(user("u10", "User10")), update(renamed, 1, vec![change])], vec![]);
    match apply(&mut store, &stale) {
        Err(StoreError::Conflict { id, label, expected }) => {
            assert_eq!((id.as_str(), label.as_str(), expected), ("u2", "Renamed", 1));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(event_seqs(&mut store, "t").len(), events);
    let u2 = store.objects_by_ids("t", "ldap", &["u2".into(), "u10".into()]).expect("lookup");
    assert_eq!(ids(&u2), ["u2"]);
    assert_eq!((u2[0].version, u2[0].attrs.contains_key("title")), (2, false));
    // Creating an object that exists is an error too.
    assert!(matches!(
        apply(&mut store, &plan("t", vec![create(user("u1", "User1"))], vec![])),
        Err(StoreError::Query { context: "inserting object", .. })
    ));
}

#[test]
fn concurrent_applies_for_one_tenant_number_events_without_gaps() {
    let db = TestDb::new();
    let url = Arc::new(db.url.clone());
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|node| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut store = PgStore::open(&url).expect("open");
                barrier.wait();
                for round in 0..8 {
                    let ids: Vec<String> = (0..3).map(|i| format!("{node}-{round}-{i}")).collect();
                    let changes = ids.iter().map(|id| create(user(id, id))).collect();
                    let memberships = vec![member(true, &format!("{node}-g"), &ids[0], EntryKind::User)];
                    apply(&mut store, &plan("t", changes, memberships)).expect("apply");
                    store.audit("t", "admin", node, &serde_json::json!({ "round": round })).expect("audit");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let mut store = db.open();
    // Per apply: 3 creates, 3 role assignments, 1 membership.
    assert_eq!(event_seqs(&mut store, "t"), (1..=2 * 8 * 7).collect::<Vec<_>>());
    let audit = store.audit_records(Some("t"), None).expect("audit");
    assert_eq!(audit.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=2 * 8 * 5).collect::<Vec<_>>());
    assert_eq!(store.audit_verify(), Ok(2 * 8 * 5));
}

#[test]
fn the_audit_chain_verifies_after_appends_from_two_connections_and_catches_an_edit() {
    let db = TestDb::new();
    let mut stores = [db.open(), db.open()];
    for i in 0..20 {
        let store = &mut stores[i % 2];
        store.audit("t1", "admin", "alice", &serde_json::json!({ "i": i })).expect("audit");
        store.audit("t2", "security", "bob", &serde_json::json!({ "i": i })).expect("audit");
    }
    let [mut a, _] = stores;
    assert_eq!(a.audit_verify(), Ok(40));
    let t1 = a.audit_records(Some("t1"), None).expect("records");
    assert_eq!(t1.len(), 20);
    assert!(t1.windows(2).all(|w| w[1].prev_hash == w[0].hash));
    // Pruning keeps what is left verifiable, and the chain goes on from the checkpoint.
    let cut = t1[9].at.clone();
    let pruned = a.audit_prune("t1", &format!("{cut}~")).expect("prune");
    assert!(pruned >= 10, "{pruned}");
    a.audit("t1", "admin", "alice", &serde_json::json!({ "after": "prune" })).expect("audit");
    assert_eq!(a.audit_verify(), Ok(40 - pruned + 1));
    db.client().execute("UPDATE audit SET detail = '{\"i\":99}' WHERE tenant = 't2' AND seq = 5", &[]).expect("tamper");
    let err = a.audit_verify().expect_err("an edited record");
    assert!(err.contains("tenant 't2': record 5") && err.contains("edited"), "{err}");
}

#[test]
fn keyed_lookups_return_the_rows_of_their_keys() {
    let db = TestDb::new();
    let mut store = db.open();
    apply(&mut store, &directory_plan("t")).expect("apply");
    apply(&mut store, &plan("other", vec![create(user("u1", "User1"))], vec![])).expect("other tenant");
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    let found = store.objects_by_ids("t", "ldap", &s(&["u3", "g1", "nope"])).expect("by id");
    assert_eq!(ids(&found), ["u3", "g1"], "users, then groups");
    assert!(store.objects_by_ids("t", "elsewhere", &s(&["u3"])).expect("by id").is_empty());
    assert!(store.objects_by_ids("t", "ldap", &[]).expect("none").is_empty());

    let found = store.objects_by_anchors("t", "ldap", &s(&["anchor-g2", "anchor-u1"])).expect("by anchor");
    assert_eq!(ids(&found), ["u1", "g2"]);

    let keys = [
        crate::dn::normalize_dn("UID=User4, OU=People,DC=Example"),
        crate::dn::normalize_dn("cn=staff,ou=groups,dc=example"),
    ];
    let found = store.objects_by_dn_keys("t", "ldap", &keys).expect("by DN");
    assert_eq!(ids(&found), ["u4", "g1"]);

    let found = store.users_by_user_name_keys("t", "ldap", &s(&["user5", "User6", "staff"])).expect("by userName");
    assert_eq!(ids(&found), ["u5"], "keys are lower-cased userNames, and users only");

    let touching = store.memberships_touching("t", "ldap", &s(&["g2"]), MembershipEnd::Group).expect("group end");
    assert_eq!(touching, [("g2".to_string(), "g1".to_string())]);
    let touching =
        store.memberships_touching("t", "ldap", &s(&["g1", "u2"]), MembershipEnd::Member).expect("member end");
    assert_eq!(touching, [("g2".to_string(), "g1".to_string()), ("g1".to_string(), "u2".to_string())], "by member");

    let keys = store.member_keys("t", "ldap", &s(&["g2", "g1"])).expect("member keys");
    assert_eq!(keys.len(), 10);
    assert_eq!(keys[0].group_id, "g1", "user members first");
    let g1 = keys.iter().find(|k| k.member_id == "g1").expect("the group member");
    assert_eq!(g1.group_id, "g2");
    assert_eq!(g1.dn.as_deref(), Some("cn=Staff,ou=Groups,dc=Example"));
    assert_eq!(g1.dn_key, Some(crate::dn::normalize_dn("cn=Staff,ou=Groups,dc=Example")));
    assert_eq!(g1.anchor, "anchor-g1");
}

/// Every keyed lookup of an incremental run is answered through the index
/// of its key (what `sqlite::tests::keyed_lookups_use_the_key_index` checks
/// of SQLite). Scans are priced out so that tiny tables do not hide a missing index.
#[test]
fn keyed_lookups_use_the_key_index() {
    use super::{MEMBER_KEYS_SQL, membership_lookup_sql, object_lookup_sql};
    let db = TestDb::new();
    drop(db.open());
    let mut c = db.client();
    // Enough rows, analysed, for the plans a real directory gets.
    c.batch_execute(
        "INSERT INTO tenants VALUES ('t', 'x');
         INSERT INTO users (tenant, id, source, anchor, dn, user_name, attrs, version, created_at, updated_at, dn_key, user_name_key)
              SELECT 't', 'u' || i, 's', 'a' || i, 'uid=' || i, 'n' || i, '{}', 1, 'x', 'x', 'uid=' || i, 'n' || i
                FROM generate_series(1, 5000) i;
         INSERT INTO groups (tenant, id, source, anchor, dn, display_name, attrs, version, created_at, updated_at, dn_key)
              SELECT 't', 'g' || i, 's', 'b' || i, 'cn=' || i, 'g' || i, '{}', 1, 'x', 'x', 'cn=' || i
                FROM generate_series(1, 500) i;
         INSERT INTO memberships SELECT 't', 's', 'g' || (i % 500), 'u' || i, 'user' FROM generate_series(1, 5000) i;
         INSERT INTO memberships SELECT 't', 's', 'g' || (i % 7), 'g' || i, 'group' FROM generate_series(10, 500) i;
         ANALYZE;
         SET enable_seqscan = off; SET enable_bitmapscan = off;",
    )
    .expect("rows");
    let mut queries: Vec<(String, &str, &str)> = vec![
        (membership_lookup_sql(MembershipEnd::Group).to_string(), "('t', '{a,b}')", "memberships_pkey"),
        (membership_lookup_sql(MembershipEnd::Member).to_string(), "('t', '{a,b}')", "memberships_member"),
        (MEMBER_KEYS_SQL.to_string(), "('t', '{a,b}')", "memberships_pkey"),
    ];
    for table in ["users", "groups"] {
        let three = "('t', 's', '{a,b}')";
        queries.push((
            object_lookup_sql(table, "id"),
            three,
            if table == "users" { "users_pkey" } else { "groups_pkey" },
        ));
        queries.push((
            object_lookup_sql(table, "anchor"),
            three,
            if table == "users" { "users_tenant_source_anchor_key" } else { "groups_tenant_source_anchor_key" },
        ));
        queries.push((
            object_lookup_sql(table, "dn_key"),
            three,
            if table == "users" { "users_dn_key" } else { "groups_dn_key" },
        ));
    }
    queries.push((object_lookup_sql("users", "user_name_key"), "('t', 's', '{a,b}')", "users_user_name_key"));
    for (i, (sql, args, index)) in queries.iter().enumerate() {
        c.batch_execute(&format!("PREPARE q{i} AS {sql}")).expect("prepare");
        let plan: Vec<String> =
            c.query(&format!("EXPLAIN EXECUTE q{i}{args}"), &[]).expect("explain").iter().map(|r| r.get(0)).collect();
        let plan = plan.join("\n");
        assert!(!plan.contains("Seq Scan") && plan.contains(index), "{sql}\n{plan}");
        if sql == MEMBER_KEYS_SQL {
            assert!(plan.matches("Index Only Scan using").count() >= 2, "members' keys from the index alone: {plan}");
        }
    }
}

#[test]
fn an_unreachable_server_is_an_open_error_without_the_password() {
    match PgStore::open("postgres://roster:s3cret@127.0.0.1:1/nowhere?connect_timeout=5") {
        Err(StoreError::Open { path, message }) => {
            assert!(message.contains("cannot connect"), "{message}");
            assert!(!path.contains("s3cret") && !message.contains("s3cret"), "{path}: {message}");
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("connected to nothing"),
    }
}

/// The store moves to the threads that run syncs and serve the API.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<PgStore>();
};

#[test]
fn calls_from_inside_an_async_runtime_work() {
    let db = TestDb::new();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let users = runtime.block_on(async {
        let mut store = PgStore::open(&db.url).expect("open");
        apply(&mut store, &directory_plan("t")).expect("apply");
        let users = store.users("t").expect("users");
        drop(store);
        users
    });
    assert_eq!(users.len(), 9);
}

#[test]
fn a_broken_connection_is_replaced_on_the_next_call() {
    let db = TestDb::new();
    let mut store = db.open();
    store.ensure_tenant("t").expect("tenant");
    db.client()
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .expect("terminate");
    // The call that finds the connection dead fails; the next one reconnects.
    let _ = store.users("t");
    assert!(store.users("t").expect("after reconnecting").is_empty());
}

/// Timestamps blanked: two stores write the same rows at different times.
fn untimed(mut v: serde_json::Value) -> serde_json::Value {
    const TIMES: &[&str] = &[
        "created_at",
        "updated_at",
        "occurred_at",
        "at",
        "first_seen",
        "last_seen",
        "added_at",
        "recorded_at",
        "started_at",
        "finished_at",
        "last_used_at",
        "revoked_at",
        "hash",
        "prev_hash",
        "disabled_at",
    ];
    match &mut v {
        serde_json::Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                *x = if TIMES.contains(&k.as_str()) { serde_json::Value::Null } else { untimed(x.take()) };
            }
        }
        serde_json::Value::Array(items) => {
            for x in items.iter_mut() {
                *x = untimed(x.take());
            }
        }
        _ => {}
    }
    v
}

fn stored_json(objects: &[Stored]) -> serde_json::Value {
    objects
        .iter()
        .map(|o| serde_json::json!([o.id, o.kind.as_str(), o.source, o.anchor, o.dn, o.attrs, o.version]))
        .collect()
}

/// Drives a store through what a few runs and an admin do, and returns
/// everything it then answers.
fn exercise(store: &mut dyn Store) -> serde_json::Value {
    use serde_json::json;
    let t = "t";
    let first = directory_plan(t);
    apply(store, &first).expect("first apply");
    let u1 = user("u1", "User1");
    let mut u1b = u1.clone();
    u1b.attrs.insert("active".into(), vec!["false".into()]);
    u1b.attrs.insert("roles".into(), vec!["writer".into()]);
    let second = plan(
        t,
        vec![
            update(
                u1b,
                1,
                vec![
                    AttrChange { attr: "active".into(), old: vec![], new: vec!["false".into()] },
                    AttrChange { attr: "roles".into(), old: vec!["reader".into()], new: vec!["writer".into()] },
                ],
            ),
            delete(&user("u2", "User2")),
            delete(&user("ghost", "Ghost")),
            create(user("u10", "User10")),
            delete(&group("g2", "Everyone")),
            // Sorts first by a language's rules, after the capitals by bytes.
            create(user("u11", "ann")),
        ],
        vec![
            member(false, "g1", "u3", EntryKind::User),
            member(true, "g1", "u10", EntryKind::User),
            member(false, "g1", "u10", EntryKind::User),
            member(true, "g1", "u10", EntryKind::User),
            member(true, "g1", "u4", EntryKind::User),
        ],
    );
    let run = store.begin_run(t, "schedule", false).expect("run");
    let stats = store.apply(&second, run).expect("second apply");
    store
        .finish_run(run, &RunOutcome { status: "applied".into(), summary: json!({ "counts": { "creates": 1 } }) })
        .expect("finish");
    let blocked = store.begin_run(t, "schedule", true).expect("run");
    store
        .finish_run(blocked, &RunOutcome { status: "blocked".into(), summary: json!({ "why": "deletes" }) })
        .expect("finish");
    let approved = store.mark_run_approved(blocked, run).expect("approve");
    let approved_twice = store.mark_run_approved(blocked, run).expect("approve again");

    let item = |anchor: Option<&str>, dn: Option<&str>, reason: &str| QuarantineItem {
        source: "ldap".into(),
        anchor: anchor.map(String::from),
        kind: Some(EntryKind::User),
        dn: dn.map(String::from),
        stage: "map".into(),
        reason: reason.into(),
        plugin: None,
    };
    store
        .record_quarantine(
            t,
            "ldap",
            run,
            &[
                item(Some("x1"), None, "first"),
                item(None, Some("uid=b,dc=x"), "no anchor"),
                item(Some("x1"), None, "second, same entry"),
                item(None, None, "nothing"),
                item(Some("x2"), Some("uid=a,dc=x"), "bad"),
            ],
            &Settled::Nothing,
        )
        .expect("quarantine");
    store
        .record_quarantine(
            t,
            "ldap",
            run,
            &[item(Some("x2"), None, "still bad")],
            &Settled::Anchors(vec!["x1".into(), "x2".into()]),
        )
        .expect("settle");
    let quarantine_count = store.dismiss_quarantine(t, "x2").expect("dismiss");

    store
        .put_raw_attributes(
            t,
            "ldap",
            &[
                ("u1".into(), "{\"a\":1}".into()),
                ("u3".into(), "{\"a\":3}".into()),
                ("u2".into(), "{\"gone\":1}".into()),
                ("u3".into(), "{\"a\":33}".into()),
            ],
        )
        .expect("raw");
    let raw = (
        store.raw_attributes(t, "u1").expect("raw").map(|r| r.0),
        store.raw_attributes(t, "u3").expect("raw").map(|r| r.0),
        store.raw_attributes(t, "u2").expect("raw"),
    );

    for (object, attr) in [("u1", "title"), ("u3", "title"), ("u4", "title")] {
        store
            .record_app_edit(
                t,
                &AppEdit {
                    object_id: object.into(),
                    attribute: attr.into(),
                    base: vec!["old".into()],
                    value: vec!["new".into()],
                    recorded_at: "2020-01-01T00:00:00Z".into(),
                    recorded_by: "alice".into(),
                },
            )
            .expect("edit");
    }
    let edit = |object: &str| (object.to_string(), "title".to_string());
    store
        .settle_app_edits(
            t,
            &[
                EditAction::Clear { object_id: edit("u1").0, attribute: edit("u1").1 },
                EditAction::Rebase { object_id: edit("u1").0, attribute: edit("u1").1, base: vec!["b1".into()] },
                EditAction::Rebase { object_id: edit("u3").0, attribute: edit("u3").1, base: vec!["b1".into()] },
                EditAction::Rebase { object_id: edit("u3").0, attribute: edit("u3").1, base: vec!["b2".into()] },
            ],
        )
        .expect("settle edits");

    let plugin = PluginRecord {
        tenant: t.into(),
        kind: "mapper".into(),
        version: 0,
        sha256: "abc".into(),
        name: "m".into(),
        plugin_version: "1.0".into(),
        size: 3,
        added_at: String::new(),
        added_by: "alice".into(),
        active: false,
    };
    let versions =
        (store.add_plugin(&plugin, b"\0as").expect("plugin"), store.add_plugin(&plugin, b"\0asm").expect("plugin"));
    store.activate_plugin(t, "mapper", 1).expect("activate");
    let missing = matches!(store.activate_plugin(t, "mapper", 7), Err(StoreError::NoSuchPlugin { version: 7, .. }));
    let health = (
        store.record_plugin_run(t, "mapper", "abc", Some("trap"), 2).expect("health"),
        store.record_plugin_run(t, "mapper", "abc", Some("trap"), 2).expect("health").disabled_at.is_some(),
    );
    store.enable_plugin(t, "mapper").expect("enable");

    store.decide_conflict(t, "userName", "JDoe", "anchor-u1").expect("decide");
    store.decide_conflict(t, "email", "a@b", "anchor-u3").expect("decide");
    let token = TokenRecord {
        id: "tok1".into(),
        name: "ci".into(),
        tenants: vec![t.into()],
        role: "admin".into(),
        created_at: "2020-01-01T00:00:00Z".into(),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    };
    store.add_token(&token, "hash1").expect("token");
    let by_hash = store.token_by_hash("hash1").expect("token").map(|t| t.id);
    let revoked = (store.revoke_token("tok1").expect("revoke"), store.revoke_token("tok1").expect("revoke"));
    store
        .set_webhook_state(
            t,
            "hook",
            &WebhookState {
                delivered_seq: 4,
                attempts: 2,
                next_attempt_at: Some("later".into()),
                last_error: Some("503".into()),
            },
        )
        .expect("webhook");
    store.dead_letter(t, "hook", 3, "first").expect("dead letter");
    store.dead_letter(t, "hook", 3, "again").expect("dead letter");
    store.dead_letter(t, "hook", 1, "one").expect("dead letter");
    store.clear_dead_letter(t, "hook", 1).expect("clear");
    store.set_source_state(t, "ldap", "hwm", "42").expect("state");
    store.set_source_state(t, "ldap", "hwm", "43").expect("state");

    let mut snapshot_ids: Vec<String> = store.snapshot(t, "ldap").expect("snapshot").objects.into_keys().collect();
    snapshot_ids.sort();
    json!({
        "stats": stats.rows_written,
        "snapshot_ids": snapshot_ids,
        "users": stored_json(&store.users(t).expect("users")),
        "groups": stored_json(&store.groups(t).expect("groups")),
        "memberships": store.memberships(t).expect("memberships"),
        "events": store.events(t, 0, 1000).expect("events"),
        "events_after": store.events(t, 30, 2).expect("events").iter().map(|e| e.seq).collect::<Vec<_>>(),
        "audit": store.audit_records(Some(t), None).expect("audit"),
        "audit_verify": store.audit_verify(),
        "runs": store.runs(t, 10).expect("runs"),
        "approved": [approved, approved_twice],
        "quarantine": store.quarantine(t).expect("quarantine"),
        "dismissed": quarantine_count,
        "raw": [raw.0, raw.1, raw.2.map(|r| r.0)],
        "app_edits": store.app_edits(t).expect("edits"),
        "plugins": store.plugins(t).expect("plugins"),
        "versions": [versions.0, versions.1],
        "active_plugin": store.active_plugin(t, "mapper").expect("active"),
        "missing_plugin": missing,
        "health": [serde_json::to_value(&health.0).expect("json"), json!(health.1)],
        "health_after_enable": store.plugin_health(t, "mapper", "abc").expect("health"),
        "decisions": store.conflict_decisions(t).expect("decisions"),
        "token_by_hash": by_hash,
        "revoked": [revoked.0, revoked.1],
        "tokens": store.tokens().expect("tokens"),
        "webhook": store.webhook_state(t, "hook").expect("webhook"),
        "no_webhook": store.webhook_state(t, "other").expect("webhook"),
        "dead_letters": store.dead_letters(t, "hook").expect("dead letters"),
        "state": store.source_state(t, "ldap", "hwm").expect("state"),
        "states": store.source_states(t, "ldap").expect("states"),
        "pruned_events": store.prune_events(t, "0000").expect("prune"),
        "cleared_raw": store.clear_raw_attributes(t).expect("clear raw"),
    })
}

/// The same calls give the same answers from both backends: rows, their
/// order, event payloads and keys, audit details. In a database whose
/// default collation is a language's, not bytes.
#[test]
fn answers_as_the_sqlite_store_does() {
    let db = TestDb::with_options("TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'");
    let mut pg = db.open();
    let mut lite = SqliteStore::open_in_memory().expect("sqlite");
    let (pg, lite) = (untimed(exercise(&mut pg)), untimed(exercise(&mut lite)));
    if pg != lite {
        let (pg, lite) = (pg.as_object().expect("object"), lite.as_object().expect("object"));
        for (key, value) in lite {
            assert_eq!(pg.get(key), Some(value), "{key} differs (left: PostgreSQL, right: SQLite)");
        }
        panic!("the answers differ");
    }
}

/// Two nodes (two connections) and one lease: one holder at a time; the other
/// takes it only once it runs out; the old holder's fenced writes then fail.
fn a_lease_has_one_holder_and_fences_the_previous_one(a: &mut dyn Store, b: &mut dyn Store) {
    let r = "source:t/corp";
    assert!(a.claim_lease(r, "a", 60_000).expect("claim"), "a free lease is taken");
    assert!(!b.claim_lease(r, "b", 60_000).expect("claim"), "a held lease is not");
    assert!(a.claim_lease(r, "a", 300).expect("renew"), "the holder renews (here, shortly)");
    std::thread::sleep(std::time::Duration::from_millis(450));
    assert!(a.leases().expect("leases")[0].expired, "run out");
    assert!(b.claim_lease(r, "b", 60_000).expect("claim"), "a run-out lease is taken over");
    assert_eq!(a.leases().expect("leases")[0].owner, "b");

    a.set_fence(Some(Fence { node: "a".into(), resources: vec![r.into()] }));
    match a.set_source_state("t", "corp", "cookie", "stale") {
        Err(StoreError::LeaseLost { node, resource }) => assert_eq!((node.as_str(), resource.as_str()), ("a", r)),
        other => panic!("a cookie write after the takeover: {other:?}"),
    }
    match apply(a, &plan("t", vec![create(user("u-late", "late"))], vec![])) {
        Err(StoreError::LeaseLost { .. }) => {}
        other => panic!("an apply after the takeover: {other:?}"),
    }
    assert!(a.users("t").expect("users").is_empty(), "the fenced apply wrote nothing");
    b.set_fence(Some(Fence { node: "b".into(), resources: vec![r.into()] }));
    b.set_source_state("t", "corp", "cookie", "fresh").expect("the holder writes");
    apply(b, &plan("t", vec![create(user("u-1", "one"))], vec![])).expect("the holder applies");
    assert_eq!(a.source_state("t", "corp", "cookie").expect("state").as_deref(), Some("fresh"));

    b.release_lease(r, "a").expect("release");
    assert_eq!(a.leases().expect("leases").len(), 1, "only the holder releases");
    b.release_lease(r, "b").expect("release");
    assert!(a.leases().expect("leases").is_empty());

    a.node_heartbeat("a", "pid 1").expect("beat");
    b.node_heartbeat("b", "pid 2").expect("beat");
    let nodes = a.nodes(60_000).expect("nodes");
    assert_eq!(nodes.iter().filter(|n| n.alive).map(|n| n.node.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert!(a.nodes(-1_000).expect("nodes").iter().all(|n| !n.alive), "outside the window: not alive");
    a.remove_node("a").expect("remove");
    assert_eq!(b.nodes(60_000).expect("nodes").len(), 1);
}

#[test]
fn postgres_leases_have_one_holder_and_fence_the_previous_one() {
    let db = TestDb::new();
    a_lease_has_one_holder_and_fences_the_previous_one(&mut db.open(), &mut db.open());
}

#[test]
fn sqlite_leases_have_one_holder_and_fence_the_previous_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut a, mut b) = (SqliteStore::open(dir.path()).expect("open"), SqliteStore::open(dir.path()).expect("open"));
    a_lease_has_one_holder_and_fences_the_previous_one(&mut a, &mut b);
}
