//! Several `roster serve` nodes on one PostgreSQL store and a real slapd:
//! every source has exactly one owner, a killed owner's realtime source is
//! taken over with every change applied exactly once, a restarted node gets
//! its share back, and the audit chain and event sequences stay whole.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::serve::{Serve, wait_until};
use crate::support::slapd::{Slapd, gen_ldif};
use crate::support::{Env, user};

const TENANTS: [&str; 3] = ["a", "b", "c"];
const LEASE_SECS: u64 = 2;

fn cluster_env(s: &Slapd) -> Env {
    let env = Env::new_postgres("");
    std::fs::write(env.path().join("ldap-password"), &s.svc_pw).expect("write");
    let mut config = format!("[serve]\nlease_secs = {LEASE_SECS}\n[store]\npath = \"data\"\n");
    for t in TENANTS {
        config.push_str(&s.realtime_tenant_toml(t, r#"{ mode = "realtime" }"#));
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

/// Each of `nodes` holds exactly one tenant's source.
fn one_each(env: &Env, nodes: &[&str]) -> bool {
    let owners = owners(env);
    let held: Vec<&str> = owners.values().filter_map(|o| o.as_deref()).collect();
    let distinct: BTreeSet<&str> = held.iter().copied().collect();
    held.len() == TENANTS.len() && distinct == nodes.iter().copied().collect()
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
    let env = cluster_env(&s);
    let start = |node: &str| Serve::start_with(&env, &["--node-id", node], &[]);
    let names = ["n1", "n2", "n3"];
    let mut nodes: BTreeMap<&str, Serve> = names.iter().map(|n| (*n, start(n))).collect();

    // Every source gets one owner; nodes that started later get their share.
    wait_until("each node holds one source", Duration::from_secs(60), || one_each(&env, &names));
    for t in TENANTS {
        wait_until("the initial refresh is applied", Duration::from_secs(60), || env.users(t).len() == 40);
    }

    // A stream of changes to the directory; the owner of tenant a's source is
    // killed in the middle of it.
    let victim = owners(&env)["a"].clone().expect("tenant a has an owner");
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
    wait_until("the restarted node gets its share back", Duration::from_secs(60), || one_each(&env, &names));

    // One audit chain per tenant, intact although three processes wrote it.
    let verified = env.run(&["audit", "verify"]).ok();
    assert!(verified.stdout.contains("hash chain verified"), "{}", verified.stdout);
    for (name, node) in nodes {
        assert_eq!(node.stop(), 0, "{name} stops cleanly");
    }
    // A clean stop hands the leases back at once.
    assert!(owners(&env).values().all(Option::is_none), "{:?}", owners(&env));
}
