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
    assert!(
        reason.contains("(entry d3ccdd70-a99a-5008-a330-5448b45664a7)"),
        "{fail}: names the entry's anchor: {reason}"
    );
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
fn a_process_exit_ends_the_instance_not_roster() {
    // WASI p2 `exit` carries only ok/err, so std reports any non-zero code as 1.
    contained("exit", "Exited with i32 exit status 1");
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

// ---- Hostile plugins: a plugin gets nothing it was not granted, and limits are hard.

/// Runs the broken mapper with `fail` on `VICTIM` only (extra plugin config in
/// `extra`), with extra variables in roster's own environment. Everything else
/// must sync; returns the run and the victim's quarantine reason.
fn probe(fail: &str, extra: &str, limits: &str, env_vars: &[(&str, &str)]) -> (crate::support::Run, String) {
    let cfg = format!("fail = {fail:?}, when_uid = {VICTIM:?}{extra}");
    let env = Env::new(&config_with_mapper("broken_mapper", &cfg, limits));
    let started = Instant::now();
    let run = env.run_env(&["sync", "--json"], env_vars).ok();
    assert!(started.elapsed() < Duration::from_secs(60), "{fail}: finished well within a minute");
    let report = &run.json()[0];
    assert_eq!(counts(report).0, EXAMPLE_OBJECTS - 1, "{fail}: everything else synced: {}", run.stderr);
    let q = env.quarantine("t");
    assert_eq!(q.len(), 1, "{fail}: {q:?}");
    assert_eq!(q[0]["stage"], "map");
    let reason = q[0]["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("tenant 't'") && reason.contains("broken-mapper"), "{fail}: names the plugin: {reason}");
    (run, reason)
}

#[test]
fn a_plugin_cannot_read_the_host_filesystem() {
    let (run, reason) = probe("read-file", "", "", &[]);
    assert!(reason.contains("/etc/passwd: error"), "{reason}");
    assert!(reason.contains("read_dir /: error") && reason.contains("read_dir .: error"), "{reason}");
    for text in [&reason, &run.stdout, &run.stderr] {
        assert!(!text.contains("root:"), "host file content leaked: {text}");
    }
}

#[test]
fn a_plugin_sees_no_environment_even_when_roster_has_one() {
    let secret_env = [("ROSTER_TEST_SECRET", "topsecret"), ("HOME", "/home/roster-test")];
    let (run, reason) = probe("read-env", "", "", &secret_env);
    assert!(reason.contains("read-env: 0 vars []"), "{reason}");
    assert!(reason.contains("HOME: error") && reason.contains("PATH: error"), "{reason}");
    assert!(reason.contains("ROSTER_TEST_SECRET: error") && reason.contains("0 args"), "{reason}");
    for text in [&reason, &run.stdout, &run.stderr] {
        assert!(!text.contains("topsecret") && !text.contains("/home/roster-test"), "environment leaked: {text}");
    }
}

#[test]
fn a_plugin_cannot_open_sockets() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listening on loopback");
    let port = listener.local_addr().expect("local addr").port();
    let (_run, reason) = probe("open-socket", &format!(", port = {port}"), "", &[]);
    assert!(reason.contains(&format!("tcp connect 127.0.0.1:{port}: error")), "{reason}");
    assert!(reason.contains("lookup localhost: error") && reason.contains("udp bind: error"), "{reason}");
    listener.set_nonblocking(true).expect("non-blocking");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the plugin reached the listener: {other:?}"),
    }
}

#[test]
fn a_plugin_reads_the_epoch_unless_granted_the_clock() {
    let (_run, reason) = probe("clock", "", "", &[]);
    assert!(reason.contains("clock: wall 0 s since the epoch; monotonic delta 0 ns"), "{reason}");

    let (_run, reason) = probe("clock", "", "plugin_grant_clock = true", &[]);
    let number_after = |label: &str| -> u128 {
        let rest = reason.split(label).nth(1).unwrap_or_else(|| panic!("{label:?} in {reason}"));
        let digits: String = rest.trim_start().chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or_else(|_| panic!("a number after {label:?} in {reason}"))
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let wall = number_after("clock: wall") as u64;
    assert!(wall.abs_diff(now) < 600, "granted wall clock reads now ({now}): {reason}");
    assert!(number_after("monotonic delta") >= 20_000_000, "granted monotonic clock advances: {reason}");
}

#[test]
fn a_plugin_gets_only_deterministic_randomness() {
    let (_run, reason) = probe("random", "", "", &[]);
    let hashes: Vec<&str> = reason
        .split("random: seeded ")
        .nth(1)
        .map(|r| r.split(|c: char| !c.is_ascii_hexdigit()).filter(|s| s.len() == 16).collect())
        .unwrap_or_default();
    assert_eq!(hashes.len(), 2, "{reason}");
    assert_eq!(hashes[0], hashes[1], "the insecure seed is 0, so RandomState is zero-keyed: {reason}");
}

#[test]
fn a_huge_output_is_quarantined_over_the_output_limit() {
    let (_run, reason) = probe("huge-output", "", "plugin_call_timeout_ms = 5000", &[]);
    assert!(reason.contains("invalid output") && reason.contains("over the limit of 4096 KiB"), "{reason}");
    let returned: u64 = reason
        .rsplit("returned ")
        .next()
        .and_then(|r| r.split(" KiB").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the size returned in {reason}"));
    assert!((8192..8200).contains(&returned), "the 8 MiB displayName alone: {reason}");

    // A tighter limit catches smaller outputs too.
    let (_run, reason) = probe("huge-output", ", bytes = 100000", "plugin_output_max_kb = 64", &[]);
    assert!(reason.contains("over the limit of 64 KiB"), "{reason}");
}

#[test]
fn a_log_flood_is_cut_counted_and_does_not_stall_the_run() {
    let env = broken("log-flood", Some(VICTIM), "");
    let started = Instant::now();
    let (run, report) = env.sync(&[]);
    let run = run.ok();
    assert!(started.elapsed() < Duration::from_secs(30), "a log flood does not slow the run badly");
    assert_eq!(counts(&report).0, EXAMPLE_OBJECTS, "the flooding entry maps too: {}", run.stderr);
    assert!(env.quarantine("t").is_empty());
    assert!(run.stderr.contains("dropped=99900"), "the dropped lines are counted: {}", run.stderr);
    assert!(!run.stderr.contains("flood 100 "), "lines past the cap are not logged");
}

#[test]
fn one_tenants_failing_plugin_does_not_touch_another_tenant() {
    let ldif = repo_root().join("examples/directory.ldif").display().to_string();
    let env = Env::new(&format!(
        r#"
[store]
path = "data"

[[tenant]]
id = "a"

[[tenant.source]]
name = "sample"
kind = "ldif"
path = {ldif:?}

[tenant.plugins.mapper]
path = {plugin:?}
config = {{ fail = "trap" }}

[[tenant]]
id = "b"

[[tenant.source]]
name = "sample"
kind = "ldif"
path = {ldif:?}

[tenant.mapping]
userName = "lower(uid)"
displayName = "cn"
"#,
        plugin = plugin_wasm("broken_mapper").display().to_string(),
    ));
    let run = env.run(&["sync", "--json"]).code(4);
    let reports = run.json();
    let b = reports.as_array().and_then(|r| r.iter().find(|r| r["tenant"] == "b")).expect("tenant b report");
    assert_eq!(b["status"], "applied", "{}", run.stderr);
    assert_eq!(counts(b).0, EXAMPLE_OBJECTS, "{}", run.stderr);
    assert!(run.stderr.contains("error: tenant 'a'") && run.stderr.contains("aborted before apply"), "{}", run.stderr);

    assert!(env.users("a").is_empty() && env.groups("a").is_empty(), "tenant a's store is untouched");
    assert_eq!(env.runs("a")[0]["status"], "aborted");
    let users = env.users("b");
    assert_eq!(users.len(), 300);
    assert_eq!(env.groups("b").len(), 40);
    assert!(users.iter().any(|u| u["userName"] == VICTIM), "tenant b maps with its own mapper");
    assert!(env.quarantine("b").is_empty(), "a's failures are not b's");
    assert!(!env.quarantine("a").is_empty());

    // Running b again changes nothing: a's failure left no trace in b.
    let again = env.run(&["sync", "--json"]).code(4);
    let reports = again.json();
    let b = reports.as_array().and_then(|r| r.iter().find(|r| r["tenant"] == "b")).expect("tenant b report");
    assert_eq!(counts(b), (0, 0, 0), "{}", again.stderr);
}

#[test]
fn a_plugin_cannot_sleep_past_its_deadline() {
    // The epoch deadline only interrupts WebAssembly code; a sleep is a blocking
    // host call, so the host refuses any wait that would end past the deadline.
    let started = Instant::now();
    let (_run, reason) = probe("sleep", ", ms = 3600000", "plugin_call_timeout_ms = 500", &[]);
    assert!(reason.contains("call exceeded its 500 ms deadline"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(30), "not an hour, nor even a deadline per batch");

    // A short wait within the deadline is fine.
    let (_run, reason) = probe("sleep", ", ms = 50", "plugin_call_timeout_ms = 2000", &[]);
    assert!(reason.contains("sleep: slept 50 ms"), "{reason}");
}

#[test]
fn a_plugin_that_keeps_failing_is_disabled_for_its_tenant_until_re_enabled() {
    let env = broken("trap", None, "disable_after_failed_runs = 2");
    for _ in 0..2 {
        let run = env.run(&["sync"]).code(4);
        assert!(run.stderr.contains("aborted before apply"), "{}", run.stderr);
    }
    let run = env.run(&["sync"]).code(4);
    assert!(
        run.stderr.contains("is disabled since") && run.stderr.contains("2 consecutive failed runs"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("roster plugin enable --tenant t --kind mapper"),
        "says how to recover: {}",
        run.stderr
    );
    assert_eq!(env.runs("t").len(), 2, "a disabled plugin starts no run");

    env.run(&["plugin", "enable", "--tenant", "t", "--kind", "mapper"]).ok();
    let run = env.run(&["sync"]).code(4);
    assert!(run.stderr.contains("aborted before apply"), "runs again once enabled: {}", run.stderr);
}
