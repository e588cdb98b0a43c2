//! Secrets stay where their references point: an LDAP bind password, a Graph
//! client secret (and the access tokens it buys), webhook and notification
//! signing keys, an SMTP password and a SCIM push token never show up in any
//! command's stdout or stderr (at `-vvv`, text and JSON logs), in plans, in the
//! store's files or in the audit trail; a wrong secret is reported by where it
//! is configured, never by its value; a plaintext secret in the TOML is refused
//! without being echoed.
//!
//! Every secret is searched for as it is and in the shapes a careless log line
//! would give it: hex, a Debug'd byte slice, base64 (any alignment).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::support::graph::{CLIENT_ID, CLIENT_SECRET, GraphServer, TENANT};
use crate::support::slapd::{Slapd, gen_ldif};
use crate::support::{Env, Run};

const LDAP_PW: &str = "Sekr1t-ldap-4c1d";
const HOOK_SECRET: &str = "Sekr1t-hook-9e27";
const NOTIFY_SECRET: &str = "Sekr1t-notify-51b0";
const SMTP_PW: &str = "Sekr1t-smtp-d3a8";
const SCIM_TOKEN: &str = "Sekr1t-scim-77f2";
/// Every access token the Graph test server issues ends in `.test-signature-N`.
const GRAPH_TOKEN_MARK: &str = ".test-signature-";
/// The Graph client secret comes from the environment (the LDAP password from a file).
const GRAPH_ENV: &str = "ROSTER_SECRETS_TEST_GRAPH_CLIENT_SECRET";

const LDAP_USERS: usize = 40;
const LDAP_GROUPS: usize = 6;
const GRAPH_USERS: usize = 25;
const GRAPH_GROUPS: usize = 4;

/// Maximum verbosity, JSON logs (the global flags of engine/src/cli/mod.rs).
const LOUD_JSON: &[&str] = &["-vvv", "--log-format", "json"];
/// Maximum verbosity, text logs.
const LOUD_TEXT: &[&str] = &["-vvv", "--log-format", "text"];

// ------------------------------------------------------------------ leak search

/// A secret and what it is, for the report.
struct Needle {
    what: String,
    value: String,
}

fn needle(what: &str, value: &str) -> Needle {
    Needle { what: what.to_string(), value: value.to_string() }
}

/// The byte strings that betray `secret`: as is, hex, a `{:?}` of its bytes, and
/// the part of a base64 (standard or URL-safe) encoding that depends on the
/// secret alone, for each of the three alignments it can have in a longer input.
fn shapes(secret: &str) -> Vec<(&'static str, Vec<u8>)> {
    let bytes = secret.as_bytes();
    let mut out = vec![
        ("plain", bytes.to_vec()),
        ("hex", hex::encode(bytes).into_bytes()),
        ("HEX", hex::encode_upper(bytes).into_bytes()),
        ("Debug bytes", format!("{bytes:?}").trim_matches(['[', ']']).as_bytes().to_vec()),
    ];
    for (name, engine) in [
        ("base64", &base64::engine::general_purpose::STANDARD_NO_PAD),
        ("base64url", &base64::engine::general_purpose::URL_SAFE_NO_PAD),
    ] {
        for k in 0..3usize {
            let mut input = vec![0u8; k];
            input.extend_from_slice(bytes);
            let enc = engine.encode(&input);
            // Character i holds bits 6i..6i+6: keep those entirely inside the secret.
            let start = (8 * k).div_ceil(6);
            let end = (8 * (k + bytes.len())) / 6;
            if end > start + 8 {
                out.push((name, enc.as_bytes()[start..end].to_vec()));
            }
        }
    }
    out
}

/// Every place (`place`) in `haystack` where a needle shows, with its surroundings.
fn leaks_in(place: &str, haystack: &[u8], needles: &[Needle]) -> Vec<String> {
    let mut found = Vec::new();
    for n in needles {
        for (shape, pattern) in shapes(&n.value) {
            if pattern.is_empty() || pattern.len() > haystack.len() {
                continue;
            }
            if let Some(at) = haystack.windows(pattern.len()).position(|w| w == pattern.as_slice()) {
                let from = at.saturating_sub(160);
                let to = (at + pattern.len() + 160).min(haystack.len());
                found.push(format!(
                    "{} ({shape}) in {place} at byte {at}:\n    …{}…",
                    n.what,
                    String::from_utf8_lossy(&haystack[from..to]).replace('\n', "\\n")
                ));
            }
        }
    }
    found
}

/// Leaks in one command's stdout and stderr.
fn leaks_in_run(label: &str, run: &Run, needles: &[Needle]) -> Vec<String> {
    let mut found = leaks_in(&format!("`roster {label}` stdout"), run.stdout.as_bytes(), needles);
    found.extend(leaks_in(&format!("`roster {label}` stderr"), run.stderr.as_bytes(), needles));
    found
}

/// Every file under `dir`, recursively (the store, its -wal/-shm, the plugin cache, …).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Leaks in every file roster wrote under `dir`, skipping the secret files themselves.
fn leaks_in_files(dir: &Path, skip: &[PathBuf], needles: &[Needle]) -> (Vec<String>, Vec<PathBuf>) {
    let mut found = Vec::new();
    let mut scanned = Vec::new();
    for f in files_under(dir) {
        if skip.contains(&f) {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
        found.extend(leaks_in(&format!("file {}", f.display()), &bytes, needles));
        scanned.push(f);
    }
    (found, scanned)
}

#[track_caller]
fn assert_no_leaks(found: &[String]) {
    assert!(found.is_empty(), "{} secret leak(s):\n{}", found.len(), found.join("\n"));
}

// ------------------------------------------------------------------ set-up

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// How long one `roster` command may take before the test gives up on it.
const COMMAND_DEADLINE: Duration = Duration::from_secs(180);

/// `roster PRE ARGS` (PRE: verbosity, log format) with `vars` set; killed and
/// reported if it outlives [`COMMAND_DEADLINE`]. Output goes to files, so a
/// chatty `-vvv` cannot block on a full pipe.
fn roster(env: &Env, pre: &[&str], args: &[&str], vars: &[(&str, &str)]) -> Run {
    let logs = tempfile::tempdir().expect("a dir for the command's output");
    let (out, err) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut cmd = env.cmd();
    cmd.args(pre).args(args).envs(vars.iter().copied()).stdin(Stdio::null());
    cmd.stdout(std::fs::File::create(&out).expect("stdout file"));
    cmd.stderr(std::fs::File::create(&err).expect("stderr file"));
    let mut child = cmd.spawn().expect("running roster");
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().expect("waiting for roster") {
            break status.code().unwrap_or(-1);
        }
        if started.elapsed() > COMMAND_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`roster {} {}` did not finish within {COMMAND_DEADLINE:?}\nstdout:\n{}\nstderr (tail):\n{}",
                pre.join(" "),
                args.join(" "),
                std::fs::read_to_string(&out).unwrap_or_default(),
                tail(&std::fs::read_to_string(&err).unwrap_or_default(), 4000),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Run { code, stdout: read(&out), stderr: read(&err) }
}

/// The last `n` bytes of `s` (at a character boundary).
fn tail(s: &str, n: usize) -> &str {
    let mut from = s.len().saturating_sub(n);
    while !s.is_char_boundary(from) {
        from += 1;
    }
    &s[from..]
}

fn ldap_source(s: &Slapd, name: &str, password_file: &str) -> String {
    format!(
        r#"[[tenant.source]]
name = "{name}"
kind = "ldap"
url = "{url}"
ca_file = {ca:?}
bind_dn = "{svc}"
bind_password = {{ file = "{password_file}" }}
user_base = "ou=people,{base}"
group_base = "ou=groups,{base}"
"#,
        url = s.ldaps_url,
        ca = s.ca_file.display().to_string(),
        svc = s.svc_dn,
        base = s.base,
    )
}

fn graph_source(server: &GraphServer, name: &str, env_var: &str) -> String {
    format!(
        r#"[[tenant.source]]
name = "{name}"
kind = "azure-ad"
tenant_id = "{TENANT}"
client_id = "{CLIENT_ID}"
client_secret = {{ env = "{env_var}" }}
authority_url = "{url}"
graph_url = "{url}"
"#,
        url = server.url
    )
}

/// The JSON report array `sync --show-plan --json` prints after the plan.
fn sync_reports(run: &Run) -> Value {
    let start = if run.stdout.starts_with('[') {
        0
    } else {
        run.stdout.find("\n[\n").map(|i| i + 1).unwrap_or_else(|| panic!("no JSON report in:\n{}", run.stdout))
    };
    serde_json::from_str(&run.stdout[start..])
        .unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{}\nstderr:\n{}", run.stdout, run.stderr))
}

// ------------------------------------------------------------------ tests

#[test]
fn no_secret_appears_in_output_logs_plans_store_or_audit() {
    let s = Slapd::start_with(&[&gen_ldif(LDAP_USERS, LDAP_GROUPS, 31)], &[("SVC_PW", LDAP_PW)]);
    assert_eq!(s.svc_pw, LDAP_PW, "slapd's service account has the test's password");
    let graph = GraphServer::start(GRAPH_USERS, GRAPH_GROUPS, &[]);
    let env = Env::new("");
    let dir = env.path().to_path_buf();
    let secret_files: Vec<PathBuf> = [
        ("ldap-password", LDAP_PW),
        ("hook-secret", HOOK_SECRET),
        ("notify-secret", NOTIFY_SECRET),
        ("smtp-password", SMTP_PW),
        ("scim-token", SCIM_TOKEN),
    ]
    .into_iter()
    .map(|(file, value)| {
        let p = dir.join(file);
        std::fs::write(&p, format!("{value}\n")).expect("writing a secret file");
        p
    })
    .collect();
    // Nobody listens on these: delivery (only under `roster serve`) fails, and is retried.
    let (hook_port, notify_port, smtp_port, scim_port) = (free_port(), free_port(), free_port(), free_port());
    env.write_config(&format!(
        r#"[store]
path = "data"

[[notify]]
kind = "webhook"
url = "http://127.0.0.1:{notify_port}/notify"
secret = {{ file = "notify-secret" }}

[[notify]]
kind = "smtp"
server = "127.0.0.1:{smtp_port}"
starttls = false
from = "roster@example.com"
to = ["ops@example.com"]
username = "roster"
password = {{ file = "smtp-password" }}

[[tenant]]
id = "t"

{ldap}
{graph}
[[tenant.webhook]]
name = "app"
url = "http://127.0.0.1:{hook_port}/events"
secret = {{ file = "hook-secret" }}

[[tenant.scim_push]]
name = "app-scim"
url = "http://127.0.0.1:{scim_port}/scim/v2"
token = {{ file = "scim-token" }}

[tenant.safety]
max_delete_percent = 100
"#,
        ldap = ldap_source(&s, "corp", "ldap-password"),
        graph = graph_source(&graph, "entra", GRAPH_ENV),
    ));
    let vars = [(GRAPH_ENV, CLIENT_SECRET)];
    let needles = vec![
        needle("the LDAP bind password", LDAP_PW),
        needle("the Graph client secret", CLIENT_SECRET),
        needle("a Graph access token", GRAPH_TOKEN_MARK),
        needle("the webhook secret", HOOK_SECRET),
        needle("the notify webhook secret", NOTIFY_SECRET),
        needle("the SMTP password", SMTP_PW),
        needle("the SCIM push token", SCIM_TOKEN),
    ];
    // The search itself finds what it looks for, in every shape.
    for n in &needles {
        for (shape, pattern) in shapes(&n.value) {
            let mut hay = b"{\"x\":\"".to_vec();
            hay.extend_from_slice(&pattern);
            hay.extend_from_slice(b"\"}");
            assert!(!leaks_in("probe", &hay, &needles).is_empty(), "{shape} of {} is not found", n.what);
        }
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("svc:{LDAP_PW}"));
    assert!(!leaks_in("probe", b64.as_bytes(), &needles).is_empty(), "base64 at an offset is found");

    let mut runs: Vec<(String, Run)> = Vec::new();
    let mut record = |label: String, run: Run| -> Run {
        runs.push((label, Run { code: run.code, stdout: run.stdout.clone(), stderr: run.stderr.clone() }));
        run
    };

    // The configuration loads, with every kind of secret reference in it.
    let check = record("-vvv config check".into(), roster(&env, LOUD_JSON, &["config", "check"], &vars)).ok();
    assert!(check.stdout.contains("OK (1 tenants)"), "{}", check.stdout);

    // Debug and Display: the loaded configuration holds references only, and a
    // resolved secret prints redacted, though it holds the right value.
    let config = roster::config::Config::load(&env.config_path()).expect("the configuration loads");
    let mut shown = format!("{config:?}\n{config:#?}\n");
    let tenant = &config.tenants[0];
    let mut refs: Vec<(&str, &roster::config::SecretRef)> = vec![("hook", &tenant.webhooks[0].secret)];
    refs.extend(tenant.scim_push[0].token.as_ref().map(|t| ("scim", t)));
    for n in &config.notify {
        match n {
            roster::config::NotifyConfig::Webhook { secret, .. } => refs.push(("notify", secret)),
            roster::config::NotifyConfig::Smtp { password, .. } => refs.extend(password.as_ref().map(|p| ("smtp", p))),
        }
    }
    for source in &tenant.sources {
        if let roster::config::SourceConfig::Ldap(l) = source {
            refs.extend(l.bind_password.as_ref().map(|p| ("ldap", p)));
        }
    }
    let mut exposed: Vec<String> = Vec::new();
    for (what, r) in &refs {
        let secret = r.resolve(&config.base_dir).unwrap_or_else(|e| panic!("{what}: {e}"));
        shown.push_str(&format!("{r:?} {secret:?} {secret} {secret:#?} {:?}\n", Some(&secret)));
        exposed.push(secret.expose().to_string());
    }
    exposed.sort();
    let mut expected = vec![LDAP_PW, HOOK_SECRET, NOTIFY_SECRET, SMTP_PW, SCIM_TOKEN];
    expected.sort();
    assert_eq!(exposed, expected, "every secret reference resolves to its value");
    assert_no_leaks(&leaks_in(
        "Debug/Display of the configuration and its resolved secrets",
        shown.as_bytes(),
        &needles,
    ));

    // Both sources connect and authenticate with their secrets.
    for (source, kind) in [("corp", "ldap"), ("entra", "azure-ad")] {
        let r = record(
            format!("-vvv source test --source {source}"),
            roster(&env, LOUD_JSON, &["source", "test", "--tenant", "t", "--source", source], &vars),
        )
        .ok();
        assert!(r.stdout.contains(&format!("tenant 't', source '{source}' ({kind}): OK")), "{}", r.stdout);
    }

    // A dry run (text logs): the plan creates everyone, nothing is written.
    let dry = record(
        "-vvv sync --dry-run --show-plan".into(),
        roster(&env, LOUD_TEXT, &["sync", "--dry-run", "--show-plan"], &vars),
    )
    .ok();
    let planned = dry.stdout.lines().filter(|l| l.starts_with("+ user")).count();
    assert_eq!(planned, LDAP_USERS + GRAPH_USERS, "the dry run plans every user:\n{}", dry.stdout);

    // The real run (JSON logs), with the plan on stdout before the report.
    let sync = record(
        "-vvv sync --show-plan --json".into(),
        roster(&env, LOUD_JSON, &["sync", "--show-plan", "--json"], &vars),
    )
    .ok();
    assert!(sync.stdout.lines().any(|l| l.starts_with("+ user")), "the plan is shown:\n{}", sync.stdout);
    let report = sync_reports(&sync)[0].clone();
    assert_eq!(report["status"], "applied", "{report}");
    let creates = report["counts"]["creates"].as_u64().unwrap_or(0) as usize;
    assert!(creates >= LDAP_USERS + GRAPH_USERS, "every user is created: {report}");
    let read: Vec<(Option<&str>, Option<u64>)> = report["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (s["name"].as_str().or(s["source"].as_str()), s["read"]["users"].as_u64()))
        .collect();
    assert!(
        read.iter().any(|(_, n)| *n == Some(LDAP_USERS as u64))
            && read.iter().any(|(_, n)| *n == Some(GRAPH_USERS as u64)),
        "both sources were read in full: {read:?}"
    );
    assert!(
        sync.stderr.lines().any(|l| l.contains("\"level\":\"DEBUG\"") || l.contains("\"level\":\"TRACE\"")),
        "-vvv --log-format json logs at debug/trace level: {}",
        tail(&sync.stderr, 2000)
    );
    let users = roster(&env, &[], &["users", "list", "--tenant", "t", "--json"], &vars).ok().json()["Resources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(users.len(), LDAP_USERS + GRAPH_USERS, "every user was created");

    // Again: incremental for Graph (delta links kept in the store), nothing to do.
    let again = record("-vvv sync --json (again)".into(), roster(&env, LOUD_JSON, &["sync", "--json"], &vars)).ok();
    assert_eq!(again.json()[0]["status"], "no-changes", "{}", again.stdout);

    // Everything that reads the store or explains an entry.
    let anchor_of = |suffix_test: &dyn Fn(&str) -> bool| -> String {
        users
            .iter()
            .find(|u| u["userName"].as_str().is_some_and(suffix_test))
            .and_then(|u| u["externalId"].as_str())
            .unwrap_or_else(|| panic!("no such user among {users:?}"))
            .to_string()
    };
    let graph_anchor = anchor_of(&|n| n.ends_with("@contoso.test"));
    let ldap_anchor = anchor_of(&|n| !n.contains('@'));
    let reads: Vec<(&str, Vec<&str>)> = vec![
        ("status --json", vec!["status", "--json"]),
        ("runs list --json", vec!["runs", "list", "--tenant", "t", "--json"]),
        ("users list --json", vec!["users", "list", "--tenant", "t", "--json"]),
        ("groups list --json", vec!["groups", "list", "--tenant", "t", "--json"]),
        ("quarantine list --json", vec!["quarantine", "list", "--tenant", "t", "--json"]),
        ("explain (ldap)", vec!["explain", "--tenant", "t", &ldap_anchor]),
        ("explain (graph)", vec!["explain", "--tenant", "t", &graph_anchor]),
        ("audit export", vec!["audit", "export", "--tenant", "t"]),
        ("audit verify", vec!["audit", "verify"]),
        ("events list --json", vec!["events", "list", "--tenant", "t", "--limit", "100000", "--json"]),
        ("webhooks status", vec!["webhooks", "status", "--tenant", "t"]),
    ];
    for (label, args) in reads {
        let r = record(format!("-vvv {label}"), roster(&env, LOUD_JSON, &args, &vars)).ok();
        assert!(!r.stdout.trim().is_empty(), "`roster {label}` printed nothing");
        match label {
            "runs list --json" => assert!(r.json().as_array().is_some_and(|a| a.len() >= 2), "{}", r.stdout),
            "audit export" => assert!(r.stdout.lines().count() > LDAP_USERS, "{}", r.stdout),
            "events list --json" => {
                assert!(r.json().as_array().is_some_and(|a| a.len() >= LDAP_USERS + GRAPH_USERS), "{}", r.stdout)
            }
            "explain (ldap)" => assert!(r.stdout.contains(&ldap_anchor), "explain shows the entry:\n{}", r.stdout),
            "explain (graph)" => assert!(r.stdout.contains(&graph_anchor), "explain shows the entry:\n{}", r.stdout),
            _ => {}
        }
    }

    // `roster serve` for a few seconds: the webhook and SCIM push secrets are
    // resolved and used (signing, bearer token) against endpoints that refuse.
    let logs = tempfile::tempdir().expect("a log dir");
    let (out_path, err_path) = (logs.path().join("serve.out"), logs.path().join("serve.err"));
    let mut child = env
        .cmd()
        .args(LOUD_JSON)
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .env(GRAPH_ENV, CLIENT_SECRET)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("serve.out"))
        .stderr(std::fs::File::create(&err_path).expect("serve.err"))
        .spawn()
        .expect("start roster serve");
    let started = Instant::now();
    let mut attempted = false;
    while started.elapsed() < Duration::from_secs(20) {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        if err.contains("webhook delivery failed") && err.contains("SCIM push failed") {
            attempted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: signalling our own child by its pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let stopping = Instant::now();
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st.code().unwrap_or(-1);
        }
        if stopping.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let serve = Run {
        code: status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    };
    let serve = record("-vvv serve".into(), serve);
    assert!(
        attempted,
        "roster serve tried the webhook and the SCIM push (exit {})\nstdout:\n{}\nstderr (tail):\n{}",
        serve.code,
        serve.stdout,
        tail(&serve.stderr, 4000)
    );
    let status = record(
        "webhooks status (after serve)".into(),
        roster(&env, &[], &["webhooks", "status", "--tenant", "t"], &vars),
    )
    .ok();
    assert!(!status.stdout.contains("attempts 0 "), "a delivery was attempted: {}", status.stdout);

    // Nothing anywhere: outputs, then every file roster wrote (store, WAL, plugin cache, …).
    let mut found = Vec::new();
    for (label, run) in &runs {
        found.extend(leaks_in_run(label, run, &needles));
    }
    let (in_files, scanned) = leaks_in_files(&dir, &secret_files, &needles);
    found.extend(in_files);
    if env.is_postgres() {
        found.extend(leaks_in("the PostgreSQL store", &env.store_bytes(), &needles));
    } else {
        assert!(scanned.iter().any(|f| f.ends_with("data/roster.db")), "the store was scanned: {scanned:?}");
    }
    assert_no_leaks(&found);
}

#[test]
fn a_wrong_secret_error_names_the_place_not_the_value() {
    const WRONG_LDAP: &str = "Sekr1t-ldap-wrong-0b5e";
    const WRONG_GRAPH: &str = "Sekr1t-graph-wrong-6c1f";
    let s = Slapd::start_with(&[&gen_ldif(10, 2, 32)], &[("SVC_PW", LDAP_PW)]);
    let graph = GraphServer::start(5, 1, &[]);
    let env = Env::new("");
    let dir = env.path().to_path_buf();
    let pw_file = dir.join("ldap-password");
    std::fs::write(&pw_file, format!("{WRONG_LDAP}\n")).expect("write");
    env.write_config(&format!(
        "[store]\npath = \"data\"\n\n[[tenant]]\nid = \"ldap-t\"\n{}\n[[tenant]]\nid = \"graph-t\"\n{}",
        ldap_source(&s, "corp", "ldap-password"),
        graph_source(&graph, "entra", GRAPH_ENV),
    ));
    let vars = [(GRAPH_ENV, WRONG_GRAPH)];
    let needles = vec![
        needle("the wrong LDAP password", WRONG_LDAP),
        needle("the wrong Graph client secret", WRONG_GRAPH),
        needle("the real LDAP password", LDAP_PW),
        needle("the real Graph client secret", CLIENT_SECRET),
        needle("a Graph access token", GRAPH_TOKEN_MARK),
    ];
    let mut found = Vec::new();

    // Both tenants fail; each error says which tenant and source, and why.
    for (label, pre) in [("-vvv --log-format json sync", LOUD_JSON), ("-vvv sync", LOUD_TEXT)] {
        let run = roster(&env, pre, &["sync"], &vars);
        assert_eq!(run.code, 1, "{label}: a refused credential fails the run\n{}\n{}", run.stdout, run.stderr);
        let errors: Vec<&str> =
            run.stderr.lines().filter(|l| l.starts_with("error:") || l.contains("sync failed")).collect();
        let text = errors.join("\n");
        assert!(text.contains("ldap-t") && text.contains("'corp'"), "{label}: names tenant and source:\n{text}");
        assert!(text.to_lowercase().contains("invalid credentials"), "{label}: says the bind was refused:\n{text}");
        assert!(text.contains("graph-t") && text.contains("'entra'"), "{label}: names tenant and source:\n{text}");
        assert!(
            text.contains("AADSTS7000215") || text.to_lowercase().contains("client secret"),
            "{label}: says the client secret was refused:\n{text}"
        );
        found.extend(leaks_in_run(label, &run, &needles));
    }
    for (tenant, source, why) in [("ldap-t", "corp", "invalid credentials"), ("graph-t", "entra", "AADSTS7000215")] {
        let label = format!("-vvv source test --tenant {tenant} --source {source}");
        let run = roster(&env, LOUD_JSON, &["source", "test", "--tenant", tenant, "--source", source], &vars);
        assert_eq!(run.code, 1, "{label}\n{}\n{}", run.stdout, run.stderr);
        let err = run.stderr.lines().filter(|l| l.starts_with("error:")).collect::<Vec<_>>().join("\n");
        assert!(err.contains(&format!("tenant '{tenant}'")), "{label}: names the tenant:\n{err}");
        assert!(err.contains(&format!("'{source}'")), "{label}: names the source:\n{err}");
        assert!(err.to_lowercase().contains(&why.to_lowercase()), "{label}: says why:\n{err}");
        found.extend(leaks_in_run(&label, &run, &needles));
    }
    // The failed runs are recorded, without the values.
    for tenant in ["ldap-t", "graph-t"] {
        let label = format!("runs list --tenant {tenant} --json");
        let run = roster(&env, LOUD_JSON, &["runs", "list", "--tenant", tenant, "--json"], &vars).ok();
        found.extend(leaks_in_run(&label, &run, &needles));
        let label = format!("audit export --tenant {tenant}");
        let run = roster(&env, LOUD_JSON, &["audit", "export", "--tenant", tenant], &vars).ok();
        found.extend(leaks_in_run(&label, &run, &needles));
    }
    let (in_files, _) = leaks_in_files(&dir, &[pw_file], &needles);
    found.extend(in_files);
    assert_no_leaks(&found);
}

#[test]
fn plaintext_secret_in_toml_is_refused() {
    let ldap = "[[tenant.source]]\nname = \"corp\"\nkind = \"ldap\"\nurl = \"ldaps://127.0.0.1:1636\"\nbind_dn = \"cn=svc,dc=example,dc=com\"\nuser_base = \"dc=example,dc=com\"\n";
    let graph = format!(
        "[[tenant.source]]\nname = \"entra\"\nkind = \"azure-ad\"\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT_ID}\"\n"
    );
    // (what, key, plaintext value, the configuration with it)
    let cases: Vec<(&str, &str, &str, String)> = vec![
        (
            "LDAP bind password",
            "bind_password",
            "hunter2-plain",
            format!("[[tenant]]\nid = \"t\"\n{ldap}bind_password = \"hunter2-plain\"\n"),
        ),
        (
            "Graph client secret",
            "client_secret",
            "Sekr1t-plain-graph-31",
            format!("[[tenant]]\nid = \"t\"\n{graph}client_secret = \"Sekr1t-plain-graph-31\"\n"),
        ),
        (
            "webhook secret",
            "secret",
            "Sekr1t-plain-hook-32",
            format!(
                "[[tenant]]\nid = \"t\"\n{ldap}bind_password = {{ env = \"X\" }}\n[[tenant.webhook]]\nname = \"app\"\nurl = \"http://127.0.0.1:9/e\"\nsecret = \"Sekr1t-plain-hook-32\"\n"
            ),
        ),
        (
            "SCIM push token",
            "token",
            "Sekr1t-plain-scim-33",
            format!(
                "[[tenant]]\nid = \"t\"\n{ldap}bind_password = {{ env = \"X\" }}\n[[tenant.scim_push]]\nname = \"app\"\nurl = \"http://127.0.0.1:9/scim/v2\"\ntoken = \"Sekr1t-plain-scim-33\"\n"
            ),
        ),
        (
            "notify webhook secret",
            "secret",
            "Sekr1t-plain-notify-34",
            "[[notify]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/n\"\nsecret = \"Sekr1t-plain-notify-34\"\n[[tenant]]\nid = \"t\"\n"
                .to_string(),
        ),
        (
            "SMTP password",
            "password",
            "Sekr1t-plain-smtp-35",
            "[[notify]]\nkind = \"smtp\"\nserver = \"127.0.0.1:25\"\nstarttls = false\nfrom = \"r@example.com\"\nto = [\"o@example.com\"]\nusername = \"r\"\npassword = \"Sekr1t-plain-smtp-35\"\n[[tenant]]\nid = \"t\"\n"
                .to_string(),
        ),
    ];
    let mut problems = Vec::new();
    for (what, key, value, body) in &cases {
        let config = format!("[store]\npath = \"data\"\n{body}");
        let lines: Vec<&str> = config.lines().collect();
        let at = lines.iter().position(|l| l.starts_with(&format!("{key} = \"{value}\""))).expect("the plaintext line");
        let line = at + 1;
        // The header of the table the key is in (`[[notify]]`, `[[tenant.source]]`, …).
        let table_line = lines[..at].iter().rposition(|l| l.starts_with('[')).map(|i| i + 1).expect("a table");
        let env = Env::new(&config);
        let needles = vec![needle(&format!("the plaintext {what}"), value)];
        for (label, pre, args) in [
            ("config check", &[][..], &["config", "check"][..]),
            ("-vvv --log-format json config check", LOUD_JSON, &["config", "check"][..]),
            ("-vvv sync", LOUD_TEXT, &["sync"][..]),
        ] {
            let run = roster(&env, pre, args, &[]);
            let label = format!("{label} ({what})");
            if run.code != 2 {
                problems.push(format!("`roster {label}` exited {}, not 2:\n{}{}", run.code, run.stdout, run.stderr));
            }
            let err = &run.stderr;
            let names_file = err.contains(&env.config_path().display().to_string());
            let names_line = err.contains(&format!("line {line},"));
            let names_table = err.contains(&format!("line {table_line},"));
            let names_key = err.contains(&format!("'{key}'")) || err.contains(&format!("`{key}`"));
            if !names_file || !(names_line || names_table || names_key) {
                problems.push(format!(
                    "`roster {label}` does not say where (file: {names_file}, line {line}: {names_line}, its table's line {table_line}: {names_table}, key '{key}': {names_key}):\n{err}"
                ));
            }
            if !names_line {
                problems.push(format!("`roster {label}` does not name line {line}:\n{err}"));
            }
            if !err.contains("secret reference") {
                problems.push(format!("`roster {label}` does not say a secret reference is expected:\n{err}"));
            }
            problems.extend(leaks_in_run(&label, &run, &needles));
        }
        assert!(!env.path().join("data").join("roster.db").exists(), "{what}: a refused config opens no store");

        // Allowed explicitly, the same file loads, with a warning that never shows the value.
        let allowed = Env::new(&format!("allow_plaintext_secrets = true\n{config}"));
        // X: the `{ env = "X" }` the webhook and SCIM cases' LDAP source uses.
        let run = roster(&allowed, &[], &["config", "check"], &[("X", "x")]);
        if run.code != 0 || !run.stderr.contains("plaintext secrets") {
            problems.push(format!(
                "{what}: with allow_plaintext_secrets = true, `config check` exited {} without the warning:\n{}",
                run.code, run.stderr
            ));
        }
        problems.extend(leaks_in_run(&format!("config check, allowed ({what})"), &run, &needles));
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n\n"));
}
