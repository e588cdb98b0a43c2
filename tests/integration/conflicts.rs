//! Two users claiming the same userName, within a source and across sources,
//! end in the configured decision.

use crate::support::{Env, counts};

/// An LDIF user; `anchor` decides the tie between claimants not stored yet.
fn user(uid_rdn: &str, uid: &str, anchor: &str) -> String {
    format!(
        "dn: uid={uid_rdn},ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid_rdn}\nsn: Test\nmail: {uid_rdn}@example.com\nentryUUID: {anchor}\n\n"
    )
}

fn env_with(ldif_a: &str, ldif_b: Option<&str>, policy: &str) -> Env {
    let env = Env::new("");
    std::fs::write(env.path().join("a.ldif"), ldif_a).expect("write");
    let mut cfg = format!(
        "[store]\npath = \"data\"\n[[tenant]]\nid = \"t\"\n[tenant.conflicts]\non_duplicate = \"{policy}\"\nunique = [\"userName\", \"email\"]\n[tenant.safety]\nmax_delete_percent = 100\n[[tenant.source]]\nname = \"a\"\nkind = \"ldif\"\npath = \"a.ldif\"\n"
    );
    if let Some(b) = ldif_b {
        std::fs::write(env.path().join("b.ldif"), b).expect("write");
        cfg.push_str("[[tenant.source]]\nname = \"b\"\nkind = \"ldif\"\npath = \"b.ldif\"\n");
    }
    cfg.push_str("[tenant.mapping]\nuserName = \"lower(uid)\"\ndisplayName = \"cn\"\nemail = \"lower(mail)\"\n");
    env.write_config(&cfg);
    env
}

fn names(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = env.users("t").iter().filter_map(|u| u["userName"].as_str().map(str::to_string)).collect();
    v.sort();
    v
}

const A1: &str = "00000000-0000-4000-8000-000000000001";
const A2: &str = "00000000-0000-4000-8000-000000000002";
const A3: &str = "00000000-0000-4000-8000-000000000003";

#[test]
fn quarantine_sends_every_claimant_to_review() {
    let ldif = [user("jdoe", "jdoe", A1), user("jdoe2", "JDoe", A2), user("other", "other", A3)].concat();
    let env = env_with(&ldif, None, "quarantine");
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(report["conflicts"]["conflicts"], 1);
    assert_eq!(names(&env), vec!["other"]);
    let q = env.quarantine("t");
    assert_eq!(q.len(), 2, "{q:?}");
    assert!(
        q.iter().all(|i| i["stage"] == "conflict"
            && i["reason"].as_str().unwrap_or("").contains("userName 'jdoe' is claimed by"))
    );
}

#[test]
fn keep_oldest_keeps_the_stored_claimant_even_when_a_newcomer_sorts_first() {
    // A2 is synced first; later A1 (which would win a tie) claims the same name.
    let env = env_with(&user("jdoe2", "jdoe", A2), None, "keep-oldest");
    env.sync(&[]).0.ok();
    std::fs::write(env.path().join("a.ldif"), [user("jdoe", "jdoe", A1), user("jdoe2", "jdoe", A2)].concat())
        .expect("write");
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(counts(&report), (0, 0, 0), "the stored holder is unchanged, the newcomer is not created");
    let users = env.users("t");
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["externalId"], A2);
    let q = env.quarantine("t");
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["anchor"], A1);
    assert!(q[0]["reason"].as_str().unwrap_or("").contains("already belongs to 'uid=jdoe2"), "{q:?}");
}

#[test]
fn suffix_renames_deterministically_across_sources() {
    let env = env_with(&user("jdoe", "jdoe", A1), Some(&user("john", "jdoe", A2)), "suffix");
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(report["conflicts"]["renamed"], 1);
    let first = names(&env);
    assert_eq!(first.len(), 2);
    assert!(first.contains(&"jdoe".to_string()));
    let renamed = first.iter().find(|n| n.as_str() != "jdoe").cloned().unwrap_or_default();
    assert!(renamed.starts_with("jdoe-") && renamed.len() == "jdoe-".len() + 4, "{renamed}");
    // Same input, same names: no churn on the next run.
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(counts(&report), (0, 0, 0));
    assert_eq!(names(&env), first);
}

#[test]
fn a_duplicate_email_is_a_conflict_too() {
    let mut b = user("bob", "bob", A2);
    b = b.replace("mail: bob@example.com", "mail: ALICE@example.com");
    let env = env_with(&[user("alice", "alice", A1), b].concat(), None, "keep-oldest");
    env.sync(&[]).0.ok();
    assert_eq!(names(&env), vec!["alice"]);
    let q = env.quarantine("t");
    assert!(q[0]["reason"].as_str().unwrap_or("").contains("email 'alice@example.com' already belongs to"), "{q:?}");
}

#[test]
fn an_admin_settles_a_conflict_with_quarantine_resolve() {
    let ldif = [user("jdoe", "jdoe", A1), user("john", "jdoe", A2)].concat();
    let env = env_with(&ldif, None, "quarantine");
    env.sync(&[]).0.ok();
    assert!(names(&env).is_empty());
    assert_eq!(env.quarantine("t").len(), 2);

    env.run(&["quarantine", "resolve", "--tenant", "t", A2, "--keep"]).ok();
    env.sync(&[]).0.ok();
    let users = env.users("t");
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["externalId"], A2, "the admin's choice holds");
    let q = env.quarantine("t");
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["anchor"], A1);
    assert!(q[0]["reason"].as_str().unwrap_or("").contains("by an admin"), "{q:?}");

    // --keep is for conflicts only; --dismiss clears a record.
    env.run(&["quarantine", "resolve", "--tenant", "t", A1, "--dismiss"]).ok();
    assert!(env.quarantine("t").is_empty());
    env.run(&["quarantine", "resolve", "--tenant", "t", "no-such-anchor", "--dismiss"]).code(1);
}
