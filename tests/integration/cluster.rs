//! Several `roster serve` nodes on one PostgreSQL store and a real slapd:
//! every source has exactly one owner, a killed owner's realtime source is
//! taken over with every change applied exactly once, a restarted node gets
//! its share back, a webhook endpoint is delivered in order whichever node
//! holds it, and the audit chain and event sequences stay whole.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::receiver::{Log, receiver};
use crate::support::serve::{Serve, wait_until};
use crate::support::slapd::{Slapd, gen_ldif};
use crate::support::{Env, user};

const TENANTS: [&str; 3] = ["a", "b", "c"];
const LEASE_SECS: u64 = 2;

/// Three tenants on one slapd; tenant a also delivers its events to `hook`.
fn cluster_env(s: &Slapd, hook: &str) -> Env {
    let env = Env::new_postgres("");
    std::fs::write(env.path().join("ldap-password"), &s.svc_pw).expect("write");
    std::fs::write(env.path().join("hook-secret"), "whsec-cluster").expect("write");
    let mut config = format!("[serve]\nlease_secs = {LEASE_SECS}\n[store]\npath = \"data\"\n");
    for t in TENANTS {
        config.push_str(&s.realtime_tenant_toml(t, r#"{ mode = "realtime" }"#));
        if t == "a" {
            config.push_str(&format!(
                "[[tenant.webhook]]\nname = \"app\"\nurl = \"{hook}\"\nsecret = {{ file = \"hook-secret\" }}\n"
            ));
        }
    }
    env.write_config(&config);
    env
}

/// Tenant → the node holding its source (`None`: nobody right now).
fn owners(env: &Env) -> BTreeMap<String, Option<String>> {
    let status = env.run(&["status", "--json"]).ok().json();
    status
        .as_array()
        .expect("status rows")
        .iter()
        .map(|r| (r["tenant"].as_str().unwrap_or("").to_string(), r["owner"].as_str().map(str::to_string)))
        .collect()
}

/// Every source has an owner, and each of `nodes` holds its share of the four
/// resources (three sources and the webhook endpoint): one or two.
fn shared(env: &Env, nodes: &[&str]) -> bool {
    if owners(env).values().any(Option::is_none) {
        return false;
    }
    let text = env.run(&["status"]).ok().stdout;
    nodes.iter().all(|n| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(*n))
            .and_then(|l| l.split(" holds ").nth(1))
            .is_some_and(|held| {
                let count = held.split(", ").filter(|r| *r != "-").count();
                (1..=2).contains(&count)
            })
    })
}

/// The sequence numbers the receiver got, in the order it got them.
fn delivered(log: &Log) -> Vec<i64> {
    log.lock()
        .expect("lock")
        .iter()
        .filter_map(|(_, headers, _)| headers.get("roster-event-sequence")?.parse().ok())
        .collect()
}

fn events(env: &Env, tenant: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = env
            .run(&["events", "list", "--tenant", tenant, "--after", &after.to_string(), "--limit", "500", "--json"])
            .ok()
            .json();
        let page = page.as_array().cloned().unwrap_or_default();
        let Some(last) = page.last().and_then(|e| e["seq"].as_i64()) else { break };
        after = last;
        out.extend(page);
    }
    out
}

#[test]
fn three_nodes_share_the_sources_and_a_killed_owner_is_taken_over_exactly_once() {
    let s = Slapd::start(&[&gen_ldif(40, 4, 11)]);
    let rx = receiver(0);
    let env = cluster_env(&s, &rx.url);
    let start = |node: &str| Serve::start_with(&env, &["--node-id", node], &[]);
    let names = ["n1", "n2", "n3"];
    let mut nodes: BTreeMap<&str, Serve> = names.iter().map(|n| (*n, start(n))).collect();

    // Every source gets one owner; nodes that started later get their share.
    wait_until("each node holds its share", Duration::from_secs(60), || shared(&env, &names));
    for t in TENANTS {
        wait_until("the initial refresh is applied", Duration::from_secs(60), || env.users(t).len() == 40);
    }

    // A stream of changes to the directory; the owner of tenant a's source is
    // killed in the middle of it.
    let mut victim = None;
    wait_until("tenant a's source has an owner", Duration::from_secs(10), || {
        victim = owners(&env)["a"].clone();
        victim.is_some()
    });
    let victim = victim.expect("tenant a has an owner");
    let victim: &str = names.iter().copied().find(|n| *n == victim).expect("a known node");
    const CHANGES: usize = 30;
    let uid = |i: usize| format!("stream-{i:02}");
    let killed_at = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for i in 0..CHANGES {
                s.ldapadd(&format!(
                    "dn: uid={u},ou=people,{base}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: Stream {i}\nsn: S\n",
                    u = uid(i),
                    base = s.base
                ));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        wait_until("the first changes land", Duration::from_secs(30), || user(&env.users("a"), &uid(3)).is_some());
        nodes.remove(victim).expect("running").kill();
        let killed_at = Instant::now();
        writer.join().expect("writer");
        killed_at
    });

    let took = wait_until("another node takes tenant a's source over", Duration::from_secs(30), || {
        owners(&env)["a"].as_deref().is_some_and(|o| o != victim)
    });
    let since_kill = killed_at.elapsed();
    eprintln!("takeover seen {took:?} after the writes ended, {since_kill:?} after the kill");
    assert!(since_kill < Duration::from_secs(LEASE_SECS * 10), "takeover is bounded by the lease: {since_kill:?}");
    for t in TENANTS {
        wait_until("every change lands", Duration::from_secs(60), || {
            let users = env.users(t);
            users.len() == 40 + CHANGES && (0..CHANGES).all(|i| user(&users, &uid(i)).is_some())
        });
    }

    // Exactly once: one creation event per new user, in a gap-free sequence.
    for t in TENANTS {
        let events = events(&env, t);
        let seqs: Vec<i64> = events.iter().filter_map(|e| e["seq"].as_i64()).collect();
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, expected, "tenant {t}: event sequence has gaps or repeats");
        for i in 0..CHANGES {
            let created = events
                .iter()
                .filter(|e| {
                    e["type"] == "user.created"
                        && e["payload"]["object"]["attributes"]["userName"][0] == uid(i).as_str()
                })
                .count();
            assert_eq!(created, 1, "tenant {t}: {} created {created} times", uid(i));
        }
    }

    // The killed node comes back: the leases rebalance to one each.
    nodes.insert(victim, start(victim));
    wait_until("the restarted node gets its share back", Duration::from_secs(60), || shared(&env, &names));

    // The webhook endpoint, delivered by whichever node held it: every event
    // at least once, and the first delivery of each in sequence order.
    let last = events(&env, "a").last().and_then(|e| e["seq"].as_i64()).expect("tenant a has events");
    wait_until("every event of tenant a is delivered", Duration::from_secs(60), || {
        delivered(&rx.log).into_iter().collect::<BTreeSet<i64>>() == (1..=last).collect()
    });
    let mut seen = BTreeSet::new();
    let firsts: Vec<i64> = delivered(&rx.log).into_iter().filter(|s| seen.insert(*s)).collect();
    assert_eq!(firsts, (1..=last).collect::<Vec<_>>(), "first deliveries in sequence order");

    // One audit chain per tenant, intact although three processes wrote it.
    let verified = env.run(&["audit", "verify"]).ok();
    assert!(verified.stdout.contains("hash chain verified"), "{}", verified.stdout);
    for (name, node) in nodes {
        assert_eq!(node.stop(), 0, "{name} stops cleanly");
    }
    // A clean stop hands the leases back at once.
    assert!(owners(&env).values().all(Option::is_none), "{:?}", owners(&env));
}
