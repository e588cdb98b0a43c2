//! `roster plugin test`: a plugin file run on sample entries, with no
//! configuration file, reporting each entry's result and the run's cost.

use serde_json::Value;

use crate::support::{Env, plugin_wasm, repo_root};

/// An environment whose `roster.toml` does not exist: `plugin test` must not need one.
fn no_config() -> Env {
    let env = Env::new("");
    std::fs::remove_file(env.config_path()).expect("removing roster.toml");
    env
}

fn cost(report: &Value, key: &str) -> u64 {
    report["cost"][key].as_u64().unwrap_or_else(|| panic!("cost.{key} missing: {}", report["cost"]))
}

#[test]
fn builtin_declarative_mapper_on_the_example_ldif() {
    let env = no_config();
    let wasm = plugin_wasm("declarative_mapper");
    let ldif = repo_root().join("examples/directory.ldif");
    let args = ["plugin", "test", wasm.to_str().unwrap_or_default(), "--input", ldif.to_str().unwrap_or_default()];

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let report = env.run(&json_args).ok().json();
    assert_eq!(report["plugin"]["name"], "declarative-mapper");
    let entries = report["entries"].as_array().expect("entries");
    assert!(entries.len() > 10, "{}", entries.len());
    assert_eq!(report["counts"]["entries"].as_u64(), Some(entries.len() as u64));
    assert_eq!(report["counts"]["failed"], 0);
    let jmuller = entries.iter().find(|e| e["attributes"]["userName"][0] == "jmuller2").expect("jmuller2 mapped");
    assert_eq!(jmuller["result"], "mapped");
    assert_eq!(jmuller["output_kind"], "user");
    assert_eq!(jmuller["attributes"]["displayName"][0], "José Müller");
    assert_eq!(jmuller["attributes"]["email"][0], "jmuller2@example.com");
    assert!(entries.iter().any(|e| e["output_kind"] == "group"), "groups are mapped too");
    // Defaults of [tenant.limits], and what the run cost.
    assert_eq!(report["limits"]["call_timeout_ms"], 2000);
    assert_eq!(report["limits"]["memory_mb"], 64);
    assert!(cost(&report, "fuel_map") > 0 && cost(&report, "fuel_per_entry") > 0, "{}", report["cost"]);
    assert!(cost(&report, "peak_memory_bytes") > 0, "{}", report["cost"]);
    assert!(report["cost"]["per_entry_us"].as_f64().is_some_and(|t| t > 0.0), "{}", report["cost"]);

    // The human form says the same.
    let run = env.run(&args).ok();
    assert!(run.stdout.contains("mapped user") && run.stdout.contains("userName = jmuller2"), "{}", run.stdout);
    assert!(
        run.stdout.contains("instructions (fuel):") && run.stdout.contains("peak linear memory:"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_trap_is_reported_for_its_entry_and_the_rest_still_map() {
    let env = no_config();
    let input = env.path().join("entries.json");
    let entries = serde_json::json!([
        { "anchor": "a-1", "dn": "uid=jdoe,ou=people,dc=example,dc=com", "kind": "user",
          "attributes": { "uid": "jdoe", "cn": "John Doe" } },
        { "anchor": "a-2", "kind": "user", "attributes": { "uid": "victim" } },
        { "anchor": "a-3", "kind": "user", "attributes": { "uid": "asmith", "mail": ["a@example.com"] } }
    ]);
    std::fs::write(&input, entries.to_string()).expect("write input");
    let config = env.path().join("plugin.toml");
    std::fs::write(&config, "fail = \"trap\"\nwhen_uid = \"victim\"\n").expect("write plugin config");
    let wasm = plugin_wasm("broken_mapper");
    let run = env
        .run(&[
            "plugin",
            "test",
            wasm.to_str().unwrap_or_default(),
            "--input",
            input.to_str().unwrap_or_default(),
            "--plugin-config",
            config.to_str().unwrap_or_default(),
            "--timeout-ms",
            "500",
            "--json",
        ])
        .ok();
    let report = run.json();
    let out = report["entries"].as_array().expect("entries");
    assert_eq!(out.len(), 3);
    assert_eq!(out[0]["result"], "mapped");
    assert_eq!(out[0]["attributes"]["userName"][0], "jdoe");
    assert_eq!(out[1]["anchor"], "a-2");
    assert_eq!(out[1]["result"], "failed");
    let message = out[1]["message"].as_str().unwrap_or_default();
    assert!(message.contains("trapped") && message.contains("unreachable"), "{message}");
    assert_eq!(out[2]["result"], "mapped");
    assert_eq!(report["counts"]["failed"], 1);
    assert_eq!(report["counts"]["mapped"], 2);
    assert_eq!(report["limits"]["call_timeout_ms"], 500);
    assert!(cost(&report, "fuel_map") > 0, "{}", report["cost"]);
    assert!(cost(&report, "peak_memory_bytes") > 0, "{}", report["cost"]);
}

#[test]
fn a_plugin_that_cannot_load_or_init_exits_2() {
    let env = no_config();
    let input = env.path().join("entries.json");
    std::fs::write(&input, r#"[{"anchor":"a-1","kind":"user","attributes":{"uid":"x"}}]"#).expect("write input");
    let wrong = plugin_wasm("wrong_world");
    let run = env
        .run(&["plugin", "test", wrong.to_str().unwrap_or_default(), "--input", input.to_str().unwrap_or_default()])
        .code(2);
    assert!(run.stderr.contains("cannot load") && run.stderr.contains("map"), "{}", run.stderr);

    let config = env.path().join("plugin.toml");
    std::fs::write(&config, "fail = \"nonsense\"\n").expect("write plugin config");
    let broken = plugin_wasm("broken_mapper");
    let run = env
        .run(&[
            "plugin",
            "test",
            broken.to_str().unwrap_or_default(),
            "--input",
            input.to_str().unwrap_or_default(),
            "--plugin-config",
            config.to_str().unwrap_or_default(),
        ])
        .code(2);
    assert!(run.stderr.contains("configuration rejected") && run.stderr.contains("fail"), "{}", run.stderr);
}

#[test]
fn a_memory_bomb_hits_the_same_cap_and_peak_memory_stays_under_it() {
    let env = no_config();
    let input = env.path().join("entries.json");
    std::fs::write(&input, r#"[{"anchor":"a-1","kind":"user","attributes":{"uid":"x"}}]"#).expect("write input");
    let config = env.path().join("plugin.toml");
    std::fs::write(&config, "fail = \"memory-bomb\"\n").expect("write plugin config");
    let broken = plugin_wasm("broken_mapper");
    let report = env
        .run(&[
            "plugin",
            "test",
            broken.to_str().unwrap_or_default(),
            "--input",
            input.to_str().unwrap_or_default(),
            "--plugin-config",
            config.to_str().unwrap_or_default(),
            "--memory-mb",
            "16",
            "--json",
        ])
        .ok()
        .json();
    let entry = &report["entries"][0];
    assert_eq!(entry["result"], "failed");
    assert!(entry["message"].as_str().unwrap_or_default().contains("memory limit of 16 MiB"), "{entry}");
    let peak = cost(&report, "peak_memory_bytes");
    assert!(peak > 1024 * 1024 && peak <= 16 * 1024 * 1024, "peak {peak} is what was granted, within the cap");

    let run = env
        .run(&[
            "plugin",
            "test",
            broken.to_str().unwrap_or_default(),
            "--input",
            input.to_str().unwrap_or_default(),
            "--memory-mb",
            "2048",
        ])
        .code(2);
    assert!(run.stderr.contains("over the maximum of 1024 MiB"), "{}", run.stderr);
}
