//! The admin API of `roster serve`: every route `/openapi.json` documents is
//! authenticated, role-checked and scoped to its tenant; syncs, plan
//! approval, quarantine, plugins, tokens and the audit trail work over HTTP;
//! TLS from certificate files.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::api::{json, request, serve, token, two_tenants, two_tenants_with};
use crate::support::plugin_wasm;

fn post(addr: &str, path: &str, token: &str, body: &[u8]) -> (u16, Value) {
    let (status, _, body) = request(addr, "POST", path, Some(token), &[], body);
    (status, json(&body))
}

fn get_json(addr: &str, path: &str, token: &str) -> (u16, Value) {
    let (status, _, body) = request(addr, "GET", path, Some(token), &[], &[]);
    (status, json(&body))
}

/// Every documented route with `{tenant}`, its placeholders filled in.
fn documented_routes(addr: &str, tenant: &str) -> Vec<(String, String, String)> {
    let (status, _, body) = request(addr, "GET", "/openapi.json", None, &[], &[]);
    assert_eq!(status, 200, "the OpenAPI document needs no token");
    let doc = json(&body);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut routes = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        if !path.contains("{tenant}") {
            continue;
        }
        for (method, op) in ops.as_object().expect("operations") {
            let concrete = path
                .replace("{tenant}", tenant)
                .replace("{id}", "x")
                .replace("{run}", "1")
                .replace("{anchor}", "x")
                .replace("{kind}", "mapper")
                .replace("{version}", "1");
            let roles = op["x-roster-roles"].as_str().expect("roles").to_string();
            routes.push((method.to_uppercase(), concrete, roles));
        }
    }
    assert!(routes.len() >= 20, "the document lists the whole API: {routes:?}");
    routes
}

#[test]
fn every_documented_route_is_authenticated_role_checked_and_tenant_scoped() {
    let env = two_tenants();
    let admin_t2 = token(&env, "t2", "admin", &[]);
    let reader_t1 = token(&env, "t1", "reader", &[]);
    let publisher_t1 = token(&env, "t1", "plugin-publisher", &[]);
    let expired = token(&env, "t1", "admin", &["--expires-in-days=-1"]);
    let server = serve(&env);
    for (method, path, roles) in documented_routes(&server.addr, "t1") {
        let call = |token: Option<&str>| request(&server.addr, &method, &path, token, &[], b"{}").0;
        assert_eq!(call(None), 401, "no token: {method} {path}");
        assert_eq!(call(Some(&expired)), 401, "expired: {method} {path}");
        assert_eq!(call(Some(&admin_t2)), 404, "another tenant's admin: {method} {path}");
        if !roles.contains("reader") {
            assert_eq!(call(Some(&reader_t1)), 403, "a reader may not {method} {path}");
        }
        if !roles.contains("plugin-publisher") {
            assert_eq!(call(Some(&publisher_t1)), 403, "a plugin publisher may not {method} {path}");
        }
    }
    // The refusals are on the record, under the tenant that was aimed at.
    let audit = env.run(&["audit", "export", "--tenant", "t1"]).ok().stdout;
    assert!(audit.contains("outside its scope") && audit.contains("may not do what needs"), "{audit}");
}

#[test]
fn syncs_plan_approval_quarantine_plugins_tokens_and_audit_over_http() {
    let env = two_tenants_with("[serve]\nauth_failures_per_minute = 1000\n");
    let operator = token(&env, "t1", "operator", &[]);
    let publisher = token(&env, "t1", "plugin-publisher", &[]);
    let admin = token(&env, "t1", "admin", &[]);
    let server = serve(&env);
    let addr = server.addr.clone();
    let users = |tok: &str| get_json(&addr, "/v1/tenants/t1/users?limit=1000", tok).1["total"].as_u64().unwrap_or(0);
    let before = users(&operator);
    assert!(before > 100, "the sample directory is synced: {before}");

    // Remove most users from the directory: a dry run shows the plan, a real
    // run is blocked by the guard-rail with the deletions it would make.
    let ldif = std::fs::read_to_string(env.path().join("dir.ldif")).expect("read");
    let mut people = 0;
    let kept: Vec<&str> = ldif
        .split("\n\n")
        .filter(|e| {
            let person = e.contains("objectClass: inetOrgPerson");
            people += usize::from(person);
            !person || people <= 20
        })
        .collect();
    std::fs::write(env.path().join("dir.ldif"), kept.join("\n\n")).expect("write");
    let (status, dry) = post(&addr, "/v1/tenants/t1/sync?dry_run=true", &operator, b"");
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["status"], "dry-run");
    let planned = dry["counts"]["deletes"].as_u64().unwrap_or(0);
    assert!(planned > 50, "{dry}");
    assert_eq!(users(&operator), before, "a dry run writes nothing");
    let (status, blocked) = post(&addr, "/v1/tenants/t1/sync", &operator, b"");
    assert_eq!(status, 409, "{blocked}");
    assert_eq!(blocked["status"], "blocked");
    let run = blocked["run_id"].as_i64().expect("run id");
    let (_, record) = get_json(&addr, &format!("/v1/tenants/t1/runs/{run}"), &operator);
    assert_eq!(record["summary"]["blocked_deletes"].as_array().map(Vec::len), Some(planned as usize), "{record}");

    // If the directory loses one more user meanwhile, approval refuses: the
    // plan is not the one approved.
    let last_person = kept.iter().rposition(|e| e.contains("objectClass: inetOrgPerson")).expect("a person");
    let fewer: Vec<&str> = kept.iter().enumerate().filter(|(i, _)| *i != last_person).map(|(_, e)| *e).collect();
    std::fs::write(env.path().join("dir.ldif"), fewer.join("\n\n")).expect("write");
    let (status, refused) = post(&addr, &format!("/v1/tenants/t1/runs/{run}/approve"), &operator, b"");
    assert_eq!(status, 409, "{refused}");
    assert!(refused["error"].as_str().unwrap_or("").contains("the plan changed"), "{refused}");
    assert_eq!(users(&operator), before, "nothing deleted");
    // Back to the approved directory: approval applies exactly that plan.
    std::fs::write(env.path().join("dir.ldif"), kept.join("\n\n")).expect("write");
    let (status, applied) = post(&addr, &format!("/v1/tenants/t1/runs/{run}/approve"), &operator, b"");
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["status"], "applied");
    assert_eq!(users(&operator), before - planned);
    let (status, again) = post(&addr, &format!("/v1/tenants/t1/runs/{run}/approve"), &operator, b"");
    assert_eq!(status, 409, "a run approves once: {again}");

    // Quarantine: list and a clear 404 for an anchor that is not there.
    let (status, q) = get_json(&addr, "/v1/tenants/t1/quarantine", &operator);
    assert_eq!(status, 200);
    assert!(q["data"].is_array());
    assert_eq!(post(&addr, "/v1/tenants/t1/quarantine/nope/resolve?action=dismiss", &operator, b"").0, 404);

    // Plugins: upload (validated), list, roll back.
    let wasm = std::fs::read(plugin_wasm("uppercase_mapper")).expect("plugin");
    let (status, added) = post(&addr, "/v1/tenants/t1/plugins?kind=mapper", &publisher, &wasm);
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["activated"], true);
    let (status, rejected) = post(&addr, "/v1/tenants/t1/plugins?kind=mapper", &publisher, b"not a component");
    assert_eq!(status, 422, "{rejected}");
    let (status, second) = post(&addr, "/v1/tenants/t1/plugins?kind=mapper", &publisher, &wasm);
    assert_eq!(status, 201, "{second}");
    let (status, _) = post(&addr, "/v1/tenants/t1/plugins/mapper/1/activate", &publisher, b"");
    assert_eq!(status, 200);
    let (_, plugins) = get_json(&addr, "/v1/tenants/t1/plugins", &operator);
    let active: Vec<i64> = plugins["data"]
        .as_array()
        .expect("plugins")
        .iter()
        .filter(|p| p["active"] == true)
        .filter_map(|p| p["version"].as_i64())
        .collect();
    assert_eq!(active, vec![1], "{plugins}");
    assert_eq!(post(&addr, "/v1/tenants/t1/plugins/mapper/9/activate", &publisher, b"").0, 404);

    // Tokens: an admin creates one for this tenant, it works, revoked it does not.
    let (status, created) =
        post(&addr, "/v1/tenants/t1/tokens", &admin, br#"{"name":"ci","role":"reader","expires_in_days":1}"#);
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().expect("secret shown once").to_string();
    assert_eq!(created["token"]["tenants"], serde_json::json!(["t1"]));
    assert_eq!(get_json(&addr, "/v1/tenants/t1/users", &secret).0, 200);
    let (_, listed) = get_json(&addr, "/v1/tenants/t1/tokens", &admin);
    assert!(!listed.to_string().contains(&secret), "secrets are never listed");
    let id = created["token"]["id"].as_str().expect("id");
    let (status, _, _) = request(&addr, "DELETE", &format!("/v1/tenants/t1/tokens/{id}"), Some(&admin), &[], b"");
    assert_eq!(status, 200);
    assert_eq!(get_json(&addr, "/v1/tenants/t1/users", &secret).0, 401);

    // The audit trail has all of it, attributed to the tokens.
    let (status, audit) = get_json(&addr, "/v1/tenants/t1/audit", &admin);
    assert_eq!(status, 200);
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["kind"] == "admin")
        .filter_map(|r| r["detail"]["action"].as_str())
        .collect();
    for expected in ["sync", "plan.approve", "plugin.add", "plugin.activate", "token.create", "token.revoke"] {
        assert!(actions.contains(&expected), "{expected} missing from {actions:?}");
    }
    assert!(audit.to_string().contains("\"actor\":\"token:"), "attributed to tokens");
    env.run(&["audit", "verify"]).ok();
}

#[test]
fn the_api_serves_tls_from_certificate_files() {
    let env = two_tenants();
    let dir = env.path();
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=roster-api"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(dir.join("api-key.pem"))
        .arg("-out")
        .arg(dir.join("api-cert.pem"))
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = std::fs::read_to_string(env.config_path()).expect("config");
    env.write_config(&cfg.replace("[serve]\n", "[serve]\ntls_cert = \"api-cert.pem\"\ntls_key = \"api-key.pem\"\n"));
    let reader = token(&env, "t1", "reader", &[]);
    let server = serve(&env);

    let https = |path: &str, token: &str| -> String {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-verify_return_error", "-verify_ip", "127.0.0.1", "-connect", &server.addr])
            .arg("-CAfile")
            .arg(dir.join("api-cert.pem"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl s_client");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
            server.addr
        );
        child.stdin.as_mut().expect("stdin").write_all(req.as_bytes()).expect("send");
        let out = child.wait_with_output().expect("s_client");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let reply = https("/v1/tenants/t1/users?limit=1", &reader);
    assert!(reply.starts_with("HTTP/1.1 200"), "verified TLS, then HTTP: {reply}");
    assert!(https("/v1/tenants/t1/users", "wrong").starts_with("HTTP/1.1 401"));
    // Plain HTTP to the TLS port gets nowhere.
    let (status, _, _) = request(&server.addr, "GET", "/healthz", None, &[], &[]);
    assert_eq!(status, 0, "no plain HTTP answer on the TLS port");

    // Half a TLS configuration is an error that says so.
    env.write_config(&cfg.replace("[serve]\n", "[serve]\ntls_cert = \"api-cert.pem\"\n"));
    let half = env.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert_ne!(half.code, 0);
    assert!(half.stderr.contains("tls_cert and tls_key go together"), "{}", half.stderr);
}
