//! Vendor connectors (`kind = "plugin"`): the example SCIM connector against
//! an independent SCIM server and against Roster's own SCIM endpoint, and the
//! host's egress policy against deliberately hostile connectors — off the
//! allowlist, private addresses, header and secret grabs, hangs and crashes.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::peers::ScimServer;
use crate::support::{Env, plugin_wasm, repo_root};

const TOKEN: &str = "connector-token-for-tests";

/// SCIM attributes → the application's, for a tenant reading a SCIM source.
const SCIM_MAPPING: &str = "[tenant.mapping]\nuserName = \"lower(userName)\"\n\"name.givenName\" = \"name.givenName\"\n\
    \"name.familyName\" = \"name.familyName\"\nemail = \"lower(emails.primary)\"\ndisplayName = \"coalesce(displayName, userName)\"\n";

/// A tenant reading `base_url` with the example SCIM connector.
fn scim_tenant(id: &str, base_url: &str, host: &str, extra: &str) -> String {
    format!(
        "[[tenant]]\nid = \"{id}\"\n[[tenant.source]]\nname = \"scim\"\nkind = \"plugin\"\nplugin = \"{}\"\n\
         allow_hosts = [\"{host}\"]\nallow_private_addresses = true\nallow_plain_http = true\n\
         auth = {{ type = \"bearer\", token = {{ env = \"ROSTER_TEST_SCIM_TOKEN\" }} }}\n{extra}\
         [tenant.source.config]\nbase_url = \"{base_url}\"\npage_size = 50\n{SCIM_MAPPING}\
         [tenant.safety]\nmax_delete_percent = 100\n",
        plugin_wasm("scim_source").display()
    )
}

fn sync_with_token(env: &Env, token: &str, extra: &[&str]) -> (crate::support::Run, Value) {
    let mut args = vec!["sync", "--json"];
    args.extend_from_slice(extra);
    let run = env.run_env(&args, &[("ROSTER_TEST_SCIM_TOKEN", token)]);
    let report = if run.stdout.trim().is_empty() { Value::Null } else { run.json()[0].clone() };
    (run, report)
}

fn user_names(env: &Env, tenant: &str) -> BTreeSet<String> {
    env.users(tenant).iter().filter_map(|u| u["userName"].as_str().map(str::to_string)).collect()
}

#[test]
fn the_scim_connector_reads_thousands_of_users_over_many_pages_and_then_only_what_changed() {
    let server = ScimServer::start(TOKEN);
    let ids = server.load_users(2_500);
    // 20 groups of 100 consecutive users each.
    let groups: Vec<String> =
        (0..20).map(|g| server.create_group(&format!("team {g}"), &ids[g * 100..(g + 1) * 100])).collect();
    let env = Env::new("");
    env.write_config(&format!(
        "[store]\npath = \"data\"\n{}",
        scim_tenant("hr", &format!("http://{}", server.addr), &server.addr, "")
    ));

    let (run, report) = sync_with_token(&env, TOKEN, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let source = &report["sources"][0];
    assert_eq!(source["read"]["users"], 2_500, "{report}");
    assert_eq!(source["read"]["groups"], 20, "{report}");
    // 50 per page: 50 pages of users, 1 of groups, at the least.
    assert!(source["read"]["requests"].as_u64().unwrap_or(0) >= 51, "{report}");
    let names = user_names(&env, "hr");
    assert_eq!(names.len(), 2_500);
    assert!(names.contains("user0") && names.contains("user2499"));
    let stored_groups = env.groups("hr");
    assert_eq!(stored_groups.len(), 20);
    let team3 = stored_groups.iter().find(|g| g["displayName"] == "team 3").expect("team 3");
    assert_eq!(team3["members"].as_array().map(Vec::len), Some(100), "{team3}");
    let alice = crate::support::user(&env.users("hr"), "user7").cloned().expect("user7");
    assert_eq!(alice["name"]["givenName"], "Jörg", "non-ASCII survives: {alice}");
    assert_eq!(alice["emails"][0]["value"], "user7@example.org");

    // `source test` runs the connector's check and shows what it says about itself.
    let check = env
        .run_env(&["source", "test", "--tenant", "hr", "--source", "scim"], &[("ROSTER_TEST_SCIM_TOKEN", TOKEN)])
        .ok();
    assert!(check.stdout.contains("scim-source") && check.stdout.contains("delta: yes"), "{}", check.stdout);
    assert!(check.stdout.contains("2500 users"), "{}", check.stdout);
    assert!(check.stdout.contains("configuration schema") && check.stdout.contains("base_url"), "{}", check.stdout);

    // A delta: only the users modified since the last read come back.
    std::thread::sleep(Duration::from_millis(1100));
    server.rename_user(&ids[5], "renamed5");
    server.rename_user(&ids[6], "renamed6");
    server.delete(&format!("Users/{}", ids[9]));
    let (run, report) = sync_with_token(&env, TOKEN, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let read = &report["sources"][0]["read"];
    assert_eq!(read["mode"], "incremental", "{report}");
    assert_eq!(read["users"], 2, "only the two modified users are read: {report}");
    let names = user_names(&env, "hr");
    assert!(names.contains("renamed5") && names.contains("renamed6") && !names.contains("user5"));
    // SCIM cannot report deletes in a delta: the user stays until a full read.
    assert!(names.contains("user9"));
    // Another configuration of the connector: its old delta token means nothing.
    env.write_config(&format!(
        "[store]\npath = \"data\"\n{}",
        scim_tenant("hr", &format!("http://{}", server.addr), &server.addr, "")
            .replace("page_size = 50", "page_size = 200")
    ));
    let (run, report) = sync_with_token(&env, TOKEN, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(report["sources"][0]["read"]["mode"], "full", "{report}");
    assert_eq!(report["counts"]["deletes"], 1, "a full read finds the delete: {report}");
    assert!(!user_names(&env, "hr").contains("user9"));
    let _ = groups;

    // A wrong token: the server refuses, the run fails, nothing is deleted.
    let (run, _) = sync_with_token(&env, "not-the-token", &["--full"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(run.stderr.contains("authentication"), "{}", run.stderr);
    assert!(!run.stderr.contains("not-the-token"), "the secret is never printed: {}", run.stderr);
    assert_eq!(user_names(&env, "hr").len(), 2_499);

    // A response over max_response_kb is refused by the host, not read.
    env.write_config(&format!(
        "[store]\npath = \"data\"\n{}",
        scim_tenant("hr", &format!("http://{}", server.addr), &server.addr, "max_response_kb = 4\n")
    ));
    let (run, _) = sync_with_token(&env, TOKEN, &["--full"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("max_response_kb = 4"), "{}", run.stderr);
    assert_eq!(user_names(&env, "hr").len(), 2_499, "a failed read deletes nothing");
}

#[test]
fn the_scim_connector_reads_roster_own_scim_endpoint() {
    let env = Env::new("");
    std::fs::copy(repo_root().join("examples/directory.ldif"), env.path().join("dir.ldif")).expect("copy");
    let upstream = "[serve]\nauth_failures_per_minute = 1000\n[store]\npath = \"data\"\n[[tenant]]\nid = \"hq\"\n\
        [[tenant.source]]\nname = \"files\"\nkind = \"ldif\"\npath = \"dir.ldif\"\n";
    env.write_config(upstream);
    env.run(&["sync"]).ok();
    let token = crate::api::token(&env, "hq", "reader", &[]);
    let server = crate::api::serve(&env);
    let base = format!("http://{}/scim/v2/hq", server.addr);
    env.write_config(&format!("{upstream}{}", scim_tenant("branch", &base, &server.addr, "")));

    let (run, report) = sync_with_token(&env, &token, &["--tenant", "branch"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(report["sources"][0]["read"]["mode"], "full", "{report}");
    let upstream_users = user_names(&env, "hq");
    assert!(upstream_users.len() >= 100, "the sample directory has users");
    assert_eq!(user_names(&env, "branch"), upstream_users, "the branch sees exactly the users Roster serves");
    assert_eq!(env.groups("branch").len(), env.groups("hq").len());
    let members =
        |t: &str| -> usize { env.groups(t).iter().map(|g| g["members"].as_array().map(Vec::len).unwrap_or(0)).sum() };
    assert_eq!(members("branch"), members("hq"), "memberships come across too");

    // Nothing changed upstream: the next read is a delta that finds nothing.
    let (run, report) = sync_with_token(&env, &token, &["--tenant", "branch"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(report["status"], "no-changes", "{report}");
}

/// An OAuth token response: the receiver doubles as a token endpoint.
const TOKEN_RESPONSE: &str = r#"{"access_token":"tok-from-endpoint","token_type":"Bearer","expires_in":3600}"#;

/// An HTTP server that answers every request with `200` and `answer` (or
/// never, for `None`), and keeps what it was sent (request line and headers).
struct Receiver {
    addr: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn start(answer: Option<&'static str>) -> Receiver {
        Self::start_unavailable_first(0, answer)
    }

    /// Answers `503 Service Unavailable` with `Retry-After: 1` to the first
    /// `unavailable` requests, then as [`Receiver::start`].
    fn start_unavailable_first(unavailable: usize, answer: Option<&'static str>) -> Receiver {
        Self::start_with(unavailable, "200 OK", answer)
    }

    /// Answers every request with `status` (e.g. "401 Unauthorized") and `body`.
    fn start_with(unavailable: usize, status: &'static str, answer: Option<&'static str>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(&stream);
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    let nth = {
                        let mut seen = log.lock().unwrap_or_else(|p| p.into_inner());
                        seen.push(head);
                        seen.len()
                    };
                    if nth <= unavailable {
                        let mut s = &stream;
                        let _ = s.write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    } else if let Some(body) = answer {
                        let mut s = &stream;
                        let _ = write!(
                            s,
                            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = s.write_all(body.as_bytes());
                    } else {
                        // Never answer: hold the connection until the client gives up.
                        let mut sink = Vec::new();
                        let _ = (&stream).read_to_end(&mut sink);
                    }
                });
            }
        });
        Receiver { addr, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A tenant whose source is the hostile connector doing `behaviour`.
fn hostile(id: &str, behaviour: &str, url: &str, policy: &str) -> String {
    format!(
        "[[tenant]]\nid = \"{id}\"\n[tenant.mapping]\nuserName = \"userName\"\n[tenant.safety]\nmax_delete_percent = 100\n\
         [[tenant.source]]\nname = \"vendor\"\nkind = \"plugin\"\nplugin = \"{}\"\n{policy}\
         [tenant.source.config]\nbehaviour = \"{behaviour}\"\nurl = \"{url}\"\n",
        plugin_wasm("hostile_connector").display()
    )
}

#[test]
fn the_host_refuses_requests_outside_the_source_policy_and_injects_credentials_itself() {
    let receiver = Receiver::start(Some(TOKEN_RESPONSE));
    let port = receiver.addr.rsplit(':').next().expect("port").to_string();
    let env = Env::new("");
    std::fs::write(env.path().join("vendor-token"), "s3cr3t-vendor-token").expect("token file");
    let auth = "auth = { type = \"bearer\", token = { file = \"vendor-token\" } }\n";
    let cases: Vec<(&str, String, String, &str)> = vec![
        // (behaviour, url, policy, what the error must say)
        (
            "fetch",
            format!("http://127.0.0.1:{port}/x"),
            format!(
                "allow_hosts = [\"api.example.com\"]\nallow_plain_http = true\nallow_private_addresses = true\n{auth}"
            ),
            "is not in allow_hosts",
        ),
        (
            "fetch",
            format!("http://127.0.0.1:{port}/x"),
            format!("allow_hosts = [\"127.0.0.1:{port}\"]\nallow_plain_http = true\n{auth}"),
            "127.0.0.1 is a loopback address",
        ),
        (
            "fetch",
            format!("http://localhost:{port}/x"),
            format!("allow_hosts = [\"localhost\"]\nallow_plain_http = true\n{auth}"),
            "resolves to",
        ),
        (
            "fetch",
            "http://169.254.169.254/latest/meta-data/".to_string(),
            format!("allow_hosts = [\"169.254.169.254\"]\nallow_plain_http = true\n{auth}"),
            "link-local",
        ),
        (
            "fetch",
            format!("http://127.0.0.1:{port}/x"),
            format!("allow_hosts = [\"127.0.0.1:{port}\"]\nallow_private_addresses = true\n{auth}"),
            "plain http:// is not allowed",
        ),
        (
            "set-authorization",
            format!("http://127.0.0.1:{port}/x"),
            format!(
                "allow_hosts = [\"127.0.0.1:{port}\"]\nallow_private_addresses = true\nallow_plain_http = true\n{auth}"
            ),
            "header 'Authorization' is set by the host",
        ),
    ];
    for (behaviour, url, policy, expected) in &cases {
        env.write_config(&format!("[store]\npath = \"data\"\n{}", hostile("t", behaviour, url, policy)));
        let run = env.run(&["sync"]);
        assert_ne!(run.code, 0, "{behaviour} {url} must fail\n{}", run.stdout);
        assert!(run.stderr.contains(expected), "{behaviour} {url}: expected '{expected}' in:\n{}", run.stderr);
        assert!(run.stderr.contains("refused"), "{}", run.stderr);
    }
    assert!(receiver.requests().is_empty(), "no refused request reached the server: {:?}", receiver.requests());

    // Inside the policy: the request goes out, with the credential the host added.
    env.write_config(&format!(
        "[store]\npath = \"data\"\n{}",
        hostile(
            "t",
            "fetch",
            &format!("http://127.0.0.1:{port}/x"),
            &format!(
                "allow_hosts = [\"127.0.0.1:{port}\"]\nallow_private_addresses = true\nallow_plain_http = true\n{auth}"
            )
        )
    ));
    env.run(&["sync"]).ok();
    let seen = receiver.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].starts_with("GET /x "), "{}", seen[0]);
    assert!(seen[0].to_ascii_lowercase().contains("authorization: bearer s3cr3t-vendor-token"), "{}", seen[0]);
    let users = env.users("t");
    assert_eq!(users.len(), 1, "{users:?}");

    // OAuth client credentials: the host fetches the token and sends it.
    env.write_config(&format!(
        "[store]\npath = \"data\"\n{}",
        hostile(
            "t",
            "fetch",
            &format!("http://127.0.0.1:{port}/y"),
            &format!(
                "allow_hosts = [\"127.0.0.1:{port}\"]\nallow_private_addresses = true\nallow_plain_http = true\n\
                 auth = {{ type = \"oauth-client-credentials\", token_url = \"http://127.0.0.1:{port}/token\", client_id = \"roster\", client_secret = {{ file = \"vendor-token\" }} }}\n"
            )
        )
    ));
    env.run(&["sync"]).ok();
    let seen = receiver.requests();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[1].starts_with("POST /token "), "{}", seen[1]);
    assert!(
        seen[2].starts_with("GET /y ")
            && seen[2].to_ascii_lowercase().contains("authorization: bearer tok-from-endpoint"),
        "{}",
        seen[2]
    );

    // Basic authentication, added by the host.
    std::fs::write(env.path().join("vendor-password"), "pa55word").expect("password file");
    env.write_config(&format!(
        "[store]\npath = \"data\"\n{}",
        hostile(
            "t",
            "fetch",
            &format!("http://127.0.0.1:{port}/z"),
            &format!(
                "allow_hosts = [\"127.0.0.1:{port}\"]\nallow_private_addresses = true\nallow_plain_http = true\n\
                 auth = {{ type = \"basic\", username = \"roster\", password = {{ file = \"vendor-password\" }} }}\n"
            )
        )
    ));
    env.run(&["sync"]).ok();
    let seen = receiver.requests();
    // base64("roster:pa55word")
    assert!(seen[3].to_ascii_lowercase().contains("authorization: basic cm9zdgvyonbhntv3b3jk"), "{}", seen[3]);

    // The environment holds a secret; the connector sees none of it.
    env.write_config(&format!("[store]\npath = \"data\"\n{}", hostile("t", "env", "", "")));
    let run = env.run_env(&["sync"], &[("ROSTER_TEST_LEAK", "do-not-leak")]).ok();
    let _ = run;
    let raw = env.run(&["users", "list", "--tenant", "t", "--json"]).ok().stdout;
    assert!(!raw.contains("do-not-leak"), "{raw}");

    // A connector that reads files is refused at load, by name.
    env.write_config(&format!(
        "[store]\npath = \"data\"\n[[tenant]]\nid = \"t\"\n[[tenant.source]]\nname = \"vendor\"\nkind = \"plugin\"\nplugin = \"{}\"\n\
         [tenant.source.config]\npath = \"vendor-token\"\n",
        plugin_wasm("secret_reader").display()
    ));
    let run = env.run(&["sync"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("wasi:filesystem") && run.stderr.contains("is refused"), "{}", run.stderr);
    assert!(!run.stderr.contains("s3cr3t"), "{}", run.stderr);
    let check = env.run(&["config", "check"]);
    assert_ne!(check.code, 0, "config check reports it too");
    assert!(check.stderr.contains("wasi:filesystem"), "{}", check.stderr);
}

#[test]
fn an_unavailable_server_is_retried_after_retry_after_within_the_deadline() {
    let flaky = Receiver::start_unavailable_first(1, Some(TOKEN_RESPONSE));
    let port = flaky.addr.rsplit(':').next().expect("port").to_string();
    let env = Env::new("");
    let policy = |retries: u32| {
        format!(
            "allow_hosts = [\"127.0.0.1:{port}\"]\nallow_private_addresses = true\nallow_plain_http = true\nmax_retries = {retries}\n"
        )
    };
    let config = |retries: u32| {
        format!(
            "[store]\npath = \"data\"\n{}",
            hostile("t", "fetch", &format!("http://127.0.0.1:{port}/r"), &policy(retries))
        )
        .replace("userName = \"userName\"\n", "userName = \"userName\"\ndisplayName = \"status\"\n")
    };
    env.write_config(&config(2));
    env.run(&["sync"]).ok();
    assert_eq!(flaky.requests().len(), 2, "one 503, then the retry");
    assert_eq!(env.users("t")[0]["displayName"], "200", "the connector saw the answer to the retry");

    // Without retries the connector gets the 503 itself.
    let flaky = Receiver::start_unavailable_first(1, Some(TOKEN_RESPONSE));
    let port2 = flaky.addr.rsplit(':').next().expect("port").to_string();
    env.write_config(&config(0).replace(&port, &port2));
    env.run(&["sync"]).ok();
    assert_eq!(flaky.requests().len(), 1);
    assert_eq!(env.users("t")[0]["displayName"], "503");
}

#[test]
fn a_hanging_connector_is_cut_off_by_its_deadline() {
    let env = Env::new("");
    // Spinning in WebAssembly: the epoch deadline stops it.
    env.write_config(&format!("[store]\npath = \"data\"\n{}", hostile("t", "spin", "", "call_timeout_secs = 1\n")));
    let started = Instant::now();
    let run = env.run(&["sync"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("deadline"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(30), "stopped, not left running");

    // Waiting on a server that never answers: the request ends with the call.
    let silent = Receiver::start(None);
    let port = silent.addr.rsplit(':').next().expect("port").to_string();
    env.write_config(&format!(
        "[store]\npath = \"data\"\n{}",
        hostile(
            "t",
            "fetch",
            &format!("http://127.0.0.1:{port}/slow"),
            &format!(
                "allow_hosts = [\"127.0.0.1:{port}\"]\nallow_private_addresses = true\nallow_plain_http = true\n\
                 call_timeout_secs = 2\ntimeout_secs = 30\nmax_retries = 0\n"
            )
        )
    ));
    let started = Instant::now();
    let run = env.run(&["sync"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("timeout"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(25), "the 30 s request timeout did not apply: the call's 2 s did");
    assert_eq!(silent.requests().len(), 1);
}

#[test]
fn a_crashing_connector_fails_its_own_tenant_only_and_deletes_nothing() {
    let env = Env::new("");
    let good = hostile("good", "users", "", "");
    let good = good.replace("url = \"\"\n", "url = \"\"\ncount = 250\n");
    let crashing_first = hostile("bad", "users", "", "").replace("url = \"\"\n", "url = \"\"\ncount = 30\n");
    env.write_config(&format!("[store]\npath = \"data\"\n{good}{crashing_first}"));
    env.run(&["sync"]).ok();
    assert_eq!(env.users("bad").len(), 30);

    // Now the bad tenant's connector panics on its third page, every run.
    let crashing = hostile("bad", "panic-on-page", "", "").replace("url = \"\"\n", "url = \"\"\npages = 2\n");
    env.write_config(&format!("[store]\npath = \"data\"\n{good}{crashing}"));
    let run = env.run(&["sync", "--json"]);
    assert_ne!(run.code, 0, "a failed tenant fails the command");
    assert!(run.stderr.contains("panicked") || run.stderr.contains("trapped"), "{}", run.stderr);
    assert!(run.stderr.contains("'bad'"), "the error names the tenant: {}", run.stderr);
    assert_eq!(env.users("good").len(), 250, "the other tenant synced");
    let bad = env.users("bad");
    assert!(bad.len() >= 30, "a crashed read deletes nothing: {}", bad.len());
    let runs = env.runs("good");
    assert!(runs.iter().all(|r| r["status"] != "failed"), "{runs:?}");
}

#[test]
fn under_serve_the_scim_connector_polls_what_changed() {
    let server = ScimServer::start(TOKEN);
    let ids = server.load_users(40);
    let env = Env::new("");
    std::fs::write(env.path().join("scim-token"), TOKEN).expect("token file");
    let tenant = scim_tenant(
        "hr",
        &format!("http://{}", server.addr),
        &server.addr,
        "sync = { mode = \"realtime\", poll_secs = 1 }\n",
    )
    .replace("token = { env = \"ROSTER_TEST_SCIM_TOKEN\" }", "token = { file = \"scim-token\" }");
    env.write_config(&format!("[store]\npath = \"data\"\n{tenant}"));
    let _serve = crate::api::serve(&env);
    let wait_for = |what: &str, done: &dyn Fn(&BTreeSet<String>) -> bool| {
        let started = Instant::now();
        loop {
            let names = user_names(&env, "hr");
            if done(&names) {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{what}: still {} users: {names:?}", names.len());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for("the first read", &|n| n.len() == 40);
    std::thread::sleep(Duration::from_millis(1100));
    server.rename_user(&ids[3], "polled3");
    wait_for("the change", &|n| n.contains("polled3") && !n.contains("user3"));
    let runs = env.runs("hr");
    assert!(runs.len() >= 2, "{runs:?}");
}

#[test]
fn a_scaffolded_connector_builds_as_is_and_reads_through_the_host() {
    let env = Env::new("");
    let run = env
        .cmd()
        .current_dir(env.path())
        .args(["plugin", "new", "--kind", "connector", "my-connector"])
        .output()
        .expect("run");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let wasm = crate::support::build_scaffold(&env.path().join("my-connector"), "my_connector");
    let people = Receiver::start(Some("ada\ngrace\n\nlinus\n"));
    let port = people.addr.rsplit(':').next().expect("port").to_string();
    env.write_config(&format!(
        "[store]\npath = \"data\"\n[[tenant]]\nid = \"t\"\n[tenant.mapping]\nuserName = \"userName\"\n\
         [[tenant.source]]\nname = \"vendor\"\nkind = \"plugin\"\nplugin = \"{}\"\n\
         allow_hosts = [\"127.0.0.1:{port}\"]\nallow_private_addresses = true\nallow_plain_http = true\n\
         [tenant.source.config]\nurl = \"http://127.0.0.1:{port}/people.txt\"\n",
        wasm.display()
    ));
    let check = env.run(&["source", "test", "--tenant", "t", "--source", "vendor"]).ok();
    assert!(check.stdout.contains("my-connector") && check.stdout.contains("answers HTTP 200"), "{}", check.stdout);
    env.run(&["sync"]).ok();
    assert_eq!(user_names(&env, "t"), ["ada", "grace", "linus"].iter().map(|s| s.to_string()).collect());
}

#[test]
fn a_connector_source_gets_the_guard_rails_and_clear_configuration_errors() {
    let env = Env::new("");
    let tenant = |count: u32| {
        hostile("t", "users", "", "")
            .replace("max_delete_percent = 100", "max_delete_percent = 20")
            .replace("url = \"\"\n", &format!("url = \"\"\ncount = {count}\n"))
    };
    env.write_config(&format!("[store]\npath = \"data\"\n{}", tenant(250)));
    env.run(&["sync"]).ok();
    // The vendor's system suddenly lists 20 people: 230 deletes, over 20 %.
    env.write_config(&format!("[store]\npath = \"data\"\n{}", tenant(20)));
    let run = env.run(&["sync"]).code(3);
    assert!(run.stderr.contains("--allow-deletes") || run.stdout.contains("blocked"), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(env.users("t").len(), 250, "nothing deleted until allowed");

    // A URL where a host belongs: refused with the key and its line.
    env.write_config(&format!(
        "[store]\npath = \"data\"\n{}",
        tenant(20).replace("kind = \"plugin\"\n", "kind = \"plugin\"\nallow_hosts = [\"https://api.example.com\"]\n")
    ));
    let run = env.run(&["config", "check"]).code(2);
    assert!(run.stderr.contains("allow_hosts") && run.stderr.contains("not a URL"), "{}", run.stderr);
    let line = std::fs::read_to_string(env.config_path())
        .expect("config")
        .lines()
        .position(|l| l.starts_with("allow_hosts"))
        .expect("the line")
        + 1;
    assert!(run.stderr.contains(&format!("line {line},")), "names the key's line {line}: {}", run.stderr);
}
