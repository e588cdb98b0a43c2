//! `kind = "active-directory"` against a real domain controller: Samba's AD DC
//! (see `support/samba.rs`), with 2,100 generated users, a group of 1,600
//! members, nested groups, a disabled, an expired and a computer account.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::samba::{GENERATED_USERS, LARGE_GROUP, LARGE_GROUP_MEMBERS, Samba};
use crate::support::{Env, user};

const SCENARIO: &str = "OU=scenario,DC=example,DC=test";

fn env_for(dc: &Samba, source_extra: &str, tenant_extra: &str) -> Env {
    let env = Env::new("");
    std::fs::write(env.path().join("ad-password"), &dc.admin_pw).expect("write password file");
    env.write_config(&format!(
        r#"[store]
path = "data"
[[tenant]]
id = "corp"
[[tenant.source]]
name = "ad"
kind = "active-directory"
url = {url:?}
ca_file = {ca:?}
bind_dn = {bind:?}
bind_password = {{ file = "ad-password" }}
user_base = {base:?}
{source_extra}
[tenant.safety]
max_delete_percent = 100
{tenant_extra}
"#,
        url = dc.ldaps_url,
        ca = dc.ca_file.display().to_string(),
        bind = dc.admin_dn,
        base = dc.base,
    ));
    env
}

fn read(report: &Value) -> &Value {
    &report["sources"][0]["read"]
}

fn names(users: &[Value]) -> BTreeSet<String> {
    users.iter().filter_map(|u| u["userName"].as_str().map(str::to_string)).collect()
}

#[test]
fn a_domain_is_read_whole_then_incrementally_with_identity_kept() {
    let dc = Samba::shared();
    let env = env_for(
        &dc,
        "",
        "[tenant.mapping]\nuserName = \"lower(sAMAccountName)\"\ndisplayName = \"coalesce(displayName, cn)\"\ntitle = \"title\"\nactive = \"active\"\n",
    );

    // Full read.
    let (run, report) = env.sync(&[]);
    run.ok();
    let r = read(&report);
    assert_eq!(r["mode"], "full");
    let page_size = r["page_size"].as_u64().unwrap_or(0);
    assert!((1..=1000).contains(&page_size), "paged within AD's MaxPageSize: {r}");
    assert!(r["requests"].as_u64().unwrap_or(0) >= 4, "2,100 users need several pages: {r}");
    assert!(r["range_requests"].as_u64().unwrap_or(0) >= 1, "the 1,600-member group needs range retrieval: {r}");
    let users = env.users("corp");
    let all = names(&users);
    assert_eq!(users.len(), GENERATED_USERS + 5, "2,100 generated + 5 scenario users, no computers or system accounts");
    assert!(
        !all.contains("ws01$") && !all.contains("administrator") && !all.contains("krbtgt"),
        "{:?}",
        all.iter().take(5).collect::<Vec<_>>()
    );

    let alice = user(&users, "alice").expect("alice");
    assert_eq!(alice["externalId"], dc.guid(&format!("CN=Alice Active,{SCENARIO}")), "anchored on objectGUID");
    assert_eq!(alice["active"], true);
    assert_eq!(user(&users, "dora").expect("dora")["active"], false, "ACCOUNTDISABLE");
    assert_eq!(user(&users, "eve").expect("eve")["active"], false, "accountExpires in the past");
    let alice_groups: Vec<(String, String)> = alice["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| (g["display"].as_str().unwrap_or("").to_string(), g["type"].as_str().unwrap_or("").to_string()))
        .collect();
    assert!(alice_groups.contains(&("team-inner".into(), "direct".into())), "{alice_groups:?}");
    assert!(alice_groups.contains(&("team-outer".into(), "indirect".into())), "nested: {alice_groups:?}");
    let groups = env.groups("corp");
    let large = groups.iter().find(|g| g["displayName"] == LARGE_GROUP).expect("the large group");
    assert_eq!(large["members"].as_array().map(Vec::len), Some(LARGE_GROUP_MEMBERS), "read whole through ranges");

    // Nothing changed: an incremental read finds nothing.
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(report["status"], "no-changes");
    let r = read(&report);
    assert_eq!(
        (r["mode"].as_str(), r["users"].as_u64(), r["groups"].as_u64()),
        (Some("incremental"), Some(0), Some(0)),
        "{r}"
    );

    // A few changes: disable + retitle alice, rename + move rick (and change his
    // sAMAccountName), delete dan, add dora to team-inner.
    let rick_id = user(&users, "rick").expect("rick")["id"].clone();
    dc.ldapmodify(&format!(
        "dn: CN=Alice Active,{SCENARIO}\nchangetype: modify\nreplace: title\ntitle: CTO\n-\nreplace: userAccountControl\nuserAccountControl: 546\n"
    ));
    dc.modrdn(&format!("CN=Rick Rename,{SCENARIO}"), "CN=Rick Renamed", Some("OU=moved,DC=example,DC=test"));
    dc.ldapmodify("dn: CN=Rick Renamed,OU=moved,DC=example,DC=test\nchangetype: modify\nreplace: sAMAccountName\nsAMAccountName: richard\n");
    dc.ldapdelete(&format!("CN=Dan Delete,{SCENARIO}"));
    dc.ldapmodify(&format!(
        "dn: CN=team-inner,{SCENARIO}\nchangetype: modify\nadd: member\nmember: CN=Dora Disabled,{SCENARIO}\n"
    ));

    let (run, report) = env.sync(&[]);
    run.ok();
    let r = read(&report);
    assert_eq!(r["mode"], "incremental", "{r}");
    assert_eq!(r["users"], 2, "only alice and rick were read: {r}");
    assert_eq!(r["groups"], 1, "only team-inner was read: {r}");
    assert_eq!(r["deleted"], 1, "dan's tombstone: {r}");
    let users = env.users("corp");
    assert_eq!(users.len(), GENERATED_USERS + 4, "dan is gone, nobody else");
    assert!(user(&users, "dan").is_none());
    let alice = user(&users, "alice").expect("alice");
    assert_eq!((alice["title"].as_str(), alice["active"].as_bool()), (Some("CTO"), Some(false)));
    let richard = user(&users, "richard").expect("rick under his new name");
    assert_eq!(richard["id"], rick_id, "rename, move and new sAMAccountName keep identity");
    assert!(user(&users, "rick").is_none());
    let dora = user(&users, "dora").expect("dora");
    assert!(dora["groups"].as_array().into_iter().flatten().any(|g| g["display"] == "team-inner"), "{dora}");
    let large = env.groups("corp").into_iter().find(|g| g["displayName"] == LARGE_GROUP).expect("large group");
    assert_eq!(
        large["members"].as_array().map(Vec::len),
        Some(LARGE_GROUP_MEMBERS),
        "untouched groups keep their members"
    );

    // A forced full read agrees with the incremental result.
    let (run, report) = env.sync(&["--full"]);
    run.ok();
    assert_eq!(read(&report)["mode"], "full");
    assert_eq!(report["status"], "no-changes", "{}", report["counts"]);
}

#[test]
fn scope_by_ou_and_by_nested_group() {
    let dc = Samba::shared();
    let env = env_for(&dc, &format!("scope_ous = [{SCENARIO:?}]"), "");
    env.sync(&[]).0.ok();
    let in_ou = names(&env.users("corp"));
    assert!(in_ou.contains("alice") && in_ou.contains("eve"), "{in_ou:?}");
    assert!(in_ou.len() <= 5, "only the scenario OU: {in_ou:?}");

    let env = env_for(&dc, "scope_groups = [\"team-outer\"]", "");
    env.sync(&[]).0.ok();
    let in_group = names(&env.users("corp"));
    assert!(in_group.contains("alice"), "alice is in team-outer through team-inner: {in_group:?}");
    // dora joins in another test, eve by her primary group in another.
    assert!(in_group.iter().all(|n| ["alice", "dora", "eve"].contains(&n.as_str())), "{in_group:?}");
}

#[test]
fn a_primary_group_counts_as_membership() {
    let dc = Samba::shared();
    let group = format!("CN=team-outer,{SCENARIO}");
    let eve = format!("CN=Eve Expired,{SCENARIO}");
    // AD requires membership before a group can become primary, then drops
    // the user from `member`: only primaryGroupID says so any more.
    dc.ldapmodify(&format!("dn: {group}\nchangetype: modify\nadd: member\nmember: {eve}\n"));
    dc.ldapmodify(&format!(
        "dn: {eve}\nchangetype: modify\nreplace: primaryGroupID\nprimaryGroupID: {}\n",
        dc.rid(&group)
    ));
    let env = env_for(&dc, "", "");
    env.sync(&[]).0.ok();
    let users = env.users("corp");
    let eve = user(&users, "eve").expect("eve");
    let groups: Vec<&str> =
        eve["groups"].as_array().into_iter().flatten().filter_map(|g| g["display"].as_str()).collect();
    assert!(groups.contains(&"team-outer"), "eve's primary group: {groups:?}");
}

#[test]
fn wrong_password_and_wrong_ca_say_what_is_wrong() {
    let dc = Samba::shared();
    let env = env_for(&dc, "", "");
    let ok = env.run(&["source", "test", "--tenant", "corp", "--source", "ad"]).ok();
    assert!(ok.stdout.contains("invocationId") && ok.stdout.contains("incremental reads: uSNChanged"), "{}", ok.stdout);

    std::fs::write(env.path().join("ad-password"), "not-the-password").expect("write");
    let bad = env.run(&["source", "test", "--tenant", "corp", "--source", "ad"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("the password is wrong") && bad.stderr.contains("data code 52e"), "{}", bad.stderr);
    assert!(!bad.stderr.contains("not-the-password"), "the password is never printed");

    std::fs::write(env.path().join("ad-password"), &dc.admin_pw).expect("write");
    let other = env.path().join("other-ca.pem");
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=some other CA"])
        .arg("-keyout")
        .arg(env.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let cfg = std::fs::read_to_string(env.config_path()).expect("config");
    env.write_config(&cfg.replace(
        &format!("ca_file = {:?}", dc.ca_file.display().to_string()),
        &format!("ca_file = {:?}", other.display().to_string()),
    ));
    let (run, _) = env.sync(&[]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("not signed by a CA in ca_file") && run.stderr.contains("issuer 'CN=samba test CA"),
        "{}",
        run.stderr
    );
}
