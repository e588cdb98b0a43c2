//! What a mapper plugin costs per entry, against the same mapping in native Rust.
//!
//! `cargo bench --bench plugin_cost` (release profile). Prints medians; the
//! numbers in BENCHMARKS.md come from here. No harness: plain timing loops,
//! median of several runs, under a minute on 2 cores.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use roster::plugin_host::{MapOutcome, MapperInstance, PluginBinary, PluginHost, SandboxLimits};
use roster::source::{EntryKind, SourceEntry};

const BATCH: usize = 256;
const TENANT: &str = "bench";

/// A realistic inetOrgPerson as OpenLDAP returns it: 20 attributes.
fn user(i: usize) -> SourceEntry {
    let s = |v: &str| vec![v.as_bytes().to_vec()];
    let attrs: Vec<(String, Vec<Vec<u8>>)> = vec![
        (
            "objectClass".into(),
            ["top", "person", "organizationalPerson", "inetOrgPerson"].iter().map(|c| c.as_bytes().to_vec()).collect(),
        ),
        ("uid".into(), s(&format!("JDoe{i}"))),
        ("cn".into(), s(&format!("John Doe {i}"))),
        ("sn".into(), s("Doe")),
        ("givenName".into(), s("John")),
        ("mail".into(), s(&format!("John.Doe{i}@Example.COM"))),
        ("telephoneNumber".into(), s("+1 555 0100")),
        ("mobile".into(), s("+1 555 0199")),
        ("title".into(), s("Senior Engineer")),
        ("departmentNumber".into(), s("4711")),
        ("employeeNumber".into(), s(&format!("{}", 100_000 + i))),
        ("employeeType".into(), s("permanent")),
        ("o".into(), s("Example Corp")),
        ("ou".into(), s("Engineering")),
        ("l".into(), s("Springfield")),
        ("st".into(), s("IL")),
        ("postalCode".into(), s("62701")),
        ("street".into(), s("742 Evergreen Terrace")),
        ("manager".into(), s("uid=boss,ou=people,dc=example,dc=com")),
        ("entryUUID".into(), s(&format!("8faa54d9-c2dd-5193-b6a6-{i:012}"))),
    ];
    SourceEntry {
        anchor: format!("8faa54d9-c2dd-5193-b6a6-{i:012}"),
        dn: Some(format!("uid=JDoe{i},ou=people,dc=example,dc=com")),
        kind: EntryKind::User,
        attrs,
        members: Vec::new(),
    }
}

/// The built-in default user mapping, by hand:
/// userName = lower(coalesce(uid, sAMAccountName, userPrincipalName, mail, cn)),
/// name.givenName = givenName, name.familyName = sn,
/// displayName = coalesce(displayName, join(' ', givenName, sn), cn), email = lower(first(mail)).
fn native_map(e: &SourceEntry) -> MapOutcome {
    let first = |n: &str| e.first_str(n).filter(|v| !v.is_empty());
    let mut attrs = BTreeMap::new();
    let Some(user_name) = ["uid", "sAMAccountName", "userPrincipalName", "mail", "cn"]
        .iter()
        .find_map(|n| first(n))
        .map(str::to_lowercase)
    else {
        return MapOutcome::Skip("no userName".into());
    };
    attrs.insert("userName".to_string(), vec![user_name]);
    if let Some(g) = first("givenName") {
        attrs.insert("name.givenName".to_string(), vec![g.to_string()]);
    }
    if let Some(sn) = first("sn") {
        attrs.insert("name.familyName".to_string(), vec![sn.to_string()]);
    }
    let joined = [first("givenName"), first("sn")].into_iter().flatten().collect::<Vec<_>>().join(" ");
    let display = first("displayName")
        .map(str::to_string)
        .or_else(|| (!joined.is_empty()).then_some(joined))
        .or_else(|| first("cn").map(str::to_string));
    if let Some(d) = display {
        attrs.insert("displayName".to_string(), vec![d]);
    }
    if let Some(m) = first("mail") {
        attrs.insert("email".to_string(), vec![m.to_lowercase()]);
    }
    MapOutcome::Mapped { kind: EntryKind::User, attrs }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn limits() -> SandboxLimits {
    SandboxLimits { memory_bytes: 64 << 20, call_timeout_ms: 2_000, output_max_bytes: 4 << 20, grant_clock: false }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cache = std::env::temp_dir().join(format!("roster-bench-{}", std::process::id()));
    let binary = PluginBinary::builtin_declarative_mapper();
    let config = toml::Table::new();
    let entries: Vec<SourceEntry> = (0..BATCH).map(user).collect();
    let refs: Vec<&SourceEntry> = entries.iter().collect();

    // Compile once (cache miss), then deserialize from the on-disk cache on fresh hosts.
    let host = PluginHost::new(Some(cache.clone()))?;
    let t = Instant::now();
    let loaded = host.load_mapper(TENANT, &binary)?;
    let compile = t.elapsed();
    assert!(!loaded.from_cache);
    let mut deser = Vec::new();
    for _ in 0..21 {
        let fresh = PluginHost::new(Some(cache.clone()))?;
        let t = Instant::now();
        let l = fresh.load_mapper(TENANT, &binary)?;
        deser.push(t.elapsed());
        assert!(l.from_cache);
    }

    // Instantiate from the InstancePre, plus `init` with the (default) configuration.
    let mut inst = Vec::new();
    for _ in 0..501 {
        let t = Instant::now();
        let i = MapperInstance::new(&host, loaded.clone(), TENANT, limits(), &config)?;
        inst.push(t.elapsed());
        black_box(i);
    }

    // Outputs must agree before timing anything.
    let mut instance = MapperInstance::new(&host, loaded.clone(), TENANT, limits(), &config)?;
    let via_plugin = instance.map_batch(&refs)?;
    let native: Vec<MapOutcome> = refs.iter().map(|e| native_map(e)).collect();
    assert_eq!(via_plugin, native, "the native mapping must produce what the plugin does");

    let runs = 15;
    let iters = 40;
    let mut plugin_runs = Vec::new();
    let mut native_runs = Vec::new();
    for _ in 0..3 {
        black_box(instance.map_batch(&refs)?);
    }
    for _ in 0..runs {
        let t = Instant::now();
        for _ in 0..iters {
            black_box(instance.map_batch(black_box(&refs))?);
        }
        plugin_runs.push(t.elapsed() / (iters * BATCH) as u32);
        let t = Instant::now();
        for _ in 0..iters {
            let out: Vec<MapOutcome> = black_box(&refs).iter().map(|e| native_map(e)).collect();
            black_box(out);
        }
        native_runs.push(t.elapsed() / (iters * BATCH) as u32);
    }
    let plugin = median(plugin_runs);
    let native = median(native_runs);
    let _ = std::fs::remove_dir_all(&cache);

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "plugin_cost: declarative-mapper (built-in), 20-attribute user, batches of {BATCH}, medians of {runs} runs"
    );
    println!("  per entry via plugin host : {:8.3} µs", us(plugin));
    println!("  per entry native Rust     : {:8.3} µs", us(native));
    println!("  ratio plugin / native     : {:8.1} x", plugin.as_secs_f64() / native.as_secs_f64());
    println!("  instantiate + init        : {:8.1} µs (median of {})", us(median(inst)), 501);
    println!(
        "  load from cache           : {:8.1} µs (deserialize + validate + InstancePre, median of 21)",
        us(median(deser))
    );
    println!("  compile (cache miss, once): {:8.1} ms", compile.as_secs_f64() * 1e3);
    println!("  target < 2 µs per entry   : {}", if plugin < Duration::from_micros(2) { "met" } else { "NOT met" });
    Ok(())
}
