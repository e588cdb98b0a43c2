//! `kind = "ldap"` against a real slapd: TLS modes, paging, identity across
//! renames and moves, deletes, the guard-rail and partial reads.

use std::path::Path;

use crate::support::slapd::{Slapd, gen_ldif};
use crate::support::{Env, counts};

/// Users in the generated test directory: more than one 1,000-entry page.
const USERS: usize = 1200;
const GROUPS: usize = 60;

fn directory() -> Slapd {
    Slapd::start(&[&gen_ldif(USERS, GROUPS, 7)])
}

/// A config for one tenant `t` with one LDAP source `corp`.
fn config(s: &Slapd, env_dir: &Path, url: &str, starttls: bool, ca: &Path, extra: &str) -> String {
    std::fs::write(env_dir.join("ldap-password"), format!("{}\n", s.svc_pw)).expect("writing the password file");
    format!(
        r#"
[store]
path = "data"

[[tenant]]
id = "t"

[[tenant.source]]
name = "corp"
kind = "ldap"
url = "{url}"
starttls = {starttls}
ca_file = {ca:?}
bind_dn = "{svc}"
bind_password = {{ file = "ldap-password" }}
user_base = "ou=people,{base}"
group_base = "ou=groups,{base}"
{extra}

[tenant.mapping]
userName = "lower(uid)"
"name.givenName" = "givenName"
"name.familyName" = "sn"
displayName = "coalesce(displayName, join(' ', givenName, sn))"
email = "lower(mail)"
"#,
        svc = s.svc_dn,
        base = s.base,
        ca = ca.display().to_string(),
    )
}

fn env_for(s: &Slapd, url: &str, starttls: bool, extra: &str) -> Env {
    let env = Env::new("");
    env.write_config(&config(s, env.path(), url, starttls, &s.ca_file, extra));
    env
}

#[test]
fn plain_starttls_and_ldaps_all_sync_every_user_through_paging() {
    let s = directory();
    let cases = [
        ("ldap (plain)", s.ldap_url.clone(), false),
        ("StartTLS", s.ldap_url.clone(), true),
        ("LDAPS", s.ldaps_url.clone(), false),
    ];
    for (label, url, starttls) in cases {
        let env = env_for(&s, &url, starttls, "");
        let (run, report) = env.sync(&[]);
        let run = run.ok();
        let src = &report["sources"][0];
        assert_eq!(src["read"]["users"], USERS as u64, "{label}: {}", run.stderr);
        assert!(src["read"]["groups"].as_u64().unwrap_or(0) >= GROUPS as u64, "{label}: {src}");
        // 1,200 users at 1,000 per page is two pages, plus at least one for groups.
        assert!(src["read"]["requests"].as_u64().unwrap_or(0) >= 3, "{label}: paged search expected: {src}");
        assert_eq!(env.users("t").len(), USERS, "{label}");
        assert!(src["quarantined"] == 0, "{label}: {}", run.stderr);
    }
}

#[test]
fn a_wrong_ca_is_refused_with_a_clear_error() {
    let s = directory();
    for (url, starttls) in [(s.ldaps_url.clone(), false), (s.ldap_url.clone(), true)] {
        let env = Env::new("");
        env.write_config(&config(&s, env.path(), &url, starttls, &s.other_ca_file, ""));
        let run = env.run(&["sync"]).code(1);
        assert!(run.stderr.contains("source 'corp'"), "{}", run.stderr);
        assert!(run.stderr.to_lowercase().contains("certificate"), "names the certificate problem: {}", run.stderr);
        assert!(!run.stderr.contains(&s.svc_pw), "the password never appears");
    }
}

#[test]
fn a_wrong_password_is_refused_and_not_logged() {
    let s = directory();
    let env = env_for(&s, &s.ldaps_url, false, "");
    std::fs::write(env.path().join("ldap-password"), "not-the-password").expect("write");
    let run = env.run(&["-vv", "sync"]).code(1);
    assert!(run.stderr.contains("bind") && run.stderr.contains("invalid credentials"), "{}", run.stderr);
    assert!(!run.stderr.contains("not-the-password"));
}

#[test]
fn rename_and_move_keep_identity_and_deletes_propagate() {
    let s = directory();
    let env = env_for(&s, &s.ldaps_url, false, "");
    env.sync(&[]).0.ok();
    let before = env.users("t");
    let dn_of = |name: &str| {
        let out = s.search(&format!("ou=people,{}", s.base), &format!("(uid={name})"), &["dn"]);
        out.lines().find_map(|l| l.strip_prefix("dn: ")).map(str::to_string)
    };
    let id_of =
        |users: &[serde_json::Value], name: &str| users.iter().find(|u| u["userName"] == name).map(|u| u["id"].clone());
    // Plain `uid=…,ou=people` users, so a rename changes the uid and a move changes the OU.
    let direct = format!(",ou=people,{}", s.base);
    let plain: Vec<(String, String)> = before
        .iter()
        .filter_map(|u| u["userName"].as_str().map(str::to_string))
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric()))
        .filter_map(|n| dn_of(&n).map(|dn| (n, dn)))
        .filter(|(n, dn)| dn.eq_ignore_ascii_case(&format!("uid={n}{direct}")))
        .take(3)
        .collect();
    assert_eq!(plain.len(), 3, "the generated directory has plain users");
    let [(a, a_dn), (b, b_dn), (c, c_dn)] = [plain[0].clone(), plain[1].clone(), plain[2].clone()];

    // Rename a (new uid and RDN), move b to another OU, delete c.
    s.modrdn(&a_dn, &format!("uid={a}x"), None);
    s.modrdn(&b_dn, &format!("uid={b}"), Some(&format!("ou=sales,ou=people,{}", s.base)));
    s.ldapdelete(&c_dn);

    let (run, report) = env.sync(&[]);
    let run = run.ok();
    assert_eq!(counts(&report), (0, 2, 1), "rename + move are updates, delete is a delete: {}", run.stderr);
    let after = env.users("t");
    assert_eq!(after.len(), USERS - 1);
    assert_eq!(id_of(&after, &format!("{a}x")), id_of(&before, &a), "rename keeps the id");
    assert!(id_of(&before, &a).is_some());
    assert_eq!(id_of(&after, &b), id_of(&before, &b), "move keeps the id");
    assert!(id_of(&after, &c).is_none(), "deleted user is gone");
    let plan = serde_json::to_string(&report["plan"]).expect("plan json");
    assert!(plan.contains("ou=sales"), "the move shows as a dn change: {plan}");
    // The second run read only what changed since the first (RFC 4533 refreshOnly).
    let read = &report["sources"][0]["read"];
    assert_eq!(read["mode"], "incremental", "{report}");
    assert_eq!(read["users"], 2, "the renamed and the moved user: {report}");
}

#[test]
fn sync_reads_only_what_changed_since_the_last_applied_run() {
    let s = directory();
    let env = env_for(&s, &s.ldap_url, false, "");
    let (_, first) = env.sync(&[]);
    assert_eq!(first["sources"][0]["read"]["mode"], "full");
    let groups_before = env.groups("t");
    let group = groups_before.iter().find(|g| g["members"].as_array().is_some_and(|m| m.len() >= 2)).expect("a group");
    let group_name = group["displayName"].as_str().expect("name").to_string();
    let anchor = group["externalId"].as_str().expect("externalId is the anchor").to_string();
    let group_dn = s
        .search(&format!("ou=groups,{}", s.base), &format!("(entryUUID={anchor})"), &["dn"])
        .lines()
        .find_map(|l| l.strip_prefix("dn: ").map(str::to_string))
        .expect("group dn");
    let members_before = group["members"].as_array().map(Vec::len).unwrap_or(0);

    // A new user who joins the group; nothing else changes.
    s.ldapadd(&format!(
        "dn: uid=newcomer,ou=people,{base}\nobjectClass: inetOrgPerson\nuid: newcomer\ncn: New Comer\nsn: Comer\nmail: newcomer@example.com\n",
        base = s.base
    ));
    s.ldapmodify(&format!(
        "dn: {group_dn}\nchangetype: modify\nadd: member\nmember: uid=newcomer,ou=people,{}\n",
        s.base
    ));
    let (run, report) = env.sync(&[]);
    run.ok();
    let read = &report["sources"][0]["read"];
    assert_eq!(read["mode"], "incremental", "{report}");
    assert_eq!((read["users"].as_u64(), read["groups"].as_u64()), (Some(1), Some(1)), "{report}");
    assert_eq!(report["counts"]["creates"], 1, "{report}");
    assert!(env.users("t").iter().any(|u| u["userName"] == "newcomer"));
    let after = env.groups("t");
    let g = after.iter().find(|g| g["displayName"] == group_name.as_str()).expect("group");
    assert_eq!(g["members"].as_array().map(Vec::len), Some(members_before + 1), "{g}");

    // Nothing changed: an incremental read of nothing.
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(report["status"], "no-changes", "{report}");
    assert_eq!(report["sources"][0]["read"]["users"], 0, "{report}");

    // --full reads everything and finds the same state.
    let (run, report) = env.sync(&["--full"]);
    run.ok();
    assert_eq!(report["sources"][0]["read"]["mode"], "full");
    assert_eq!(report["sources"][0]["read"]["users"], (USERS + 1) as u64);
    assert_eq!(report["status"], "no-changes", "the incremental runs missed nothing: {report}");
    // Every entry was mapped before and is unchanged: none is mapped again.
    let read = &report["sources"][0]["read"];
    let entries = read["users"].as_u64().unwrap_or(0) + read["groups"].as_u64().unwrap_or(0);
    assert_eq!(report["sources"][0]["not_remapped"].as_u64(), Some(entries), "{report}");

    // Another filter: the old cookies describe other searches, so the read is full.
    let cfg = std::fs::read_to_string(env.config_path()).expect("config");
    env.write_config(
        &cfg.replace("[[tenant.source]]", "[[tenant.source]]\nuser_filter = \"(&(objectClass=inetOrgPerson)(uid=*))\""),
    );
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(report["sources"][0]["read"]["mode"], "full", "{report}");
}

#[test]
fn incremental_runs_load_only_the_changes_neighbourhood_and_agree_with_a_full_read() {
    let s = directory();
    let roles = "[[tenant.roles.rule]]\ngroup = \"nest-chain-4\"\nrole = \"top-chain\"\n\
                 [[tenant.roles.rule]]\ngroup = \"big-region\"\nrole = \"regional\"\n";
    let env = env_for(&s, &s.ldap_url, false, roles);
    env.sync(&[]).0.ok();
    let stored = |report: &serde_json::Value| report["sources"][0]["stored_loaded"].as_u64().expect("stored_loaded");
    let dn_of = |base: &str, filter: &str| {
        s.search(&format!("{base},{}", s.base), filter, &["dn"])
            .lines()
            .find_map(|l| l.strip_prefix("dn: ").map(str::to_string))
            .unwrap_or_else(|| panic!("no entry for {filter}"))
    };
    let roles_of = |name: &str| -> Vec<String> {
        let users = env.users("t");
        let u = users.iter().find(|u| u["userName"] == name).unwrap_or_else(|| panic!("user {name}"));
        u["roles"].as_array().into_iter().flatten().filter_map(|r| r["value"].as_str().map(str::to_string)).collect()
    };
    // The whole state a full read computes is what the incremental runs left.
    let agrees_with_full = |why: &str| {
        let (run, report) = env.sync(&["--full"]);
        run.ok();
        assert_eq!(report["status"], "no-changes", "after {why}, a full read finds differences: {report}");
    };
    let members_of = |group: &str| -> Vec<String> {
        let out = s.search(&format!("ou=groups,{}", s.base), &format!("(cn={group})"), &["member"]);
        out.lines().filter_map(|l| l.strip_prefix("member: ").map(str::to_string)).collect()
    };
    let user_in = |group: &str| -> String {
        let dn = members_of(group).into_iter().find(|m| m.starts_with("uid=")).expect("a user member");
        s.search(&dn, "(objectClass=*)", &["uid"])
            .lines()
            .find_map(|l| l.strip_prefix("uid: ").map(str::to_lowercase))
            .expect("uid")
    };
    let total = (USERS + GROUPS) as u64;

    // 1. Nesting: nest-chain-1 no longer contains nest-chain-0, so chain-0's
    // own users lose the role they had through chain-1 … chain-4.
    let bottom_user = user_in("nest-chain-0");
    assert!(roles_of(&bottom_user).contains(&"top-chain".to_string()));
    let chain0 = dn_of("ou=groups", "(cn=nest-chain-0)");
    s.ldapmodify(&format!(
        "dn: {}\nchangetype: modify\ndelete: member\nmember: {chain0}\n",
        dn_of("ou=groups", "(cn=nest-chain-1)")
    ));
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(report["sources"][0]["read"]["mode"], "incremental", "{report}");
    assert!(stored(&report) < total / 2, "only the neighbourhood is loaded: {report}");
    assert!(!roles_of(&bottom_user).contains(&"top-chain".to_string()), "the role follows the nesting");
    agrees_with_full("a nested group left its parent");

    // 2. A group renamed: its members' group-named role goes.
    let regional = user_in("big-region");
    assert!(roles_of(&regional).contains(&"regional".to_string()));
    s.modrdn(&dn_of("ou=groups", "(cn=big-region)"), "cn=big-area", None);
    let (run, report) = env.sync(&[]);
    run.ok();
    assert!(stored(&report) < total, "{report}");
    assert!(!roles_of(&regional).contains(&"regional".to_string()));
    agrees_with_full("a group was renamed");

    // 3. A new group nested in nest-chain-3 whose only member value names
    // nobody: no stored user leads to it, or through it to nest-chain-4.
    let team = format!("cn=team-y,ou=groups,{}", s.base);
    s.ldapadd(&format!("dn: {team}\nobjectClass: groupOfNames\ncn: team-y\nmember: cn=nobody,{}\n", s.base));
    s.ldapmodify(&format!(
        "dn: {}\nchangetype: modify\nadd: member\nmember: {team}\n",
        dn_of("ou=groups", "(cn=nest-chain-3)")
    ));
    env.sync(&[]).0.ok();
    agrees_with_full("a new nested group");

    // 4. An existing user without the role joins it (found by DN in the
    // store, its role three levels up), another user's mail changes, a
    // third user is deleted with its memberships.
    let users = env.users("t");
    let plain: Vec<String> = users
        .iter()
        .filter(|u| !u["roles"].as_array().into_iter().flatten().any(|r| r["value"] == "top-chain"))
        .filter_map(|u| u["userName"].as_str())
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric()))
        .filter(|n| {
            s.search(&format!("ou=people,{}", s.base), &format!("(uid={n})"), &["dn"])
                .contains(&format!("dn: uid={n},ou=people,"))
        })
        .take(3)
        .map(str::to_string)
        .collect();
    assert_eq!(plain.len(), 3);
    let joiner_dn = format!("uid={},ou=people,{}", plain[0], s.base);
    s.ldapmodify(&format!("dn: {team}\nchangetype: modify\nadd: member\nmember: {joiner_dn}\n"));
    s.ldapmodify(&format!(
        "dn: uid={},ou=people,{}\nchangetype: modify\nreplace: mail\nmail: moved@example.org\n",
        plain[1], s.base
    ));
    s.ldapdelete(&format!("uid={},ou=people,{}", plain[2], s.base));
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(
        (report["counts"]["updates"].as_u64(), report["counts"]["deletes"].as_u64()),
        (Some(2), Some(1)),
        "{report}"
    );
    assert!(stored(&report) < total, "{report}");
    assert!(roles_of(&plain[0]).contains(&"top-chain".to_string()), "the joiner has the group's role");
    agrees_with_full("a join, a change and a delete");

    // 5. A new user joins all-staff, a group of every user, and another
    // leaves it: the group's unchanged members stay unloaded.
    let all_staff = dn_of("ou=groups", "(cn=all-staff)");
    let staff_before = members_of("all-staff").len();
    s.ldapadd(&format!(
        "dn: uid=joiner2,ou=people,{base}\nobjectClass: inetOrgPerson\nuid: joiner2\ncn: Joiner Two\nsn: Two\n",
        base = s.base
    ));
    s.ldapmodify(&format!(
        "dn: {all_staff}\nchangetype: modify\nadd: member\nmember: uid=joiner2,ou=people,{base}\n-\ndelete: member\nmember: uid={},ou=people,{base}\n",
        plain[1],
        base = s.base
    ));
    assert!(staff_before > 1000, "all-staff names every user: {staff_before}");
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(
        (report["counts"]["members_added"].as_u64(), report["counts"]["members_removed"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    assert!(stored(&report) < 100, "a big group's unchanged members are not loaded: {report}");
    agrees_with_full("a join and a leave of a group of everyone");

    // 6. A user takes another's userName: a duplicate is decided over the
    // whole tenant, so this run loads everything, and quarantines the newcomer.
    let whole = (env.users("t").len() + env.groups("t").len()) as u64;
    s.ldapadd(&format!(
        "dn: uid={name},ou=sales,ou=people,{base}\nobjectClass: inetOrgPerson\nuid: {name}\ncn: Twin\nsn: Twin\n",
        name = plain[1],
        base = s.base
    ));
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(report["sources"][0]["read"]["mode"], "incremental", "{report}");
    assert_eq!(stored(&report), whole, "a duplicate needs the whole state: {report}");
    let held = env.run(&["quarantine", "list", "--tenant", "t", "--json"]).ok();
    assert!(held.stdout.contains(&plain[1]), "{}", held.stdout);
    // A later incremental run that does not read the duplicate keeps it held.
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(report["status"], "no-changes", "{report}");
    let held = env.run(&["quarantine", "list", "--tenant", "t", "--json"]).ok();
    assert!(held.stdout.contains(&plain[1]), "an incremental run settles only what it read: {}", held.stdout);
    agrees_with_full("a duplicate userName");
}

#[test]
fn the_guard_rail_blocks_a_mass_delete_until_allowed() {
    let s = directory();
    let env = env_for(&s, &s.ldap_url, true, "");
    let mut cfg = std::fs::read_to_string(env.config_path()).expect("config");
    cfg.push_str("\n[tenant.safety]\nmax_deletes = 5\n");
    env.write_config(&cfg);
    env.sync(&[]).0.ok();
    let users = env.users("t");
    let victims: Vec<String> =
        users[..8].iter().map(|u| u["userName"].as_str().unwrap_or_default().to_string()).collect();
    for v in &victims {
        let out = s.search(&format!("ou=people,{}", s.base), &format!("(uid={v})"), &["dn"]);
        let dn = out.lines().find_map(|l| l.strip_prefix("dn: ")).expect("dn").to_string();
        s.ldapdelete(&dn);
    }
    let run = env.run(&["sync"]).code(3);
    assert!(run.stderr.contains("guard-rail") && run.stderr.contains("deletes 8"), "{}", run.stderr);
    assert_eq!(env.users("t").len(), USERS, "nothing applied");
    let runs = env.runs("t");
    assert_eq!(runs[0]["status"], "blocked");

    let dry = env.run(&["sync", "--dry-run"]).ok();
    assert_eq!(dry.stdout.lines().filter(|l| l.starts_with("- user")).count(), 8, "{}", dry.stdout);

    // An admin approves the blocked run from the CLI: exactly its 8 deletions apply.
    let blocked = runs[0]["id"].as_i64().expect("run id").to_string();
    let approved = env.run(&["runs", "approve", "--tenant", "t", &blocked]).ok();
    assert!(approved.stdout.contains("8 deleted"), "{}", approved.stdout);
    assert_eq!(env.users("t").len(), USERS - 8);
    let again = env.run(&["runs", "approve", "--tenant", "t", &blocked]).code(2);
    assert!(again.stderr.contains("nothing to approve"), "a run approves once: {}", again.stderr);
    let audit = env.run(&["audit", "export", "--tenant", "t"]).ok().stdout;
    let approval = audit.lines().find(|l| l.contains("plan.approve")).expect("approval audited");
    assert!(approval.contains("\"actor\":\"cli:") && approval.contains("\"approved_deletes\":8"), "{approval}");

    // --allow-deletes lets an admin at the console apply a large delete at once.
    let more: Vec<String> =
        env.users("t")[..6].iter().map(|u| u["userName"].as_str().unwrap_or_default().to_string()).collect();
    for v in &more {
        let out = s.search(&format!("ou=people,{}", s.base), &format!("(uid={v})"), &["dn"]);
        s.ldapdelete(out.lines().find_map(|l| l.strip_prefix("dn: ")).expect("dn"));
    }
    env.run(&["sync"]).code(3);
    let (run, report) = env.sync(&["--allow-deletes"]);
    run.ok();
    assert_eq!(counts(&report).2, 6);
    assert_eq!(env.users("t").len(), USERS - 14);
}

#[test]
fn a_read_that_fails_part_way_plans_no_deletes() {
    let s = directory();
    let env = env_for(&s, &s.ldaps_url, false, "");
    env.sync(&[]).0.ok();
    let victim = env.users("t")[0]["userName"].as_str().unwrap_or_default().to_string();
    let out = s.search(&format!("ou=people,{}", s.base), &format!("(uid={victim})"), &["dn"]);
    s.ldapdelete(out.lines().find_map(|l| l.strip_prefix("dn: ")).expect("dn"));

    // Users read fine, then the group search fails: no deletes from that run.
    let cfg = std::fs::read_to_string(env.config_path()).expect("config");
    let broken = cfg
        .replace(&format!("group_base = \"ou=groups,{}\"", s.base), &format!("group_base = \"ou=missing,{}\"", s.base));
    assert_ne!(cfg, broken);
    env.write_config(&broken);
    let (run, report) = env.sync(&[]);
    let run = run.code(5);
    assert_eq!(counts(&report).2, 0, "no deletes from a partial read: {}", run.stderr);
    assert!(run.stderr.contains("ou=missing"), "says which search failed: {}", run.stderr);
    assert_eq!(env.users("t").len(), USERS);

    env.write_config(&cfg);
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(counts(&report).2, 1, "the complete read deletes it");
}

#[test]
fn scope_by_ou_and_by_group() {
    let s = directory();
    let sales = format!("ou=sales,ou=people,{}", s.base);
    let in_sales = s.search_count(&sales, "(objectClass=inetOrgPerson)");
    assert!(in_sales > 0, "the generated directory has users in {sales}");
    let env = env_for(&s, &s.ldaps_url, false, &format!("scope_ous = [{sales:?}]"));
    env.sync(&[]).0.ok();
    let users = env.users("t");
    assert_eq!(users.len(), in_sales);

    // Group scope: the members (nested included) of the first group in the directory.
    let full = env_for(&s, &s.ldaps_url, false, "");
    full.sync(&[]).0.ok();
    let groups = full.groups("t");
    let biggest = groups.iter().max_by_key(|g| g["members"].as_array().map(|m| m.len()).unwrap_or(0)).expect("a group");
    let name = biggest["displayName"].as_str().expect("displayName").to_string();
    let expected = full
        .users("t")
        .iter()
        .filter(|u| u["groups"].as_array().into_iter().flatten().any(|g| g["value"] == biggest["id"]))
        .count();
    let scoped = env_for(&s, &s.ldaps_url, false, &format!("scope_groups = [{name:?}]"));
    scoped.sync(&[]).0.ok();
    assert_eq!(scoped.users("t").len(), expected, "members of '{name}', direct and nested");
}

#[test]
fn source_test_reports_connection_and_bind_and_names_failures() {
    let s = directory();
    let env = env_for(&s, &s.ldaps_url, false, "");
    let run = env.run(&["source", "test", "--tenant", "t", "--source", "corp"]).ok();
    assert!(run.stdout.contains("OK") && run.stdout.contains(&format!("bound as '{}'", s.svc_dn)), "{}", run.stdout);
    assert_eq!(env.users("t").len(), 0, "a test changes nothing");
    std::fs::write(env.path().join("ldap-password"), "wrong").expect("write");
    let run = env.run(&["source", "test", "--tenant", "t", "--source", "corp"]).code(1);
    assert!(run.stderr.contains("invalid credentials"), "{}", run.stderr);
}
