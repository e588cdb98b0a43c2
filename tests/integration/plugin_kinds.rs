//! The plugin kinds after the mapper: custom attributes, role assignment and
//! conflict resolution, each with its built-in (configured from TOML) and an
//! example plugin from `plugins/examples/`; the frozen 0.1.0 WIT; uploads and
//! rollback of non-mapper kinds; tenants with different plugins side by side.

use serde_json::Value;

use crate::support::{Env, plugin_wasm, user};

const ANN: &str = "00000000-0000-4000-8000-0000000000a1";
const BOB: &str = "00000000-0000-4000-8000-0000000000b2";

fn person(uid: &str, anchor: &str, extra: &str) -> String {
    format!(
        "dn: uid={uid},ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: Test\nmail: {uid}@example.com\nentryUUID: {anchor}\n{extra}\n"
    )
}

fn group(cn: &str, anchor: &str, members: &[&str]) -> String {
    let members: String = members.iter().map(|m| format!("member: {m}\n")).collect();
    format!(
        "dn: cn={cn},ou=groups,dc=example,dc=com\nobjectClass: groupOfNames\ncn: {cn}\nentryUUID: {anchor}\n{members}\n"
    )
}

/// ann ∈ admins ∈ eng-core; bob ∈ eng-core.
fn directory() -> String {
    [
        person("ann", ANN, "employeeNumber: 0042\ndepartmentNumber: cc-7\ncreateTimestamp: 20240131120000Z\n"),
        person("bob", BOB, "employeeNumber: 7\ndepartmentNumber: cc-9\ncreateTimestamp: 2023-06-01T08:00:00+02:00\n"),
        group("admins", "00000000-0000-4000-8000-00000000a0a0", &["uid=ann,ou=people,dc=example,dc=com"]),
        group(
            "eng-core",
            "00000000-0000-4000-8000-00000000e0e0",
            &["cn=admins,ou=groups,dc=example,dc=com", "uid=bob,ou=people,dc=example,dc=com"],
        ),
    ]
    .concat()
}

fn env_with(tenant_extra: &str) -> Env {
    let env = Env::new("");
    std::fs::write(env.path().join("dir.ldif"), directory()).expect("write");
    env.write_config(&format!(
        "[store]\npath = \"data\"\n[[tenant]]\nid = \"t\"\n[[tenant.source]]\nname = \"corp\"\nkind = \"ldif\"\npath = \"dir.ldif\"\n{tenant_extra}"
    ));
    env
}

fn wasm(stem: &str) -> String {
    plugin_wasm(stem).display().to_string()
}

const URN: &str = "urn:roster:params:scim:schemas:extension:custom:2.0:User";

#[test]
fn built_in_custom_attributes_are_typed_from_expressions_and_published_under_the_urn() {
    let env = env_with(
        r#"
[tenant.custom_attributes.costCenter]
type = "string"
required = true
from = "upper(departmentNumber)"
[tenant.custom_attributes.employeeId]
type = "integer"
from = "employeeNumber"
[tenant.custom_attributes.started]
type = "timestamp"
from = "createTimestamp"
"#,
    );
    let (run, report) = env.sync(&[]);
    run.ok();
    let kinds: Vec<&str> =
        report["plugins"].as_array().into_iter().flatten().filter_map(|p| p["kind"].as_str()).collect();
    assert!(kinds.contains(&"custom-attributes"), "the run names the stage's plugin: {kinds:?}");
    let users = env.users("t");
    let ann = &user(&users, "ann").expect("ann")[URN];
    assert_eq!(ann["costCenter"], "CC-7");
    assert_eq!(ann["employeeId"], 42, "integer, canonical");
    assert_eq!(ann["started"], "2024-01-31T12:00:00Z");
    let bob = &user(&users, "bob").expect("bob")[URN];
    assert_eq!(bob["started"], "2023-06-01T06:00:00Z", "offsets become UTC");
}

#[test]
fn a_value_that_does_not_fit_quarantines_the_user_naming_attribute_and_entry() {
    let env = env_with(
        "[tenant.custom_attributes.employeeId]\ntype = \"boolean\"\nfrom = \"employeeNumber\"\n[tenant.limits]\nmax_failed_percent = 100\n",
    );
    let (run, _) = env.sync(&[]);
    run.ok();
    let q = env.quarantine("t");
    // 0042 and 7 are not booleans: both users are held, groups still sync.
    assert_eq!(q.len(), 2, "{q:?}");
    let ann = q.iter().find(|i| i["anchor"] == ANN).expect("ann quarantined");
    assert_eq!(ann["stage"], "custom-attributes");
    let reason = ann["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("'employeeId'") && reason.contains("not a boolean") && reason.contains(ANN), "{reason}");
    assert!(env.users("t").is_empty());
}

#[test]
fn an_example_custom_attributes_plugin_runs_in_place_of_the_built_in() {
    let env = env_with(&format!(
        "[tenant.custom_attributes.badge]\ntype = \"string\"\n[tenant.custom_attributes.nameLength]\ntype = \"integer\"\n[tenant.plugins.custom_attributes]\npath = {:?}\nconfig = {{ prefix = \"X-\" }}\n",
        wasm("badge_attributes")
    ));
    env.sync(&[]).0.ok();
    let users = env.users("t");
    let ann = &user(&users, "ann").expect("ann")[URN];
    assert_eq!(ann["badge"], "X-0042");
    assert_eq!(ann["nameLength"], 3);
}

#[test]
fn built_in_role_rules_follow_nested_groups_into_scim_roles() {
    let env = env_with(
        r#"
[tenant.roles]
[[tenant.roles.rule]]
group = "cn=admins,ou=groups,dc=example,dc=com"
role = "admin"
priority = 100
[[tenant.roles.rule]]
pattern = "eng-*"
role = "engineer"
priority = 50
"#,
    );
    env.sync(&[]).0.ok();
    let users = env.users("t");
    let roles = |name: &str| -> Vec<String> {
        user(&users, name).expect("user")["roles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["value"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(roles("ann"), ["admin", "engineer"], "ann is in eng-core through admins");
    assert_eq!(roles("bob"), ["engineer"]);
    // explain shows the role stage's output for one entry.
    let explained = env.run(&["explain", "--tenant", "t", ANN]).ok();
    assert!(explained.stdout.contains("Roles: plugin 'rule-roles'"), "{}", explained.stdout);
    assert!(
        explained.stdout.contains("roles: [\"admin\", \"engineer\"]") || explained.stdout.contains("roles: admin"),
        "{}",
        explained.stdout
    );
}

#[test]
fn an_example_role_plugin_sees_depths_and_only_direct_groups_count() {
    let env = env_with(&format!("[tenant.plugins.role_assigner]\npath = {:?}\n", wasm("department_roles")));
    env.sync(&[]).0.ok();
    let users = env.users("t");
    let ann = user(&users, "ann").expect("ann");
    assert_eq!(ann["roles"][0]["value"], "team:admins");
    assert_eq!(ann["roles"].as_array().map(Vec::len), Some(1), "eng-core is nested for ann: {ann}");
}

#[test]
fn an_example_resolver_decides_duplicates_its_own_way() {
    // bob2 claims ann's userName; the built-in would keep the stored ann.
    let env = env_with(&format!(
        "[tenant.mapping]\nuserName = \"lower(coalesce(employeeType, uid))\"\n[tenant.plugins.conflict_resolver]\npath = {:?}\n",
        wasm("newest_wins_resolver")
    ));
    env.sync(&[]).0.ok();
    let extra = person("bob2", "00000000-0000-4000-8000-0000000000c3", "employeeType: ann\n");
    std::fs::write(env.path().join("dir.ldif"), [directory(), extra].concat()).expect("write");
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(report["conflicts"]["conflicts"], 1);
    let q = env.quarantine("t");
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0]["anchor"], ANN, "the newest claimant won, so the stored one is held");
    assert!(q[0]["plugin"].as_str().unwrap_or_default().contains("newest_wins_resolver"), "{q:?}");
}

fn two_sources(precedence: &str) -> Env {
    let env = Env::new("");
    let hr = [
        person("ann", "hr-ann", "title: Engineer\nemployeeNumber: 42\n"),
        person("carl", "hr-carl", "title: Accountant\n"),
    ]
    .concat();
    let ldap = [
        person("ann.smith", "ldap-ann", "title: Senior Engineer\ntelephoneNumber: 555\n")
            .replace("mail: ann.smith@example.com", "mail: ANN@example.com"),
        group("staff", "ldap-staff", &["uid=ann.smith,ou=people,dc=example,dc=com"]),
    ]
    .concat();
    std::fs::write(env.path().join("hr.ldif"), hr).expect("write");
    std::fs::write(env.path().join("ldap.ldif"), ldap).expect("write");
    env.write_config(&format!(
        r#"[store]
path = "data"
[[tenant]]
id = "t"
[[tenant.source]]
name = "corp-ldap"
kind = "ldif"
path = "ldap.ldif"
[[tenant.source]]
name = "hr"
kind = "ldif"
path = "hr.ldif"
[tenant.mapping]
userName = "lower(uid)"
email = "lower(mail)"
title = "title"
phone = "telephoneNumber"
[tenant.conflicts]
correlate_on = "email"
{precedence}
"#
    ));
    env
}

#[test]
fn the_same_person_in_two_sources_is_merged_by_per_attribute_precedence() {
    let env = two_sources(
        "precedence = [\"hr\", \"corp-ldap\"]\n[tenant.conflicts.attribute_precedence]\ntitle = [\"corp-ldap\", \"hr\"]\n",
    );
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(report["conflicts"]["merged"], 1, "{report}");
    let users = env.users("t");
    assert_eq!(users.len(), 2, "ann once, carl: {users:?}");
    let ann = user(&users, "ann").expect("hr's userName wins");
    assert_eq!(ann["externalId"], "hr-ann", "hr comes first: its identity is kept");
    assert_eq!(ann["title"], "Senior Engineer", "title follows its own precedence");
    assert_eq!(ann["phone"], "555", "only the directory has it");
    let groups = env.groups("t");
    let staff = groups.iter().find(|g| g["displayName"] == "staff").expect("staff");
    assert_eq!(staff["members"][0]["value"], ann["id"], "the membership moved to the merged user: {staff}");
}

#[test]
fn app_edits_stand_until_the_directory_changes_too_then_the_policy_decides() {
    let env = env_with("[tenant.mapping]\nuserName = \"lower(uid)\"\ntitle = \"title\"\n");
    std::fs::write(
        env.path().join("dir.ldif"),
        directory().replace("employeeNumber: 0042\n", "employeeNumber: 0042\ntitle: Engineer\n"),
    )
    .expect("write");
    env.sync(&[]).0.ok();
    env.run(&["users", "edit", "--tenant", "t", ANN, "--set", "title=CTO"]).ok();
    env.sync(&[]).0.ok();
    let title = |env: &Env| user(&env.users("t"), "ann").map(|u| u["title"].clone()).unwrap_or(Value::Null);
    assert_eq!(title(&env), "CTO", "the application's edit is applied");
    env.sync(&[]).0.ok();
    assert_eq!(title(&env), "CTO", "and it stands while the directory keeps its old value");

    // Now the directory changes it too: by default a human decides.
    std::fs::write(
        env.path().join("dir.ldif"),
        directory().replace("employeeNumber: 0042\n", "employeeNumber: 0042\ntitle: VP\n"),
    )
    .expect("write");
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(report["conflicts"]["conflicts"], 1);
    let q = env.quarantine("t");
    assert_eq!(q.len(), 1, "{q:?}");
    let reason = q[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("app edit of title") && reason.contains("\"CTO\"") && reason.contains("\"VP\""),
        "{reason}"
    );
    assert_eq!(title(&env), "CTO", "held for review: the stored user is unchanged");

    // The admin keeps the directory's side: the edit is dropped, VP flows.
    env.run(&["quarantine", "resolve", "--tenant", "t", ANN, "--keep"]).ok();
    env.sync(&[]).0.ok();
    assert_eq!(title(&env), "VP");
    assert!(env.quarantine("t").is_empty());
}

#[test]
fn app_precedence_lets_the_applications_edit_win_a_conflict() {
    let env = env_with(
        "[tenant.mapping]\nuserName = \"lower(uid)\"\ntitle = \"title\"\n[tenant.conflicts.attribute_precedence]\ntitle = [\"app\", \"corp\"]\n",
    );
    std::fs::write(
        env.path().join("dir.ldif"),
        directory().replace("employeeNumber: 0042\n", "employeeNumber: 0042\ntitle: Engineer\n"),
    )
    .expect("write");
    env.sync(&[]).0.ok();
    env.run(&["users", "edit", "--tenant", "t", ANN, "--set", "title=CTO"]).ok();
    std::fs::write(
        env.path().join("dir.ldif"),
        directory().replace("employeeNumber: 0042\n", "employeeNumber: 0042\ntitle: VP\n"),
    )
    .expect("write");
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(report["conflicts"]["app_edits_kept"], 1, "{report}");
    assert_eq!(user(&env.users("t"), "ann").expect("ann")["title"], "CTO");
    assert!(env.quarantine("t").is_empty());
}

#[test]
fn a_mapper_built_against_the_frozen_0_1_0_wit_still_loads_and_uploads() {
    let env = env_with(&format!("[tenant.plugins.mapper]\npath = {:?}\n", wasm("legacy_mapper")));
    env.sync(&[]).0.ok();
    assert!(user(&env.users("t"), "legacy-ann").is_some(), "{:?}", env.users("t"));
    let env = env_with("");
    let added = env.run(&["plugin", "add", "--tenant", "t", "--kind", "mapper", &wasm("legacy_mapper")]).ok();
    assert!(added.stdout.contains("stored as version 1"), "{}", added.stdout);
}

#[test]
fn role_plugins_upload_validate_and_roll_back() {
    let env = env_with("");
    // A mapper is not a role assigner: the message names the missing export.
    let wrong = env.run(&["plugin", "add", "--tenant", "t", "--kind", "role-assigner", &wasm("uppercase_mapper")]);
    assert_ne!(wrong.code, 0);
    assert!(wrong.stderr.contains("missing export 'assign'"), "{}", wrong.stderr);

    // Vectors shipped with the plugin run at upload: a failing one keeps it out.
    let vectors = env.path().join("roles.vectors.json");
    std::fs::write(
        &vectors,
        r#"[{"name": "direct groups only", "user": {"anchor": "u1"},
             "groups": [{"anchor": "g1", "name": "Blue Team"}, {"anchor": "g2", "name": "all", "depth": 2}],
             "expect": {"roles": ["team:blue-team", "team:all"]}}]"#,
    )
    .expect("write");
    let refused = env.run(&[
        "plugin",
        "add",
        "--tenant",
        "t",
        "--kind",
        "role-assigner",
        &wasm("department_roles"),
        "--vectors",
        &vectors.display().to_string(),
    ]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("direct groups only") && refused.stderr.contains("team:blue-team"),
        "{}",
        refused.stderr
    );
    std::fs::write(
        &vectors,
        r#"[{"name": "direct groups only", "user": {"anchor": "u1"},
             "groups": [{"anchor": "g1", "name": "Blue Team"}, {"anchor": "g2", "name": "all", "depth": 2}],
             "expect": {"roles": ["team:blue-team"]}}]"#,
    )
    .expect("write");
    let added = env
        .run(&[
            "plugin",
            "add",
            "--tenant",
            "t",
            "--kind",
            "role-assigner",
            &wasm("department_roles"),
            "--vectors",
            &vectors.display().to_string(),
        ])
        .ok();
    assert!(added.stdout.contains("1 test vectors passed"), "{}", added.stdout);
    env.sync(&[]).0.ok();
    let first_role =
        |env: &Env| user(&env.users("t"), "bob").map(|u| u["roles"][0]["value"].clone()).unwrap_or(Value::Null);
    assert_eq!(first_role(&env), "team:eng-core");

    // Version 2: the built-in rules plugin uploaded as is, without rules: no roles.
    env.run(&["plugin", "add", "--tenant", "t", "--kind", "role-assigner", &wasm("rule_roles")]).ok();
    env.sync(&[]).0.ok();
    assert_eq!(first_role(&env), Value::Null);
    let list = env.run(&["plugin", "list", "--tenant", "t", "--json"]).ok().json();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "the refused upload left nothing behind");

    env.run(&["plugin", "activate", "t", "role-assigner", "1"]).ok();
    env.sync(&[]).0.ok();
    assert_eq!(first_role(&env), "team:eng-core", "rollback changes the next run");
}

#[test]
fn tenants_with_different_role_plugins_in_one_process_see_only_their_own() {
    let env = Env::new("");
    std::fs::write(env.path().join("dir.ldif"), directory()).expect("write");
    std::fs::write(env.path().join("other.ldif"), person("zed", "00000000-0000-4000-8000-0000000000d4", ""))
        .expect("write");
    env.write_config(&format!(
        r#"[store]
path = "data"
[[tenant]]
id = "t1"
[[tenant.source]]
name = "corp"
kind = "ldif"
path = "dir.ldif"
[tenant.plugins.role_assigner]
path = {:?}
config = {{ prefix = "t1:" }}

[[tenant]]
id = "t2"
[[tenant.source]]
name = "corp"
kind = "ldif"
path = "other.ldif"
[[tenant.roles.rule]]
pattern = "*"
role = "member"
"#,
        wasm("department_roles")
    ));
    env.run(&["sync"]).ok();
    let t1 = env.users("t1");
    assert_eq!(t1.len(), 2);
    assert!(t1.iter().all(|u| u["roles"][0]["value"].as_str().is_some_and(|r| r.starts_with("t1:"))), "{t1:?}");
    let t2 = env.users("t2");
    assert_eq!(t2.len(), 1, "t2 sees only its own directory");
    assert!(t2[0]["roles"].is_null(), "zed is in no group: {t2:?}");
}

#[test]
fn a_hostile_role_plugin_is_contained_to_the_users_it_fails_on() {
    for (fail, expect) in [
        ("loop", "deadline"),
        ("memory-bomb", "memory limit"),
        ("trap", "role assigner gave up"),
        ("error", "no roles for"),
    ] {
        let env = env_with(&format!(
            "[tenant.plugins.role_assigner]\npath = {:?}\nconfig = {{ fail = {fail:?}, when_anchor = {ANN:?} }}\n[tenant.limits]\nplugin_call_timeout_ms = 300\nplugin_memory_mb = 16\nmax_failed_percent = 100\n",
            wasm("broken_roles")
        ));
        let (run, _) = env.sync(&[]);
        run.ok();
        let users = env.users("t");
        assert!(user(&users, "ann").is_none(), "{fail}: ann is held back");
        assert_eq!(user(&users, "bob").expect("bob synced")["roles"][0]["value"], "ok", "{fail}");
        let q = env.quarantine("t");
        assert_eq!(q.len(), 1, "{fail}: {q:?}");
        assert_eq!(q[0]["stage"], "roles", "{fail}");
        let reason = q[0]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(expect) && reason.contains("broken-roles"), "{fail}: {reason}");
    }
}

#[test]
fn a_role_plugin_failing_everyone_aborts_the_run_before_apply() {
    let env = env_with(&format!(
        "[tenant.plugins.role_assigner]\npath = {:?}\nconfig = {{ fail = \"error\" }}\n",
        wasm("broken_roles")
    ));
    let (run, report) = env.sync(&[]);
    run.code(4);
    assert_eq!(report["status"], "aborted", "{report}");
    assert!(env.users("t").is_empty(), "nothing applied");
}

#[test]
fn plugin_test_runs_every_kind_as_a_sync_would() {
    let env = env_with("");
    let input = env.path().join("dir.ldif");
    let input = input.display().to_string();
    std::fs::write(env.path().join("schema.toml"), "badge = { type = \"string\", required = true }\n").expect("write");
    let schema = env.path().join("schema.toml").display().to_string();
    let custom = env
        .run(&[
            "plugin",
            "test",
            &wasm("badge_attributes"),
            "--kind",
            "custom-attributes",
            "--schema",
            &schema,
            "--input",
            &input,
            "--json",
        ])
        .ok()
        .json();
    let ann = custom["entries"].as_array().into_iter().flatten().find(|e| e["anchor"] == ANN).expect("ann");
    assert_eq!(ann["attributes"]["badge"][0], "B-0042", "{custom}");
    assert!(custom["cost"]["fuel_map"].as_u64().unwrap_or(0) > 0, "instructions are counted");

    let roles = env
        .run(&["plugin", "test", &wasm("department_roles"), "--kind", "role-assigner", "--input", &input, "--json"])
        .ok()
        .json();
    let bob = roles["entries"].as_array().into_iter().flatten().find(|e| e["anchor"] == BOB).expect("bob");
    assert_eq!(bob["attributes"]["roles"][0], "team:eng-core", "{roles}");

    std::fs::write(
        env.path().join("conflicts.json"),
        r#"[{"kind": "duplicate-key", "key": "userName", "value": "jdoe", "claimants": [
            {"source": "hr", "anchor": "old", "attributes": {"userName": ["jdoe"]}, "stored_since": "2024-01-01T00:00:00Z"},
            {"source": "hr", "anchor": "new", "attributes": {"userName": ["jdoe"]}}]}]"#,
    )
    .expect("write");
    let conflicts = env.path().join("conflicts.json").display().to_string();
    let decided = env
        .run(&["plugin", "test", &wasm("policy_resolver"), "--kind", "conflict-resolver", "--input", &conflicts])
        .ok();
    assert!(decided.stdout.contains("keep claimant 0, 'old' from 'hr'"), "{}", decided.stdout);
    let newest = env
        .run(&["plugin", "test", &wasm("newest_wins_resolver"), "--kind", "conflict-resolver", "--input", &conflicts])
        .ok();
    assert!(newest.stdout.contains("keep claimant 1, 'new'"), "{}", newest.stdout);

    // Without declarations a custom-attributes plugin cannot be judged.
    let missing =
        env.run(&["plugin", "test", &wasm("badge_attributes"), "--kind", "custom-attributes", "--input", &input]);
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("--schema"), "{}", missing.stderr);
}
