//! The audit trail: runs, applied changes and admin actions are recorded in a
//! per-tenant hash chain that `roster audit verify` checks; sensitive
//! attributes never reach the store, the audit or `explain` in clear.

use serde_json::Value;

use crate::support::Env;

const PASSWORD: &str = "Corr3ct-Horse-Battery";

fn env() -> Env {
    let env = Env::new("");
    std::fs::write(
        env.path().join("dir.ldif"),
        format!(
            "dn: uid=ann,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: ann\ncn: Ann\nsn: A\nentryUUID: 00000000-0000-4000-8000-00000000000a\nuserPassword: {PASSWORD}\n\n\
             dn: uid=bob,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: bob\ncn: Bob\nsn: B\nentryUUID: 00000000-0000-4000-8000-00000000000b\n\n"
        ),
    )
    .expect("write ldif");
    env.write_config(
        "[store]\npath = \"data\"\n[[tenant]]\nid = \"t\"\n[tenant.safety]\nmax_delete_percent = 100\n\
         [[tenant.source]]\nname = \"dir\"\nkind = \"ldif\"\npath = \"dir.ldif\"\n\
         [tenant.mapping]\nuserName = \"uid\"\ndisplayName = \"cn\"\nuserPassword = \"userPassword\"\n",
    );
    env
}

fn export(env: &Env) -> Vec<Value> {
    let run = env.run(&["audit", "export", "--tenant", "t"]).ok();
    run.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

#[test]
fn runs_changes_and_admin_actions_are_chained_and_tampering_is_named() {
    let env = env();
    env.sync(&[]).0.ok();
    env.run(&["token", "create", "--name", "ci", "--tenant", "t", "--role", "reader"]).ok();

    let records = export(&env);
    let kinds: Vec<&str> = records.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert!(kinds.contains(&"run"), "{kinds:?}");
    let creates = records.iter().filter(|r| r["kind"] == "change" && r["detail"]["op"] == "create").count();
    assert_eq!(creates, 2, "one record per created user: {records:#?}");
    let run = records.iter().find(|r| r["kind"] == "run").expect("run record");
    assert_eq!(run["detail"]["status"], "applied", "{run}");
    assert_eq!(run["detail"]["counts"]["creates"], 2, "{run}");
    let admin = records.iter().find(|r| r["kind"] == "admin").expect("admin record");
    assert_eq!(admin["detail"]["action"], "token.create");
    assert!(admin["actor"].as_str().unwrap_or("").starts_with("cli:"));
    // The chain: each record names its predecessor's hash.
    for pair in records.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
        assert_eq!(pair[1]["seq"].as_i64(), pair[0]["seq"].as_i64().map(|s| s + 1));
    }
    let verified = env.run(&["audit", "verify"]).ok();
    assert!(verified.stdout.contains(&format!("{} records", records.len())), "{}", verified.stdout);

    // Each kind of tampering, each on a copy of the untouched store.
    env.save_store("pristine");
    let tamperings: [(&str, &str, &str); 3] = [
        (
            "edit",
            "UPDATE audit SET detail = replace(detail, 'token.create', 'token.list') WHERE kind = 'admin'",
            "edited",
        ),
        ("remove", "DELETE FROM audit WHERE seq = 2", "record 2 is missing"),
        // Records 2 and 3 swap places.
        (
            "reorder",
            "UPDATE audit SET seq = 1000 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = 1000",
            "out of order",
        ),
    ];
    for (what, sql, expect) in tamperings {
        env.restore_store("pristine");
        env.store_sql(sql);
        let run = env.run(&["audit", "verify"]);
        assert_eq!(run.code, 1, "{what}: verify must fail\n{}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains("tenant 't'"), "{what}: names the tenant: {}", run.stderr);
        assert!(run.stderr.contains(expect), "{what}: expected '{expect}' in: {}", run.stderr);
    }
    env.restore_store("pristine");
    env.run(&["audit", "verify"]).ok();
}

#[test]
fn sensitive_attributes_are_stored_audited_and_explained_only_as_digests() {
    let env = env();
    env.sync(&[]).0.ok();
    let attrs =
        env.store_texts("SELECT attrs FROM users WHERE anchor = '00000000-0000-4000-8000-00000000000a'").remove(0);
    assert!(attrs.contains("redacted:sha256:"), "the store keeps a digest: {attrs}");

    // Nowhere in the store file, the audit export, the event feed or explain.
    let store = env.store_bytes();
    assert!(!store.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()), "the password is in the store file");
    let audit = env.run(&["audit", "export", "--tenant", "t"]).ok();
    assert!(!audit.stdout.contains(PASSWORD));
    assert!(audit.stdout.contains("redacted:sha256:"), "the audit shows the attribute, not its value");
    let events = env.run(&["events", "list", "--tenant", "t", "--json"]).ok();
    assert!(!events.stdout.contains(PASSWORD));
    let explain = env.run(&["explain", "--tenant", "t", "00000000-0000-4000-8000-00000000000a"]).ok();
    assert!(!explain.stdout.contains(PASSWORD), "{}", explain.stdout);
    assert!(explain.stdout.contains("in sync with the source"), "a digest compares equal: {}", explain.stdout);

    // A password change is a change (an update is audited), still without its value.
    let ldif =
        std::fs::read_to_string(env.path().join("dir.ldif")).expect("read").replace(PASSWORD, "N3w-Secret-Value");
    std::fs::write(env.path().join("dir.ldif"), ldif).expect("write");
    let (run, report) = env.sync(&[]);
    run.ok();
    assert_eq!(report["counts"]["updates"], 1, "{report}");
    let audit = env.run(&["audit", "export", "--tenant", "t"]).ok();
    assert!(!audit.stdout.contains("N3w-Secret-Value"));
    assert!(audit.stdout.contains("\"op\":\"update\""), "{}", audit.stdout);
}

#[test]
fn raw_source_attributes_are_kept_only_when_the_tenant_opts_in() {
    let env = env();
    // A source attribute nobody maps: by default it is never stored.
    let ldif = std::fs::read_to_string(env.path().join("dir.ldif"))
        .expect("read")
        .replace("cn: Bob\n", "cn: Bob\nroomNumber: Unmapped-Room-4711\n");
    std::fs::write(env.path().join("dir.ldif"), ldif).expect("write");
    let bob = "00000000-0000-4000-8000-00000000000b";
    env.sync(&[]).0.ok();
    let store_holds = |needle: &str| {
        let bytes = env.store_bytes();
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    };
    let raw_rows = || env.store_count("SELECT count(*) FROM raw_attributes");
    assert!(!store_holds("Unmapped-Room-4711"), "only mapped attributes are stored by default");
    assert_eq!(raw_rows(), 0);

    // Opted in: every attribute the source returned, sensitive ones digested.
    let cfg = std::fs::read_to_string(env.config_path()).expect("read config");
    env.write_config(&format!("{cfg}[tenant.privacy]\nkeep_raw_attributes = true\n"));
    env.sync(&[]).0.ok();
    assert_eq!(raw_rows(), 2, "both users");
    let attrs = env
        .store_texts(&format!(
            "SELECT r.attrs, r.read_at FROM raw_attributes r JOIN users u ON u.id = r.object_id WHERE u.anchor = '{bob}'"
        ))
        .remove(0);
    let attrs: Value = serde_json::from_str(&attrs).expect("json");
    assert_eq!(attrs["roomNumber"], serde_json::json!(["Unmapped-Room-4711"]), "{attrs}");
    let explain = env.run(&["explain", "--tenant", "t", bob]).ok();
    assert!(
        explain.stdout.contains("Raw source attributes kept") && explain.stdout.contains("Unmapped-Room-4711"),
        "{}",
        explain.stdout
    );
    let ann = env.run(&["explain", "--tenant", "t", "00000000-0000-4000-8000-00000000000a"]).ok();
    assert!(!ann.stdout.contains(PASSWORD) && ann.stdout.contains("userPassword"), "{}", ann.stdout);
    let store = env.store_bytes();
    assert!(!store.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()), "sensitive values stay digested");

    // A deleted object's raw attributes go with it; turning the option off deletes the rest.
    let ldif = std::fs::read_to_string(env.path().join("dir.ldif")).expect("read");
    let without_bob: Vec<&str> = ldif.split("\n\n").filter(|e| !e.contains("uid: bob")).collect();
    std::fs::write(env.path().join("dir.ldif"), without_bob.join("\n\n")).expect("write");
    env.sync(&[]).0.ok();
    assert_eq!(raw_rows(), 1, "bob's row is gone with bob");
    env.write_config(&cfg);
    env.sync(&[]).0.ok();
    assert_eq!(raw_rows(), 0, "the option off keeps nothing");
}

#[test]
fn retention_prunes_old_records_and_the_rest_still_verifies() {
    let env = env();
    let cfg = std::fs::read_to_string(env.config_path()).expect("read config");
    env.write_config(&format!("{cfg}[tenant.audit]\nretention_days = 0\n"));
    env.sync(&[]).0.ok();
    let first = export(&env);
    assert!(!first.is_empty());
    // Change something so the next run applies (pruning follows an applied run).
    let ldif = std::fs::read_to_string(env.path().join("dir.ldif")).expect("read").replace("cn: Bob", "cn: Robert");
    std::fs::write(env.path().join("dir.ldif"), ldif).expect("write");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    env.sync(&[]).0.ok();
    let second = export(&env);
    let last_first = first.iter().filter_map(|r| r["seq"].as_i64()).max().unwrap_or(0);
    assert!(!second.is_empty());
    assert!(
        second.iter().all(|r| r["seq"].as_i64().unwrap_or(0) > last_first),
        "the first run's records were pruned and numbering continues: {first:#?} then {second:#?}"
    );
    env.run(&["audit", "verify"]).ok();
}
