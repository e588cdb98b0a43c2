//! The HTTP API of `roster serve`: tokens scoped per tenant on every route,
//! the events feed, REST reads, and the SCIM 2.0 service provider (filters,
//! paging, sorting, attribute selection, ETags), checked with the independent
//! compliance checker `scim2-tester`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;

use serde_json::Value;

use crate::support::{Env, repo_root};

pub struct Server {
    child: std::process::Child,
    pub addr: String,
    _out: BufReader<std::process::ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn serve(env: &Env) -> Server {
    let mut child = env
        .cmd()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("line");
    let addr = line.split("://").nth(1).and_then(|r| r.split('/').next()).expect("address").to_string();
    Server { child, addr, _out: out }
}

/// (status, headers, body)
pub fn get(addr: &str, path: &str, token: Option<&str>, extra: &[(&str, &str)]) -> (u16, String, String) {
    request(addr, "GET", path, token, extra, &[])
}

/// (status, headers, body) of any request.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).expect("send");
    s.write_all(body).expect("send body");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

pub fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

pub fn two_tenants() -> Env {
    two_tenants_with("[serve]\nauth_failures_per_minute = 1000\n")
}

pub fn two_tenants_with(serve: &str) -> Env {
    let env = Env::new("");
    std::fs::copy(repo_root().join("examples/directory.ldif"), env.path().join("dir.ldif")).expect("copy");
    env.write_config(
        &(serve.to_string() + "[store]\npath = \"data\"\n[[tenant]]\nid = \"t1\"\n[[tenant.source]]\nname = \"files\"\nkind = \"ldif\"\npath = \"dir.ldif\"\n\
         [[tenant]]\nid = \"t2\"\n[[tenant.source]]\nname = \"files\"\nkind = \"ldif\"\npath = \"dir.ldif\"\n"),
    );
    env.run(&["sync"]).ok();
    env
}

pub fn token(env: &Env, tenant: &str, role: &str, extra: &[&str]) -> String {
    let mut args = vec!["token", "create", "--name", "test", "--tenant", tenant, "--role", role];
    args.extend_from_slice(extra);
    env.run(&args).ok().stdout.trim().to_string()
}

#[test]
fn every_route_is_authenticated_and_scoped_to_its_tenant() {
    let env = two_tenants();
    let t1 = token(&env, "t1", "reader", &[]);
    let t2 = token(&env, "t2", "reader", &[]);
    let publisher = token(&env, "t1", "plugin-publisher", &[]);
    let expired = token(&env, "t1", "reader", &["--expires-in-days=-1"]);
    let revoked = token(&env, "t1", "reader", &[]);
    let list = env.run(&["token", "list", "--json"]).ok().json();
    let revoked_id = list.as_array().and_then(|l| l.last()).and_then(|t| t["id"].as_str()).expect("id").to_string();
    env.run(&["token", "revoke", &revoked_id]).ok();
    assert!(!env.run(&["token", "list"]).ok().stdout.contains(&t1), "secrets are never shown again");

    let server = serve(&env);
    let user_id = json(&get(&server.addr, "/v1/tenants/t1/users?limit=1", Some(&t1), &[]).2)["data"][0]["id"]
        .as_str()
        .expect("a user")
        .to_string();
    let routes = |t: &str| -> Vec<String> {
        vec![
            format!("/v1/tenants/{t}/events?after=0&limit=5"),
            format!("/v1/tenants/{t}/users"),
            format!("/v1/tenants/{t}/groups"),
            format!("/v1/tenants/{t}/users/{user_id}"),
            format!("/scim/v2/{t}/Users"),
            format!("/scim/v2/{t}/Groups"),
            format!("/scim/v2/{t}/Users/{user_id}"),
            format!("/scim/v2/{t}/ServiceProviderConfig"),
            format!("/scim/v2/{t}/ResourceTypes"),
            format!("/scim/v2/{t}/Schemas"),
        ]
    };
    for route in routes("t1") {
        assert_eq!(get(&server.addr, &route, Some(&t1), &[]).0, 200, "{route}");
        assert_eq!(get(&server.addr, &route, None, &[]).0, 401, "no token: {route}");
        assert_eq!(get(&server.addr, &route, Some(&expired), &[]).0, 401, "expired: {route}");
        assert_eq!(get(&server.addr, &route, Some(&revoked), &[]).0, 401, "revoked: {route}");
        assert_eq!(get(&server.addr, &route, Some(&publisher), &[]).0, 403, "role: {route}");
        assert_eq!(get(&server.addr, &route, Some(&t2), &[]).0, 404, "another tenant's token: {route}");
    }
    for route in routes("t2") {
        assert_eq!(get(&server.addr, &route.replace(&user_id, "x"), Some(&t1), &[]).0, 404, "{route}");
    }
    assert_eq!(get(&server.addr, "/v1/tenants/nope/users", Some(&t1), &[]).0, 404);

    // Refused: plain HTTP on a non-loopback address.
    let refused = env.run(&["serve", "--listen", "0.0.0.0:0"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("refusing to serve the API over plain HTTP"), "{}", refused.stderr);
}

#[test]
fn failed_authentication_is_rate_limited() {
    let env = two_tenants_with("[serve]\nauth_failures_per_minute = 3\n");
    let good = token(&env, "t1", "reader", &[]);
    let server = serve(&env);
    for _ in 0..3 {
        assert_eq!(get(&server.addr, "/scim/v2/t1/Users", Some("rst_guess"), &[]).0, 401);
    }
    assert_eq!(get(&server.addr, "/scim/v2/t1/Users", Some("rst_guess"), &[]).0, 429, "the fourth failure in a minute");
    assert_eq!(get(&server.addr, "/scim/v2/t1/Users", Some(&good), &[]).0, 429, "the address is held off for a while");
    // Each failure is a security record in the tenant's audit trail.
    let audit = env.run(&["audit", "export", "--tenant", "t1"]).ok();
    let security = audit.stdout.lines().filter(|l| l.contains("\"kind\":\"security\"")).count();
    assert_eq!(security, 3, "{}", audit.stdout);
    env.run(&["audit", "verify"]).ok();
}

#[test]
fn the_events_feed_and_scim_queries_return_the_right_sets() {
    let env = two_tenants();
    let tok = token(&env, "t1", "reader", &[]);
    let server = serve(&env);
    let a = &server.addr;

    // Events: in order, from any cursor.
    let page = json(&get(a, "/v1/tenants/t1/events?after=0&limit=10", Some(&tok), &[]).2);
    let seqs: Vec<i64> = page["data"].as_array().into_iter().flatten().filter_map(|e| e["sequence"].as_i64()).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    assert_eq!(page["next_cursor"], 10);
    let next = json(&get(a, "/v1/tenants/t1/events?after=10&limit=5", Some(&tok), &[]).2);
    assert_eq!(next["data"][0]["sequence"], 11);

    // SCIM: compare filters with the store.
    let users = env.users("t1");
    let names: Vec<String> = users.iter().filter_map(|u| u["userName"].as_str().map(str::to_string)).collect();
    let scim = |q: &str| json(&get(a, &format!("/scim/v2/t1/Users?{q}"), Some(&tok), &[]).2);
    let enc = |s: &str| s.replace(' ', "%20").replace('"', "%22");
    let one = &names[7];
    assert_eq!(scim(&format!("filter={}", enc(&format!("userName eq \"{}\"", one.to_uppercase()))))["totalResults"], 1);
    let starts_a = names.iter().filter(|n| n.starts_with('a')).count();
    assert_eq!(scim(&format!("filter={}", enc("userName sw \"a\"")))["totalResults"], starts_a);
    assert_eq!(scim(&format!("filter={}", enc("not (userName sw \"a\")")))["totalResults"], names.len() - starts_a);
    let with_mail = users.iter().filter(|u| u["emails"].as_array().is_some_and(|e| !e.is_empty())).count();
    assert_eq!(scim(&format!("filter={}", enc("emails pr")))["totalResults"], with_mail);
    assert_eq!(
        scim(&format!("filter={}", enc("userName sw \"a\" or userName sw \"b\"")))["totalResults"],
        names.iter().filter(|n| n.starts_with('a') || n.starts_with('b')).count()
    );
    assert_eq!(
        get(a, &format!("/scim/v2/t1/Users?filter={}", enc("userName eq")), Some(&tok), &[]).0,
        400,
        "invalidFilter"
    );
    // Paging and sorting.
    let sorted = scim("sortBy=userName&startIndex=3&count=4&attributes=userName");
    let mut expected: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
    expected.sort();
    let got: Vec<String> = sorted["Resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["userName"].as_str().map(str::to_lowercase))
        .collect();
    assert_eq!(got, expected[2..6].to_vec());
    assert_eq!(sorted["startIndex"], 3);
    assert!(sorted["Resources"][0].get("emails").is_none(), "attributes= keeps only what was asked");
    // ETags.
    let id = users[0]["id"].as_str().expect("id");
    let (status, head, _) = get(a, &format!("/scim/v2/t1/Users/{id}"), Some(&tok), &[]);
    assert_eq!(status, 200);
    let etag = head.lines().find_map(|l| l.strip_prefix("etag: ")).expect("ETag").trim().to_string();
    assert_eq!(get(a, &format!("/scim/v2/t1/Users/{id}"), Some(&tok), &[("If-None-Match", &etag)]).0, 304);
    let groups = json(&get(a, "/scim/v2/t1/Groups?count=1000", Some(&tok), &[]).2);
    let total_groups = env.groups("t1").len();
    assert_eq!(groups["totalResults"], total_groups);
}

#[test]
fn scim2_tester_passes_every_check_a_read_only_provider_can() {
    let env = two_tenants();
    let tok = token(&env, "t1", "reader", &[]);
    let server = serve(&env);
    let python = crate::support::peers::python_with(&["scim2_tester", "scim2_cli"]);
    let scim2 = python.parent().expect("bin").join("scim2");
    let out = std::process::Command::new(scim2)
        .args(["-u", &format!("http://{}/scim/v2/t1", server.addr), "test"])
        .env("SCIM_CLI_HEADERS", format!("Authorization: Bearer {tok}"))
        .output()
        .expect("scim2 test");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let passed: BTreeSet<&str> = text.lines().filter_map(|l| l.strip_prefix("SUCCESS ")).collect();
    for check in [
        "service_provider_config_endpoint",
        "query_all_resource_types",
        "query_resource_type_by_id",
        "query_all_schemas",
        "access_schema_by_id",
        "random_url",
        "resource_types_schema_validation",
    ] {
        assert!(passed.contains(check), "{check} should pass:\n{text}");
    }
    // What fails is what needs writing: every ERROR is the read-only refusal.
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("ERROR ") {
            let detail = lines.get(i + 1).copied().unwrap_or("");
            assert!(detail.contains("read-only"), "unexpected failure {l}: {detail}\n{text}");
        }
    }
}
