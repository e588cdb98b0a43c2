//! `roster config check` and configuration errors: they name the place.

use crate::support::{Env, repo_root};

fn ldif() -> String {
    repo_root().join("examples/directory.ldif").display().to_string()
}

#[test]
fn the_example_config_checks_clean() {
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["--config"])
        .arg(repo_root().join("examples/roster.toml"))
        .args(["config", "check"])
        .output()
        .expect("run");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains("declarative-mapper"));
}

#[test]
fn an_expression_error_names_tenant_key_and_position() {
    let env = Env::new(&format!(
        "[[tenant]]\nid = \"acme\"\n[[tenant.source]]\nname = \"s\"\nkind = \"ldif\"\npath = {:?}\n[tenant.mapping]\nuserName = \"lower(uid)\"\ndisplayName = \"coalese(displayName, cn)\"\n",
        ldif()
    ));
    let run = env.run(&["config", "check"]).code(2);
    assert!(run.stderr.contains("tenant 'acme'"), "{}", run.stderr);
    assert!(run.stderr.contains("key 'displayName'"), "{}", run.stderr);
    assert!(run.stderr.contains("position 0"), "{}", run.stderr);
    assert!(run.stderr.contains("coalese"), "{}", run.stderr);
    // sync refuses the same config the same way.
    let run = env.run(&["sync"]).code(2);
    assert!(run.stderr.contains("coalese"), "{}", run.stderr);
}

#[test]
fn unknown_keys_wrong_types_and_plaintext_secrets_name_file_line_and_column() {
    let env = Env::new("[[tenant]]\nid = \"acme\"\nbogus_key = 1\n");
    let run = env.run(&["config", "check"]).code(2);
    assert!(
        run.stderr.contains("roster.toml") && run.stderr.contains("line 3") && run.stderr.contains("bogus_key"),
        "{}",
        run.stderr
    );

    env.write_config("[store]\npath = 5\n");
    let run = env.run(&["config", "check"]).code(2);
    assert!(run.stderr.contains("line 2"), "{}", run.stderr);

    env.write_config(
        "[[tenant]]\nid = \"a\"\n[[tenant.source]]\nname = \"l\"\nkind = \"ldap\"\nurl = \"ldaps://127.0.0.1:1\"\nuser_base = \"dc=x\"\nbind_dn = \"cn=x\"\nbind_password = \"hunter2\"\n",
    );
    let run = env.run(&["config", "check"]).code(2);
    assert!(run.stderr.contains("line 9") && run.stderr.contains("secret reference"), "{}", run.stderr);
    assert!(!run.stderr.contains("hunter2"), "the secret is not echoed: {}", run.stderr);
}

#[test]
fn ldif_url_values_are_refused_with_file_and_line() {
    let env = Env::new("");
    std::fs::write(
        env.path().join("d.ldif"),
        "dn: uid=a,dc=x\nobjectClass: inetOrgPerson\nuid: a\njpegPhoto:< file:///etc/passwd\n",
    )
    .expect("write");
    env.write_config("[[tenant]]\nid = \"a\"\n[[tenant.source]]\nname = \"f\"\nkind = \"ldif\"\npath = \"d.ldif\"\n");
    let run = env.run(&["sync"]).code(1);
    assert!(run.stderr.contains("d.ldif:4"), "{}", run.stderr);
}
