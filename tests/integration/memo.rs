//! The mapping memo: a full read maps again only the entries whose content or
//! pipeline changed, and never trusts a stored object that differs from what
//! mapping made of its entry.

use serde_json::Value;

use crate::support::{Env, counts, user};

fn person(uid: &str, anchor_no: u32, mail: &str) -> String {
    format!(
        "dn: uid={uid},ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid} Example\nsn: Example\nmail: {mail}\nentryUUID: 00000000-0000-4000-8000-{anchor_no:012}\n\n"
    )
}

fn group(members: &[&str]) -> String {
    let mut g = "dn: cn=staff,ou=groups,dc=example,dc=com\nobjectClass: groupOfNames\ncn: staff\nentryUUID: 00000000-0000-4000-9000-000000000001\n".to_string();
    for m in members {
        g.push_str(&format!("member: uid={m},ou=people,dc=example,dc=com\n"));
    }
    g.push('\n');
    g
}

fn directory(ann_mail: &str, with_cid: bool) -> String {
    let mut d = [person("ann", 1, ann_mail), person("bob", 2, "bob@example.com")].concat();
    if with_cid {
        d.push_str(&person("cid", 3, "cid@example.com"));
    }
    d.push_str(&group(if with_cid { &["ann", "bob", "cid"] } else { &["ann", "bob"] }));
    d
}

fn config(display_name: &str, extra: &str) -> String {
    format!(
        "[store]\npath = \"data\"\n[[tenant]]\nid = \"t\"\n{extra}[tenant.safety]\nmax_delete_percent = 100\n[[tenant.source]]\nname = \"dir\"\nkind = \"ldif\"\npath = \"dir.ldif\"\n[tenant.mapping]\nuserName = \"lower(uid)\"\ndisplayName = \"{display_name}\"\nemail = \"lower(mail)\"\n"
    )
}

fn env_with(ldif: &str, cfg: &str) -> Env {
    let env = Env::new(cfg);
    std::fs::write(env.path().join("dir.ldif"), ldif).expect("writing the LDIF");
    env
}

fn not_remapped(report: &Value) -> u64 {
    report["sources"][0]["not_remapped"].as_u64().unwrap_or_else(|| panic!("no not_remapped in {report}"))
}

fn memo_rows(env: &Env) -> i64 {
    env.store_count("SELECT count(*) FROM map_memo")
}

#[test]
fn only_entries_whose_content_or_pipeline_changed_are_mapped_again() {
    let env = env_with(&directory("ann@example.com", true), &config("cn", ""));
    let (run, first) = env.sync(&[]);
    run.ok();
    assert_eq!(counts(&first), (4, 0, 0), "{first}");
    assert_eq!(not_remapped(&first), 0, "nothing was mapped before");
    assert_eq!(memo_rows(&env), 4, "one memo row per object");

    let (run, again) = env.sync(&[]);
    let run = run.ok();
    assert_eq!(counts(&again), (0, 0, 0), "{again}");
    assert_eq!(not_remapped(&again), 4, "an unchanged directory is not mapped again: {again}");
    assert_eq!(again["sources"][0]["mapped"], 4, "yet every object is still in the desired state");
    assert!(run.stderr.contains("quarantined 0, unchanged and not mapped again 4 ("), "{}", run.stderr);

    // One entry changes: it alone is mapped, and its change lands.
    std::fs::write(env.path().join("dir.ldif"), directory("Ann.New@Example.com", true)).expect("write");
    let (run, changed) = env.sync(&[]);
    run.ok();
    assert_eq!(counts(&changed), (0, 1, 0), "{changed}");
    assert_eq!(not_remapped(&changed), 3, "{changed}");
    let users = env.users("t");
    assert_eq!(user(&users, "ann").expect("ann")["emails"][0]["value"], "ann.new@example.com");

    // The stored object no longer is what mapping made of its entry (edited
    // behind Roster's back): the entry is mapped again and the store corrected.
    env.store_sql("UPDATE users SET attrs = replace(attrs, 'bob@example.com', 'mallory@example.com')");
    let users = env.users("t");
    assert_eq!(user(&users, "bob").expect("bob")["emails"][0]["value"], "mallory@example.com", "the edit took");
    let (run, repaired) = env.sync(&[]);
    run.ok();
    assert_eq!(counts(&repaired), (0, 1, 0), "{repaired}");
    assert_eq!(not_remapped(&repaired), 3, "{repaired}");
    let users = env.users("t");
    assert_eq!(user(&users, "bob").expect("bob")["emails"][0]["value"], "bob@example.com");

    // The mapping changed: everything is mapped again.
    env.write_config(&config("uid", ""));
    let (run, remapped) = env.sync(&[]);
    run.ok();
    assert_eq!(not_remapped(&remapped), 0, "{remapped}");
    assert_eq!(counts(&remapped), (0, 3, 0), "every user's displayName changed: {remapped}");
    let (run, settled) = env.sync(&[]);
    run.ok();
    assert_eq!((counts(&settled), not_remapped(&settled)), ((0, 0, 0), 4), "{settled}");

    // A deleted entry's memo row goes with it; a membership change is still seen.
    std::fs::write(env.path().join("dir.ldif"), directory("Ann.New@Example.com", false)).expect("write");
    let (run, deleted) = env.sync(&[]);
    run.ok();
    assert_eq!(counts(&deleted), (0, 0, 1), "{deleted}");
    assert_eq!(deleted["counts"]["members_removed"], 1, "{deleted}");
    assert_eq!(not_remapped(&deleted), 2, "ann and bob; the group's entry changed: {deleted}");
    assert_eq!(memo_rows(&env), 3);
}

#[test]
fn an_object_conflict_resolution_renamed_is_mapped_again_every_run() {
    // ann and anna both map to userName "ann"; the suffix policy renames one.
    let ldif = [person("ann", 1, "ann@example.com"), person("anna", 2, "anna@example.com")]
        .concat()
        .replace("uid: anna\n", "uid: ann\n");
    let cfg = config("cn", "[tenant.conflicts]\non_duplicate = \"suffix\"\nunique = [\"userName\"]\n");
    let env = env_with(&ldif, &cfg);
    let (run, first) = env.sync(&[]);
    run.ok();
    assert_eq!(first["conflicts"]["renamed"], 1, "{first}");
    let (run, again) = env.sync(&[]);
    run.ok();
    assert_eq!(counts(&again), (0, 0, 0), "{again}");
    // The renamed user's stored userName is not what mapping made: it goes
    // through mapping and conflict resolution again, and is renamed the same way.
    assert_eq!(not_remapped(&again), 1, "{again}");
    assert_eq!(again["conflicts"]["renamed"], 1, "{again}");
}

#[test]
fn plugins_granted_the_clock_and_dry_runs_leave_no_memo() {
    let env = env_with(&directory("ann@example.com", true), &config("cn", ""));
    let dry = env.run(&["sync", "--dry-run"]).ok();
    assert!(dry.stderr.contains("dry run, nothing written: read 4, created 4"), "{}", dry.stderr);
    assert_eq!(memo_rows(&env), 0, "a dry run writes nothing, the memo included");

    env.write_config(&config("cn", "[tenant.limits]\nplugin_grant_clock = true\n"));
    env.sync(&[]).0.ok();
    let (run, again) = env.sync(&[]);
    run.ok();
    assert_eq!(not_remapped(&again), 0, "a plugin that may read the time is always called: {again}");
    assert_eq!(memo_rows(&env), 0);
}
