//! The per-tenant plugin registry: upload with validation and test vectors,
//! versions, activation and rollback.

use crate::support::{Env, counts, plugin_wasm, repo_root};

fn env() -> Env {
    Env::new(&format!(
        "[store]\npath = \"data\"\n[[tenant]]\nid = \"t\"\n[[tenant.source]]\nname = \"sample\"\nkind = \"ldif\"\npath = {:?}\n",
        repo_root().join("examples/directory.ldif").display().to_string()
    ))
}

const VICTIM: &str = "jmuller2";

fn display_name(env: &Env) -> String {
    let users = env.users("t");
    let u = users.iter().find(|u| u["userName"] == VICTIM).expect("user");
    u["displayName"].as_str().expect("displayName").to_string()
}

fn vectors(env: &Env, display: &str) -> std::path::PathBuf {
    let path = env.path().join(format!("vectors-{display}.json"));
    let json = serde_json::json!([{
        "name": "upper-cases displayName",
        "entry": { "anchor": "a-1", "dn": "uid=jdoe,ou=people,dc=example,dc=com", "kind": "user",
                   "attributes": { "uid": "JDoe", "displayName": "John Doe" } },
        "expect": { "mapped": { "userName": "jdoe", "displayName": display } }
    }, {
        "entry": { "anchor": "a-2", "kind": "user", "attributes": { "cn": "no uid" } },
        "expect": { "skip": true }
    }]);
    std::fs::write(&path, json.to_string()).expect("write vectors");
    path
}

#[test]
fn upload_activate_and_roll_back_change_the_next_runs_output() {
    let env = env();
    env.sync(&[]).0.ok();
    let builtin = display_name(&env);
    assert_ne!(builtin, builtin.to_uppercase(), "built-in mapping keeps case");

    // Version 1: the upper-casing example plugin, with passing vectors.
    let good = vectors(&env, "JOHN DOE");
    let upper = plugin_wasm("uppercase_mapper");
    let run = env
        .run(&[
            "plugin",
            "add",
            "--tenant",
            "t",
            "--kind",
            "mapper",
            "--vectors",
            good.to_str().unwrap_or_default(),
            upper.to_str().unwrap_or_default(),
        ])
        .ok();
    assert!(run.stdout.contains("version 1") && run.stdout.contains("2 test vectors passed"), "{}", run.stdout);
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(report["plugins"][0]["name"], "uppercase-mapper", "the run names the plugin it ran");
    assert!(counts(&report).1 > 0);
    assert_eq!(display_name(&env), builtin.to_uppercase());

    // Version 2: the declarative mapper as an uploaded plugin.
    let decl = plugin_wasm("declarative_mapper");
    env.run(&["plugin", "add", "--tenant", "t", "--kind", "mapper", decl.to_str().unwrap_or_default()]).ok();
    env.sync(&[]).0.ok();
    assert_eq!(display_name(&env), builtin);

    let list = env.run(&["plugin", "list", "--tenant", "t", "--json"]).ok().json();
    let versions: Vec<(i64, bool)> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| (p["version"].as_i64().unwrap_or(0), p["active"] == true))
        .collect();
    assert_eq!(versions, vec![(1, false), (2, true)]);

    // Roll back to version 1.
    env.run(&["plugin", "activate", "t", "mapper", "1"]).ok();
    env.sync(&[]).0.ok();
    assert_eq!(display_name(&env), builtin.to_uppercase(), "rollback changes the next run's output");
    env.run(&["plugin", "activate", "t", "mapper", "9"]).code(2);
}

#[test]
fn failing_vectors_and_wrong_components_are_rejected_with_actionable_messages() {
    let env = env();
    let bad = vectors(&env, "John Doe");
    let upper = plugin_wasm("uppercase_mapper");
    let run = env
        .run(&[
            "plugin",
            "add",
            "--tenant",
            "t",
            "--kind",
            "mapper",
            "--vectors",
            bad.to_str().unwrap_or_default(),
            upper.to_str().unwrap_or_default(),
        ])
        .code(2);
    assert!(
        run.stderr.contains("failed 1 of 2 test vectors") && run.stderr.contains("upper-cases displayName"),
        "{}",
        run.stderr
    );

    let wrong = plugin_wasm("wrong_world");
    let run =
        env.run(&["plugin", "add", "--tenant", "t", "--kind", "mapper", wrong.to_str().unwrap_or_default()]).code(2);
    assert!(run.stderr.contains("missing export 'map'"), "{}", run.stderr);

    // The hostile test plugin probes files and sockets: an upload is refused outright.
    let hostile = plugin_wasm("broken_mapper");
    let run =
        env.run(&["plugin", "add", "--tenant", "t", "--kind", "mapper", hostile.to_str().unwrap_or_default()]).code(2);
    assert!(
        run.stderr.contains("network access is not granted") && run.stderr.contains("wasi:sockets/"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("file system access is not granted"), "{}", run.stderr);

    let run = env
        .run(&["plugin", "add", "--tenant", "t", "--kind", "teleporter", upper.to_str().unwrap_or_default()])
        .code(2);
    assert!(run.stderr.contains("supported kinds: mapper"), "{}", run.stderr);

    let list = env.run(&["plugin", "list", "--tenant", "t", "--json"]).ok().json();
    assert_eq!(list.as_array().map(|a| a.len()), Some(0), "nothing rejected was stored");
}

#[test]
fn a_scaffolded_plugin_builds_as_is_and_uploads() {
    let env = env();
    let run = env
        .cmd()
        .current_dir(env.path())
        .args(["plugin", "new", "--kind", "mapper", "my-mapper"])
        .output()
        .expect("run");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let wasm = crate::support::build_scaffold(&env.path().join("my-mapper"), "my_mapper");
    let run = env.run(&["plugin", "add", "--tenant", "t", "--kind", "mapper", wasm.to_str().unwrap_or_default()]).ok();
    assert!(run.stdout.contains("'my-mapper'"), "{}", run.stdout);
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(counts(&report).0, 340, "the scaffold maps the example directory");
    assert!(env.quarantine("t").is_empty());
    // A second scaffold with the same name is refused.
    let again = env.cmd().current_dir(env.path()).args(["plugin", "new", "my-mapper"]).output().expect("run");
    assert_eq!(again.status.code(), Some(2));
}
