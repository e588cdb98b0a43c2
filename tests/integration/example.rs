//! The bundled example: what the README's first command does.

use crate::support::{Env, counts, repo_root, user};

fn example_env() -> Env {
    let ldif = repo_root().join("examples/directory.ldif");
    let text = std::fs::read_to_string(repo_root().join("examples/roster.toml")).expect("examples/roster.toml");
    // Same config, but the store goes to the temp dir and the LDIF is found from there.
    let text = text.replace("path = \"directory.ldif\"", &format!("path = {:?}", ldif.display().to_string()));
    assert!(text.contains(&ldif.display().to_string()), "example config changed shape: {text}");
    Env::new(&text)
}

#[test]
fn example_directory_syncs_and_a_second_run_changes_nothing() {
    let env = example_env();
    let (run, report) = env.sync(&[]);
    let run = run.ok();
    let (creates, updates, deletes) = counts(&report);
    assert_eq!(report["status"], "applied", "{}", run.stderr);
    assert_eq!(creates, 340, "300 users + 40 groups: {}", run.stderr);
    assert_eq!((updates, deletes), (0, 0));
    assert!(run.stderr.contains("example: applied"), "summary line: {}", run.stderr);

    let users = env.users("example");
    let groups = env.groups("example");
    assert_eq!(users.len(), 300);
    assert_eq!(groups.len(), 40);

    // Non-ASCII survives base64 and mapping; a DN with an escaped comma resolves.
    let spelled = groups.iter().find(|g| g["displayName"] == "dn-spelling").expect("dn-spelling group");
    let members = spelled["members"].as_array().expect("members");
    assert_eq!(members.len(), 1, "member DN written with hex escapes resolves: {spelled}");
    let mueller = users.iter().find(|u| u["id"] == members[0]["value"]).expect("the member is a user");
    assert_eq!(mueller["name"]["familyName"], "Müller", "{mueller}");
    assert!(mueller["externalId"].as_str().is_some_and(|s| s.len() == 36), "anchor is the entryUUID: {mueller}");
    assert_eq!(mueller["active"], true);

    // A dangling member reference is ignored, the others resolve.
    let dangling = groups.iter().find(|g| g["displayName"] == "dangling-ref").expect("dangling-ref group");
    assert_eq!(dangling["members"].as_array().map(|m| m.len()), Some(2));

    // Nested groups: someone is an indirect member somewhere, and every group
    // reference in a user points at a real group.
    let indirect = users
        .iter()
        .flat_map(|u| u["groups"].as_array().cloned().unwrap_or_default())
        .filter(|g| g["type"] == "indirect")
        .count();
    assert!(indirect > 0, "nested groups give indirect memberships");
    let group_ids: std::collections::HashSet<_> = groups.iter().map(|g| g["id"].clone()).collect();
    for u in &users {
        for g in u["groups"].as_array().into_iter().flatten() {
            assert!(group_ids.contains(&g["value"]), "dangling group ref in {u}");
        }
    }
    let lower = users.iter().all(|u| u["userName"].as_str().is_some_and(|s| s == s.to_lowercase()));
    assert!(lower, "userName = lower(uid)");

    let status = env.run(&["status", "--json"]).ok().json();
    assert_eq!(status[0]["source"], "sample");
    assert!(status[0]["last_complete_sync"].is_string(), "{status}");
    assert_eq!(status[0]["last_run"]["status"], "applied");

    // Second run: nothing to do, nothing written.
    let (run2, report2) = env.sync(&[]);
    run2.ok();
    assert_eq!(report2["status"], "no-changes");
    assert_eq!(counts(&report2), (0, 0, 0));
    let users2 = env.users("example");
    assert_eq!(
        user(&users2, mueller["userName"].as_str().unwrap_or_default()).map(|u| u["meta"]["version"].clone()),
        Some(mueller["meta"]["version"].clone()),
        "an unchanged object is not rewritten"
    );
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let env = example_env();
    let run = env.run(&["sync", "--dry-run"]).ok();
    assert!(run.stdout.contains("Plan for tenant 'example': 340 to create"), "{}", run.stdout);
    assert!(run.stdout.contains("+ user "), "{}", run.stdout);
    assert!(env.users("example").is_empty());
    assert!(env.runs("example").is_empty(), "a dry run records no run");
}

#[test]
fn the_compiled_plugin_is_cached_by_content_hash() {
    let env = example_env();
    env.sync(&[]).0.ok();
    let cache = env.path().join("roster-data/plugin-cache");
    let entries = || -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(&cache)
            .unwrap_or_else(|e| panic!("{}: {e}", cache.display()))
            .filter_map(|e| e.ok())
            .map(|e| (e.path(), e.metadata().and_then(|m| m.modified()).expect("mtime")))
            .collect();
        v.sort();
        v
    };
    let first = entries();
    assert_eq!(first.len(), 1, "one compiled component: {first:?}");
    assert!(first[0].0.extension().is_some_and(|e| e == "cwasm"));
    env.sync(&[]).0.ok();
    assert_eq!(entries(), first, "a second start reuses the compiled component instead of recompiling");
}

#[test]
fn the_anchor_attribute_is_configurable() {
    let ldif = repo_root().join("examples/directory.ldif");
    let env = Env::new(&format!(
        "[store]\npath = \"data\"\n[[tenant]]\nid = \"t\"\n[[tenant.source]]\nname = \"s\"\nkind = \"ldif\"\npath = {:?}\nanchor = \"employeeNumber\"\n",
        ldif.display().to_string()
    ));
    let (run, report) = env.sync(&[]);
    run.ok();
    let users = env.users("t");
    assert_eq!(users.len(), 300, "{report}");
    assert!(
        users.iter().all(|u| u["externalId"].as_str().is_some_and(|a| a.starts_with("100"))),
        "externalId is employeeNumber"
    );
    // Groups have no employeeNumber: they are quarantined for the missing anchor, not dropped silently.
    let q = env.quarantine("t");
    assert_eq!(q.len(), 40);
    assert!(q[0]["reason"].as_str().unwrap_or("").contains("employeeNumber"), "{q:?}");
}

#[test]
fn typed_custom_attributes_are_checked_and_published_under_the_extension_schema() {
    let ldif = repo_root().join("examples/directory.ldif");
    let config = |extra: &str| {
        format!(
            "[store]\npath = \"data\"\n[[tenant]]\nid = \"t\"\n[[tenant.source]]\nname = \"s\"\nkind = \"ldif\"\npath = {:?}\n[tenant.mapping]\nuserName = \"lower(uid)\"\n\"custom.employeeNumber\" = \"employeeNumber\"\n\"custom.department\" = \"departmentNumber\"\n{extra}\n[tenant.custom_attributes.employeeNumber]\ntype = \"integer\"\nrequired = true\n[tenant.custom_attributes.department]\ntype = \"string\"\n",
            ldif.display().to_string()
        )
    };
    let env = Env::new(&config(""));
    env.sync(&[]).0.ok();
    let users = env.users("t");
    assert_eq!(users.len(), 300);
    let urn = "urn:roster:params:scim:schemas:extension:custom:2.0:User";
    let u = &users[0];
    assert!(u["schemas"].as_array().is_some_and(|s| s.iter().any(|x| x == urn)), "{u}");
    assert!(u[urn]["employeeNumber"].is_i64(), "integers are numbers in SCIM: {u}");

    // A value that does not fit its declared type quarantines the entry, naming attribute and entry.
    let env = Env::new(
        &config("\"custom.started\" = \"title\"\n[tenant.custom_attributes.started]\ntype = \"timestamp\"\n")
            .replace("[tenant.limits]", ""),
    );
    let mut cfg = std::fs::read_to_string(env.config_path()).expect("config");
    cfg.push_str("[tenant.limits]\nmax_failed_percent = 100\n");
    env.write_config(&cfg);
    env.sync(&[]).0.ok();
    let q = env.quarantine("t");
    assert!(!q.is_empty());
    let reason = q[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("custom attribute 'started'")
            && reason.contains("not a timestamp")
            && reason.contains("(entry "),
        "{reason}"
    );
    assert_eq!(q[0]["stage"], "custom-attributes");
}

#[test]
fn roles_follow_direct_and_nested_groups_and_changes_are_planned() {
    let ldif = repo_root().join("examples/directory.ldif");
    let config = |rules: &str| {
        format!(
            "[store]\npath = \"data\"\n[[tenant]]\nid = \"t\"\n[[tenant.source]]\nname = \"s\"\nkind = \"ldif\"\npath = {:?}\n{rules}",
            ldif.display().to_string()
        )
    };
    let rules = "[[tenant.roles.rule]]\npattern = \"alpha-*\"\nrole = \"alpha\"\npriority = 10\n[[tenant.roles.rule]]\ngroup = \"all-staff\"\nrole = \"staff\"\n";
    let env = Env::new(&config(rules));
    env.sync(&[]).0.ok();
    let users = env.users("t");
    let mut with_roles = 0;
    for u in &users {
        let groups: Vec<&str> =
            u["groups"].as_array().into_iter().flatten().filter_map(|g| g["display"].as_str()).collect();
        let mut want = Vec::new();
        if groups.iter().any(|g| g.starts_with("alpha-")) {
            want.push("alpha");
        }
        if groups.contains(&"all-staff") {
            want.push("staff");
        }
        let got: Vec<&str> = u["roles"].as_array().into_iter().flatten().filter_map(|r| r["value"].as_str()).collect();
        assert_eq!(got, want, "roles of {} from groups {groups:?}", u["userName"]);
        if let Some(first) = u["roles"].as_array().and_then(|r| r.first()) {
            assert_eq!(first["primary"], true, "highest priority is primary");
            with_roles += 1;
        }
    }
    assert!(with_roles > 0);
    // Only the highest-priority role: role changes are planned as updates of `roles`.
    env.write_config(&config(&format!("[tenant.roles]\nhighest_only = true\n{rules}")));
    let dry = env.run(&["sync", "--dry-run"]).ok();
    assert!(dry.stdout.contains("roles: [\"alpha\", \"staff\"] → \"alpha\""), "{}", dry.stdout);
}

#[test]
fn a_closed_pipe_ends_the_listing_quietly() {
    use std::io::{BufRead, BufReader};
    let env = example_env();
    env.sync(&[]).0.ok();
    let mut child = env
        .cmd()
        .args(["users", "list", "--tenant", "example", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    {
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout).read_line(&mut first).expect("read a line");
    } // the reader is dropped: the pipe is closed, like `| head -1`
    let out = child.wait_with_output().expect("wait");
    assert_eq!(first.trim(), "{");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
