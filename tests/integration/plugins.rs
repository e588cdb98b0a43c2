//! Mapping plugins: a tenant's own plugin, and deliberately broken ones that
//! must be contained (quarantine the entry, or abort before apply) within the
//! deadline, without touching the store.

use std::time::{Duration, Instant};

use crate::support::{Env, counts, plugin_wasm, repo_root};

const EXAMPLE_OBJECTS: u64 = 340;
/// A user in examples/directory.ldif.
const VICTIM: &str = "jmuller2";

fn config_with_mapper(plugin: &str, plugin_config: &str, limits: &str) -> String {
    format!(
        r#"
[store]
path = "data"

[[tenant]]
id = "t"

[[tenant.source]]
name = "sample"
kind = "ldif"
path = {ldif:?}

[tenant.plugins.mapper]
path = {plugin:?}
config = {{ {plugin_config} }}

[tenant.limits]
{limits}
"#,
        ldif = repo_root().join("examples/directory.ldif").display().to_string(),
        plugin = plugin_wasm(plugin).display().to_string(),
    )
}

fn broken(fail: &str, when_uid: Option<&str>, limits: &str) -> Env {
    let cfg = match when_uid {
        Some(uid) => format!("fail = {fail:?}, when_uid = {uid:?}"),
        None => format!("fail = {fail:?}"),
    };
    Env::new(&config_with_mapper("broken_mapper", &cfg, limits))
}

#[test]
fn a_tenant_plugin_built_with_the_sdk_maps_the_directory() {
    let env = Env::new(&config_with_mapper("uppercase_mapper", "", ""));
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(counts(&report).0, EXAMPLE_OBJECTS);
    let plugin = &report["plugins"][0];
    assert_eq!(plugin["name"], "uppercase-mapper");
    assert_eq!(plugin["sha256"].as_str().map(str::len), Some(64));
    let users = env.users("t");
    let u = users.iter().find(|u| u["userName"] == VICTIM).expect("user mapped");
    let dn = u["displayName"].as_str().expect("displayName");
    assert_eq!(dn, dn.to_uppercase(), "the example plugin upper-cases displayName");
}

/// One entry misbehaves: it is quarantined with the plugin's reason, the rest sync.
fn contained(fail: &str, expect_in_reason: &str) {
    let env = broken(fail, Some(VICTIM), "plugin_call_timeout_ms = 500\nplugin_memory_mb = 32");
    let started = Instant::now();
    let (run, report) = env.sync(&[]);
    let run = run.ok();
    assert!(started.elapsed() < Duration::from_secs(60), "{fail}: contained within the deadline");
    assert_eq!(counts(&report).0, EXAMPLE_OBJECTS - 1, "{fail}: everything else synced: {}", run.stderr);
    let q = env.quarantine("t");
    assert_eq!(q.len(), 1, "{fail}: {q:?}");
    let reason = q[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(expect_in_reason), "{fail}: reason {reason:?} should mention {expect_in_reason:?}");
    assert!(
        reason.contains("tenant 't'") && reason.contains("broken-mapper") && reason.contains("sha256:"),
        "{fail}: names tenant and plugin: {reason}"
    );
    assert_eq!(q[0]["stage"], "map");
    assert!(env.users("t").iter().all(|u| u["userName"] != VICTIM));

    // Quarantine is visible in the CLI, and protected from deletion on later runs.
    let listed = env.run(&["quarantine", "list", "--tenant", "t"]).ok();
    assert!(listed.stdout.contains(expect_in_reason), "{}", listed.stdout);
}

#[test]
fn a_trap_on_one_entry_quarantines_only_that_entry() {
    contained("trap", "unreachable");
}

#[test]
fn an_infinite_loop_is_stopped_by_the_deadline() {
    contained("loop", "deadline");
}

#[test]
fn a_memory_bomb_hits_the_memory_cap() {
    contained("memory-bomb", "memory limit of 32 MiB");
}

#[test]
fn a_panic_is_reported_with_its_message() {
    contained("panic", "panicked");
}

#[test]
fn a_wrong_result_count_is_invalid_output() {
    contained("wrong-count", "invalid output");
}

#[test]
fn an_entry_error_is_quarantined() {
    contained("error", "broken-mapper");
}

#[test]
fn a_plugin_failing_everywhere_aborts_before_apply_without_touching_the_store() {
    let env = broken("loop", None, "plugin_call_timeout_ms = 100");
    let started = Instant::now();
    let run = env.run(&["sync"]).code(4);
    assert!(started.elapsed() < Duration::from_secs(60), "aborted early, not after 340 deadlines");
    assert!(run.stderr.contains("aborted before apply"), "{}", run.stderr);
    assert!(env.users("t").is_empty() && env.groups("t").is_empty(), "store untouched");
    assert_eq!(env.runs("t")[0]["status"], "aborted");
    assert!(!env.quarantine("t").is_empty(), "the failures are on record");
}

#[test]
fn a_failing_entry_that_was_synced_before_is_not_deleted() {
    let env = broken("trap", Some("nobody"), "");
    env.sync(&[]).0.ok();
    assert_eq!(env.users("t").len(), 300);
    // Now the plugin breaks on one entry: the user stays, quarantined.
    env.write_config(&config_with_mapper("broken_mapper", &format!("fail = \"trap\", when_uid = {VICTIM:?}"), ""));
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(counts(&report), (0, 0, 0), "{report}");
    assert!(env.users("t").iter().any(|u| u["userName"] == VICTIM));
    assert_eq!(env.quarantine("t").len(), 1);
    // And once the plugin is fixed, the entry leaves quarantine.
    env.write_config(&config_with_mapper("broken_mapper", "", ""));
    env.sync(&[]).0.ok();
    assert!(env.quarantine("t").is_empty());
}

#[test]
fn a_crash_mid_apply_leaves_the_store_consistent_and_the_next_run_finishes() {
    let env = Env::new(&config_with_mapper("uppercase_mapper", "", ""));
    let run = env.run_env(&["sync"], &[("ROSTER_TEST_CRASH_AFTER_WRITES", "150")]);
    assert_ne!(run.code, 0, "the process was aborted mid-apply: {}", run.stderr);
    assert!(run.stderr.contains("aborting after 150 writes"), "{}", run.stderr);
    assert!(env.users("t").is_empty(), "half a plan is never visible");
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(counts(&report).0, EXAMPLE_OBJECTS, "the next run applies the whole plan");
    assert_eq!(env.users("t").len(), 300);
}

#[test]
fn a_file_that_is_not_a_component_is_rejected_with_the_plugin_named() {
    let env = Env::new("");
    std::fs::write(env.path().join("bogus.wasm"), b"\0asm\x01\0\0\0").expect("write");
    let cfg = config_with_mapper("uppercase_mapper", "", "").replace(
        &plugin_wasm("uppercase_mapper").display().to_string(),
        &env.path().join("bogus.wasm").display().to_string(),
    );
    env.write_config(&cfg);
    let run = env.run(&["sync"]).code(2);
    assert!(run.stderr.contains("plugin 'bogus'") && run.stderr.contains("tenant 't'"), "{}", run.stderr);
}

#[test]
fn a_component_of_another_world_is_rejected_naming_the_missing_export() {
    let env = Env::new(&config_with_mapper("wrong_world", "", ""));
    let run = env.run(&["config", "check"]).code(2);
    assert!(run.stderr.contains("missing export 'map'"), "{}", run.stderr);
    assert!(run.stderr.contains("tenant 't'") && run.stderr.contains("wrong_world"), "{}", run.stderr);
}

#[test]
fn explain_shows_an_entrys_way_through_the_pipeline() {
    let env = broken("trap", Some(VICTIM), "");
    env.sync(&[]).0.ok();
    // By DN, spelled differently from the source (hex escapes, upper-case types).
    let run =
        env.run(&["explain", "--tenant", "t", "CN=M\\C3\\BCller\\2C Jos\\C3\\A9,OU=people,DC=example,DC=com"]).ok();
    let out = &run.stdout;
    assert!(out.contains("anchor: d3ccdd70-a99a-5008-a330-5448b45664a7"), "{out}");
    assert!(out.contains("sn: Müller") && out.contains("uid: jmuller2"), "source attributes: {out}");
    assert!(out.contains("userPassword: <1 value(s), not shown>"), "secrets are not shown: {out}");
    assert!(out.contains("FAILED: the plugin trapped"), "mapper stage: {out}");
    assert!(out.contains("Stored: not in the store") && out.contains("Quarantine: since"), "{out}");

    // A healthy entry, by anchor: mapped and in sync.
    let users = env.users("t");
    let anchor = users[0]["externalId"].as_str().expect("externalId").to_string();
    let out = env.run(&["explain", "--tenant", "t", &anchor]).ok().stdout;
    assert!(
        out.contains("mapped user:") && out.contains("in sync with the source") && out.contains("not quarantined"),
        "{out}"
    );
    env.run(&["explain", "--tenant", "t", "uid=nobody,dc=example,dc=com"]).code(1);
}
