//! The events outbox and webhook delivery: gap-free ordered events written
//! with the changes they describe, and at-least-once signed delivery that
//! survives a receiver that is down for a while and a killed server.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::receiver::{receiver, receiver_on};
use crate::support::{Env, repo_root};

fn example_env(extra: &str) -> Env {
    let env = Env::new("");
    std::fs::copy(repo_root().join("examples/directory.ldif"), env.path().join("dir.ldif")).expect("copy");
    env.write_config(&format!(
        "[store]\npath = \"data\"\n[[tenant]]\nid = \"t\"\n[[tenant.source]]\nname = \"files\"\nkind = \"ldif\"\npath = \"dir.ldif\"\n[tenant.safety]\nmax_delete_percent = 100\n{extra}"
    ));
    env
}

fn events(env: &Env) -> Vec<Value> {
    env.run(&["events", "list", "--tenant", "t", "--limit", "100000", "--json"])
        .ok()
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn events_are_gap_free_ordered_and_written_with_their_changes() {
    let env = example_env("");
    let (run, report) = env.sync(&[]);
    run.ok();
    let first = events(&env);
    let c = &report["counts"];
    let expected = c["creates"].as_u64().unwrap_or(0) + c["members_added"].as_u64().unwrap_or(0);
    assert_eq!(first.len() as u64, expected, "one event per create and per membership");
    let seqs: Vec<i64> = first.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gap-free from 1");
    let created = first.iter().find(|e| e["type"] == "user.created").expect("a user.created");
    assert_eq!(created["payload"]["object"]["version"], 1);
    assert!(created["payload"]["changes"].as_array().is_some_and(|c| !c.is_empty()), "the diff comes along");

    // Changes: a rename, a deactivation, a delete; memberships follow.
    let ldif = std::fs::read_to_string(env.path().join("dir.ldif")).expect("read");
    let mut changed = ldif.replacen("\nsn: ", "\nsn: Renamed-", 1);
    // Drop the last user entirely.
    let last_user = changed.rfind("\ndn: uid=").expect("a user");
    let last_end = changed[last_user + 1..].find("\n\n").map(|e| last_user + 1 + e).unwrap_or(changed.len());
    changed.replace_range(last_user..last_end, "");
    std::fs::write(env.path().join("dir.ldif"), changed).expect("write");
    let (run, report) = env.sync(&[]);
    run.ok();
    let all = events(&env);
    let seqs: Vec<i64> = all.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "still gap-free across runs");
    let later: Vec<&Value> = all.iter().skip(first.len()).collect();
    let types: BTreeSet<&str> = later.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(types.contains("user.deleted") && types.contains("user.updated"), "{types:?} {}", report["counts"]);
    let keys: BTreeSet<&str> = all.iter().filter_map(|e| e["idempotency_key"].as_str()).collect();
    assert_eq!(keys.len(), all.len(), "every event has its own key");
}

#[test]
fn a_crash_mid_apply_writes_no_events_and_the_next_run_writes_them_once() {
    let env = example_env("");
    let crashed = env.run_env(&["sync"], &[("ROSTER_TEST_CRASH_AFTER_WRITES", "50")]);
    assert_ne!(crashed.code, 0);
    assert!(events(&env).is_empty(), "the outbox is part of the apply transaction");
    env.sync(&[]).0.ok();
    let all = events(&env);
    let seqs: Vec<i64> = all.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert!(!all.is_empty());
}

fn start_serve(env: &Env) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = env
        .cmd()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    (child, out)
}

#[test]
fn webhooks_deliver_every_event_in_order_through_outages_and_restarts() {
    let rx = receiver(3);
    let env = example_env(&format!(
        "[[tenant.webhook]]\nname = \"app\"\nurl = \"{}\"\nsecret = {{ file = \"hook-secret\" }}\n",
        rx.url
    ));
    std::fs::write(env.path().join("hook-secret"), "whsec-test").expect("write");
    env.sync(&[]).0.ok();
    let total = events(&env).len();
    assert!(total > 300);

    let (mut serve, _out) = start_serve(&env);
    // Some deliveries in, then the server dies.
    let started = Instant::now();
    while rx.log.lock().expect("lock").iter().filter(|(s, _, _)| *s == 204).count() < 50 {
        assert!(started.elapsed() < Duration::from_secs(30), "deliveries did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = serve.kill();
    let _ = serve.wait();
    let (mut serve, _out2) = start_serve(&env);
    let started = Instant::now();
    loop {
        let delivered: BTreeSet<i64> = rx
            .log
            .lock()
            .expect("lock")
            .iter()
            .filter(|(s, _, _)| *s == 204)
            .filter_map(|(_, _, b)| serde_json::from_str::<Value>(b).ok()?["sequence"].as_i64())
            .collect();
        if delivered.len() == total {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{} of {total} delivered", delivered.len());
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = serve.kill();
    let _ = serve.wait();

    let log = rx.log.lock().expect("lock").clone();
    // Order: the first successful delivery of each event comes in sequence order.
    let mut first_seen = Vec::new();
    let mut seen = BTreeSet::new();
    for (status, _, body) in &log {
        let seq = serde_json::from_str::<Value>(body).ok().and_then(|v| v["sequence"].as_i64()).expect("sequence");
        if *status == 204 && seen.insert(seq) {
            first_seen.push(seq);
        }
    }
    assert_eq!(first_seen, (1..=total as i64).collect::<Vec<_>>(), "every event, in order");
    // Duplicates only with the same idempotency key.
    let mut key_of: BTreeMap<i64, String> = BTreeMap::new();
    for (_, headers, body) in &log {
        let v: Value = serde_json::from_str(body).expect("json");
        let seq = v["sequence"].as_i64().expect("seq");
        let key = headers.get("idempotency-key").cloned().expect("idempotency-key header");
        assert_eq!(key, v["idempotency_key"].as_str().unwrap_or(""), "header and body agree");
        assert_eq!(key_of.entry(seq).or_insert(key.clone()), &key, "a redelivery repeats its key");
    }
    // Signatures verify with the documented scheme, and a tampered body does not.
    let (_, headers, body) = log.iter().find(|(s, _, _)| *s == 204).expect("a delivery");
    let sig = headers.get("roster-signature").expect("signature header");
    assert!(roster::delivery::webhooks::verify(b"whsec-test", sig, body.as_bytes()));
    assert!(!roster::delivery::webhooks::verify(b"whsec-test", sig, body.replace("created", "deleted").as_bytes()));
    let status = env.run(&["webhooks", "status", "--tenant", "t"]).ok();
    assert!(status.stdout.contains(&format!("delivered through #{total}")), "{}", status.stdout);
}

#[test]
fn events_an_endpoint_keeps_refusing_are_dead_lettered_and_replayed() {
    // A port nobody listens on, for now.
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let env = example_env(&format!(
        "[[tenant.webhook]]\nname = \"app\"\nurl = \"http://127.0.0.1:{port}/events\"\nsecret = {{ file = \"hook-secret\" }}\nevents = [\"group.created\"]\nmax_retry_hours = 0\n"
    ));
    std::fs::write(env.path().join("hook-secret"), "whsec-test").expect("write");
    env.sync(&[]).0.ok();
    let groups = events(&env).iter().filter(|e| e["type"] == "group.created").count();
    let (mut serve, _out) = start_serve(&env);
    let started = Instant::now();
    loop {
        let status = env.run(&["webhooks", "status", "--tenant", "t"]).ok().stdout;
        if status.contains(&format!("dead letters {groups}")) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not all dead-lettered: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = serve.kill();
    let _ = serve.wait();
    // The endpoint comes back: replay delivers every dead letter, in order.
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("rebind");
    let got = receiver_on(listener, 0).log;
    let replay = env.run(&["webhooks", "replay", "--tenant", "t", "--endpoint", "app"]).ok();
    assert!(replay.stdout.contains(&format!("{groups} dead letters delivered, 0 still failing")), "{}", replay.stdout);
    let bodies = got.lock().expect("lock").clone();
    let seqs: Vec<i64> =
        bodies.iter().filter_map(|(_, _, b)| serde_json::from_str::<Value>(b).ok()?["sequence"].as_i64()).collect();
    let mut sorted = seqs.clone();
    sorted.sort();
    assert_eq!(seqs.len(), groups);
    assert_eq!(seqs, sorted, "replayed in order");
    assert!(env.run(&["webhooks", "status", "--tenant", "t"]).ok().stdout.contains("dead letters 0"));
}
