//! Several `roster serve` nodes on one store share the work through leases.
//!
//! Every source of every tenant and every delivery target (webhook endpoint,
//! SCIM push target) is a *resource*. A node works on a resource only while it
//! holds the resource's lease: a row in the store with an expiry, renewed every
//! third of `[serve] lease_secs`. Each node aims at its fair share,
//! ⌈resources ÷ live nodes⌉: it takes free or run-out leases up to that share,
//! and gives up what is above it when more nodes are alive. While some live
//! node holds less than ⌊resources ÷ live nodes⌋, the others keep only that
//! floor, so a restarted or added node gets work within a few renewals.
//!
//! A node that dies keeps its leases until they run out; then the others take
//! them over and continue from the stored state (cookies, delivery positions).
//! A node that stalls past its expiry cannot write over its successor: the
//! runs it applies are fenced ([`crate::store::Fence`]) and fail once the
//! lease is gone.
//!
//! This module knows the store's lease calls and nothing of what the
//! resources are; `serve` starts and stops the work in [`Change`] callbacks.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::store::{BoxStore, Fence, Store};

/// A source's resource name.
pub fn source_resource(tenant: &str, source: &str) -> String {
    format!("source:{tenant}/{source}")
}

/// A webhook endpoint's resource name.
pub fn webhook_resource(tenant: &str, endpoint: &str) -> String {
    format!("webhook:{tenant}/{endpoint}")
}

/// A SCIM push target's resource name.
pub fn scim_push_resource(tenant: &str, target: &str) -> String {
    format!("scim-push:{tenant}/{target}")
}

/// The default node name: host and process, unique among the nodes of a machine.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}-{}", std::process::id())
}

/// What this node holds, shared by the threads that do the work.
pub struct Cluster {
    node: String,
    ttl: Duration,
    held: RwLock<BTreeSet<String>>,
}

/// A lease this node gained or is giving up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Gained(String),
    /// Called before the lease is released (or after it was found taken):
    /// the work on it must stop.
    Lost(String),
}

impl Cluster {
    pub fn new(node: String, ttl: Duration) -> Arc<Cluster> {
        Arc::new(Cluster { node, ttl, held: RwLock::new(BTreeSet::new()) })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn holds(&self, resource: &str) -> bool {
        self.held.read().is_ok_and(|h| h.contains(resource))
    }

    /// The fence a write on these resources runs under.
    pub fn fence(&self, resources: impl IntoIterator<Item = String>) -> Fence {
        Fence { node: self.node.clone(), resources: resources.into_iter().collect() }
    }

    fn set_held(&self, held: &BTreeSet<String>) {
        if let Ok(mut h) = self.held.write() {
            h.clone_from(held);
        }
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Where a node's preference for a resource puts it: nodes prefer different
/// resources, so they do not all race for the same first ones.
fn preference(node: &str, resource: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (node, resource).hash(&mut h);
    h.finish()
}

/// Keeps this node's leases until `stop`, then releases them. `on_change`
/// starts and stops the work on a resource; it runs on this thread.
pub fn run(
    cluster: Arc<Cluster>,
    mut store: BoxStore,
    resources: Vec<String>,
    info: String,
    stop: Arc<AtomicBool>,
    mut on_change: impl FnMut(Change) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let tick = (cluster.ttl / 3).max(Duration::from_millis(100));
    let mut held: BTreeSet<String> = BTreeSet::new();
    // When each lease was last renewed: one not renewed within the TTL
    // (the store was unreachable) may already be another node's.
    let mut renewed: HashMap<String, Instant> = HashMap::new();
    // The first round before returning: what the node holds is known before
    // its workers and schedules start.
    keep_leases(&cluster, store.as_mut(), &resources, &info, &mut held, &mut renewed, &mut on_change);
    tracing::info!(node = %cluster.node, held = held.len(), of = resources.len(), "leases taken at start");
    std::thread::Builder::new().name("roster-leases".into()).spawn(move || {
        loop {
            let until = Instant::now() + tick;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let before = held.clone();
            keep_leases(&cluster, store.as_mut(), &resources, &info, &mut held, &mut renewed, &mut on_change);
            if held != before {
                tracing::info!(node = %cluster.node, held = held.len(), of = resources.len(), "leases changed");
            }
        }
        // A clean stop hands the work over at once instead of after the expiry.
        for resource in std::mem::take(&mut held) {
            cluster.set_held(&held_without(&cluster, &resource));
            on_change(Change::Lost(resource.clone()));
            let _ = store.release_lease(&resource, &cluster.node);
        }
        cluster.set_held(&BTreeSet::new());
        let _ = store.remove_node(&cluster.node);
        tracing::info!(node = %cluster.node, "leases released");
    })
}

fn held_without(cluster: &Cluster, resource: &str) -> BTreeSet<String> {
    let mut h = cluster.held.read().map(|h| h.clone()).unwrap_or_default();
    h.remove(resource);
    h
}

/// One round: heartbeat, renew, give up the excess, take up to the fair share.
fn keep_leases(
    cluster: &Cluster,
    store: &mut dyn Store,
    resources: &[String],
    info: &str,
    held: &mut BTreeSet<String>,
    renewed: &mut HashMap<String, Instant>,
    on_change: &mut impl FnMut(Change),
) {
    let node = cluster.node.as_str();
    let ttl_ms = cluster.ttl_ms();
    let mut lose = |store: &mut dyn Store, held: &mut BTreeSet<String>, resource: &str, release: bool| {
        held.remove(resource);
        // The other threads stop seeing it as ours before its work stops: no new run starts.
        cluster.set_held(held);
        on_change(Change::Lost(resource.to_string()));
        if release {
            let _ = store.release_lease(resource, node);
        }
    };

    if let Err(e) = store.node_heartbeat(node, info) {
        tracing::warn!(node, error = %e, "cannot record this node's heartbeat");
    }
    let live: Vec<String> = match store.nodes(ttl_ms) {
        Ok(nodes) => nodes.into_iter().filter(|n| n.alive).map(|n| n.node).collect(),
        Err(_) => vec![node.to_string()],
    };
    let alive = live.len().max(1);
    // Each node holds between ⌊R÷n⌋ and ⌈R÷n⌉ of the R resources.
    let share = resources.len().div_ceil(alive);
    let floor = resources.len() / alive;

    for resource in held.clone() {
        match store.claim_lease(&resource, node, ttl_ms) {
            Ok(true) => {
                renewed.insert(resource, Instant::now());
            }
            Ok(false) => {
                tracing::warn!(node, %resource, "lease taken over by another node; stopping its work");
                renewed.remove(&resource);
                lose(store, held, &resource, false);
            }
            Err(e) => {
                let stale = renewed.get(&resource).is_none_or(|at| at.elapsed() >= cluster.ttl);
                tracing::warn!(node, %resource, error = %e, stale, "cannot renew a lease");
                if stale {
                    renewed.remove(&resource);
                    lose(store, held, &resource, false);
                }
            }
        }
    }

    let leases = match store.leases() {
        Ok(leases) => leases,
        Err(e) => {
            tracing::warn!(node, error = %e, "cannot read the leases");
            cluster.set_held(held);
            return;
        }
    };
    // Up to the ceiling, normally. While another live node is below the floor
    // (4 resources on 3 nodes held 2, 2, 0), only up to the floor: the
    // ceiling alone would leave that node idle for ever, and a node that gave
    // a lease up for it must not take it straight back.
    let held_by = |n: &str| leases.iter().filter(|l| !l.expired && l.owner == n).count();
    let starving = live.iter().any(|n| n != node && held_by(n) < floor);
    let keep = if starving { floor } else { share };
    if held.len() > keep {
        let mut mine: Vec<String> = held.iter().cloned().collect();
        mine.sort_by_key(|r| preference(node, r));
        for resource in mine.into_iter().skip(keep) {
            tracing::info!(node, %resource, share, alive, "handing a lease over to rebalance");
            renewed.remove(&resource);
            lose(store, held, &resource, true);
        }
    }

    let mut gained = Vec::new();
    if held.len() < keep {
        let taken: HashMap<String, bool> = leases.into_iter().map(|l| (l.resource, l.expired)).collect();
        let mut free: Vec<&String> =
            resources.iter().filter(|r| !held.contains(*r) && taken.get(*r).is_none_or(|expired| *expired)).collect();
        free.sort_by_key(|r| preference(node, r));
        for resource in free {
            if held.len() >= keep {
                break;
            }
            match store.claim_lease(resource, node, ttl_ms) {
                Ok(true) => {
                    held.insert(resource.clone());
                    renewed.insert(resource.clone(), Instant::now());
                    gained.push(resource.clone());
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(node, %resource, error = %e, "cannot claim a lease"),
            }
        }
    }
    drop(lose);
    cluster.set_held(held);
    for resource in gained {
        tracing::info!(node, %resource, "lease taken");
        on_change(Change::Gained(resource));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    struct Node {
        cluster: Arc<Cluster>,
        store: SqliteStore,
        held: BTreeSet<String>,
        renewed: HashMap<String, Instant>,
        changes: Vec<Change>,
    }

    impl Node {
        fn new(name: &str, dir: &std::path::Path) -> Node {
            Node {
                cluster: Cluster::new(name.into(), Duration::from_secs(60)),
                store: SqliteStore::open(dir).expect("store"),
                held: BTreeSet::new(),
                renewed: HashMap::new(),
                changes: Vec::new(),
            }
        }

        fn round(&mut self, resources: &[String]) {
            let changes = &mut self.changes;
            keep_leases(
                &self.cluster,
                &mut self.store,
                resources,
                "test",
                &mut self.held,
                &mut self.renewed,
                &mut |c| changes.push(c),
            );
        }
    }

    /// Every resource held by exactly one node; each node's count in `range`.
    fn assert_shared(nodes: &[Node], resources: &[String], range: std::ops::RangeInclusive<usize>) {
        let mut all: Vec<&String> = nodes.iter().flat_map(|n| n.held.iter()).collect();
        all.sort();
        assert_eq!(all, resources.iter().collect::<Vec<_>>(), "each resource once");
        for n in nodes {
            assert!(range.contains(&n.held.len()), "{} holds {:?}", n.cluster.node, n.held);
            assert!(n.held.iter().all(|r| n.cluster.holds(r)), "what the threads see is what is held");
        }
    }

    #[test]
    fn nodes_converge_on_a_fair_share_and_one_joining_gets_work() {
        let dir = tempfile::tempdir().expect("temp dir");
        let resources: Vec<String> = ["a", "b", "c", "d"].iter().map(|t| source_resource(t, "corp")).collect();
        let mut nodes = vec![Node::new("n1", dir.path())];
        nodes[0].round(&resources);
        assert_shared(&nodes, &resources, 4..=4);

        // Two more join. 4 on 3 has a ceiling of 2, and without the floor rule
        // 2, 2, 0 would be stable.
        nodes.push(Node::new("n2", dir.path()));
        nodes.push(Node::new("n3", dir.path()));
        for _ in 0..6 {
            for n in nodes.iter_mut() {
                n.round(&resources);
            }
        }
        assert_shared(&nodes, &resources, 1..=2);
        // Work moved by giving leases up and taking them: a loss before every gain elsewhere.
        assert!(nodes[0].changes.iter().any(|c| matches!(c, Change::Lost(_))));
        assert!(nodes[1].changes.iter().chain(&nodes[2].changes).all(|c| matches!(c, Change::Gained(_))));

        // Stable: another round changes nothing.
        let before: Vec<BTreeSet<String>> = nodes.iter().map(|n| n.held.clone()).collect();
        for n in nodes.iter_mut() {
            n.round(&resources);
        }
        assert_eq!(before, nodes.iter().map(|n| n.held.clone()).collect::<Vec<_>>());

        // n3 stops cleanly: its leases and its node row go; the others take over.
        let mut gone = nodes.pop().expect("n3");
        for r in std::mem::take(&mut gone.held) {
            gone.store.release_lease(&r, "n3").expect("release");
        }
        gone.store.remove_node("n3").expect("remove");
        for _ in 0..3 {
            for n in nodes.iter_mut() {
                n.round(&resources);
            }
        }
        assert_shared(&nodes, &resources, 2..=2);
    }
}
