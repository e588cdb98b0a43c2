//! SCIM push against an independent SCIM server (`scim2-server` from PyPI):
//! after creates, updates, renames, membership changes and deletes, the
//! server holds the same users, groups and memberships as Roster's store.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::peers::ScimServer;
use crate::support::{Env, repo_root};

const TOKEN: &str = "push-token-for-tests";

/// (userNames, group displayName → member userNames) on the SCIM server.
fn remote_state(server: &ScimServer) -> (BTreeSet<String>, BTreeMap<String, BTreeSet<String>>) {
    let users = server.get("/Users?count=10000");
    let mut by_id = BTreeMap::new();
    let mut names = BTreeSet::new();
    for u in users["Resources"].as_array().into_iter().flatten() {
        let n = u["userName"].as_str().unwrap_or("").to_lowercase();
        by_id.insert(u["id"].as_str().unwrap_or("").to_string(), n.clone());
        names.insert(n);
    }
    let groups = server.get("/Groups?count=10000");
    let mut g = BTreeMap::new();
    for grp in groups["Resources"].as_array().into_iter().flatten() {
        let members: BTreeSet<String> = grp["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| by_id.get(m["value"].as_str().unwrap_or("")).cloned())
            .collect();
        g.insert(grp["displayName"].as_str().unwrap_or("").to_string(), members);
    }
    (names, g)
}

/// The same from Roster's store (direct user members only).
fn local_state(env: &Env) -> (BTreeSet<String>, BTreeMap<String, BTreeSet<String>>) {
    let users = env.users("t");
    let by_id: BTreeMap<String, String> = users
        .iter()
        .map(|u| (u["id"].as_str().unwrap_or("").to_string(), u["userName"].as_str().unwrap_or("").to_lowercase()))
        .collect();
    let names = by_id.values().cloned().collect();
    let mut g = BTreeMap::new();
    for grp in env.groups("t") {
        let members: BTreeSet<String> = grp["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| by_id.get(m["value"].as_str().unwrap_or("")).cloned())
            .collect();
        g.insert(grp["displayName"].as_str().unwrap_or("").to_string(), members);
    }
    (names, g)
}

fn converge(env: &Env, server: &ScimServer, what: &str) {
    let started = Instant::now();
    let want = local_state(env);
    loop {
        let have = remote_state(server);
        if have == want {
            return;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let missing: Vec<&String> = want.0.difference(&have.0).take(5).collect();
            let extra: Vec<&String> = have.0.difference(&want.0).take(5).collect();
            panic!(
                "{what}: the SCIM server does not match the store: users missing {missing:?}, extra {extra:?}; groups equal: {}",
                have.1 == want.1
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn scim_push_leaves_the_application_with_what_the_store_has() {
    let server = ScimServer::start(TOKEN);
    let env = Env::new("");
    std::fs::copy(repo_root().join("examples/directory.ldif"), env.path().join("dir.ldif")).expect("copy");
    std::fs::write(env.path().join("push-token"), TOKEN).expect("write");
    env.write_config(&format!(
        "[store]\npath = \"data\"\n[[tenant]]\nid = \"t\"\n[[tenant.source]]\nname = \"files\"\nkind = \"ldif\"\npath = \"dir.ldif\"\n\
         [tenant.safety]\nmax_delete_percent = 100\n[[tenant.scim_push]]\nname = \"app\"\nurl = \"http://{}\"\ntoken = {{ file = \"push-token\" }}\n",
        server.addr
    ));
    env.run(&["sync"]).ok();
    let mut serve = env
        .cmd()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let mut out = BufReader::new(serve.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("line");
    converge(&env, &server, "after the first sync");

    // Rename a user (userName changes), delete another, move a member.
    let ldif = std::fs::read_to_string(env.path().join("dir.ldif")).expect("read");
    let first_uid = ldif.lines().find_map(|l| l.strip_prefix("uid: ")).expect("a uid").to_string();
    let mut changed = ldif.replacen(&format!("uid: {first_uid}\n"), &format!("uid: {first_uid}-renamed\n"), 1);
    let last = changed.rfind("\ndn: uid=").expect("a user");
    let end = changed[last + 1..].find("\n\n").map(|e| last + 1 + e).unwrap_or(changed.len());
    changed.replace_range(last..end, "");
    let member_line = changed.lines().find(|l| l.starts_with("member: uid=")).expect("a member line").to_string();
    changed = changed.replacen(&format!("{member_line}\n"), "", 1);
    std::fs::write(env.path().join("dir.ldif"), changed).expect("write");
    env.run(&["sync"]).ok();
    converge(&env, &server, "after renames, deletes and membership changes");
    assert!(remote_state(&server).0.contains(&format!("{first_uid}-renamed").to_lowercase()));
    let _ = serve.kill();
    let _ = serve.wait();
}
