//! What a mapper plugin costs per entry, against the same mapping in native Rust.
//!
//! `cargo bench --bench plugin_cost` (release profile). Prints medians; the
//! numbers in BENCHMARKS.md come from here. No harness: plain timing loops,
//! median of several runs, under a minute on 2 cores.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use roster::plugin_host::{
    AttributeDecl, AttributeType, Claimant, ConflictInput, ConflictKindInput, DecisionOutput, GroupInput, MapOutcome,
    MappedUserInput, MapperInstance, PluginBinary, PluginHost, PluginInstance, PluginKind, RoleOutcome, SandboxLimits,
    UserGroupsInput,
};
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
    MapOutcome::Mapped { kind: EntryKind::User, attrs: attrs.into() }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn limits() -> SandboxLimits {
    SandboxLimits { memory_bytes: 64 << 20, call_timeout_ms: 2_000, output_max_bytes: 4 << 20, grant_clock: false }
}

/// The built-in plugin of a stage kind (every stage kind has one; connectors do not).
fn builtin(kind: PluginKind) -> Result<PluginBinary, String> {
    PluginBinary::builtin(kind).ok_or_else(|| format!("no built-in {kind} plugin"))
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
    let mut call_runs = Vec::new();
    let mut native_runs = Vec::new();
    for _ in 0..3 {
        black_box(instance.map_batch(&refs)?);
    }
    for _ in 0..runs {
        let busy = instance.busy();
        let t = Instant::now();
        for _ in 0..iters {
            black_box(instance.map_batch(black_box(&refs))?);
        }
        plugin_runs.push(t.elapsed() / (iters * BATCH) as u32);
        call_runs.push((instance.busy() - busy) / (iters * BATCH) as u32);
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
    println!(
        "  … of which the call       : {:8.3} µs (into the guest, mapping, results back: what a sync's plugin time counts)",
        us(median(call_runs))
    );
    println!("  per entry native Rust     : {:8.3} µs", us(native));
    println!("  ratio plugin / native     : {:8.1} x", plugin.as_secs_f64() / native.as_secs_f64());
    println!("  instantiate + init        : {:8.1} µs (median of {})", us(median(inst)), 501);
    println!(
        "  load from cache           : {:8.1} µs (deserialize + validate + InstancePre, median of 21)",
        us(median(deser))
    );
    println!("  compile (cache miss, once): {:8.1} ms", compile.as_secs_f64() * 1e3);
    println!("  target < 2 µs per entry   : {}", if plugin < Duration::from_micros(2) { "met" } else { "NOT met" });

    other_kinds(&host, &entries)?;
    Ok(())
}

/// Median per-item time of `plugin` and `native` over the same batch, after
/// checking they agree.
fn compare<T: PartialEq + std::fmt::Debug>(
    label: &str,
    unit: &str,
    items: usize,
    mut plugin: impl FnMut() -> Vec<T>,
    mut native: impl FnMut() -> Vec<T>,
) {
    assert_eq!(plugin(), native(), "{label}: the native version must produce what the plugin does");
    let (runs, iters) = (15, 20);
    let (mut p, mut n) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        for _ in 0..iters {
            black_box(plugin());
        }
        p.push(t.elapsed() / (iters * items) as u32);
        let t = Instant::now();
        for _ in 0..iters {
            black_box(native());
        }
        n.push(t.elapsed() / (iters * items) as u32);
    }
    let (p, n) = (median(p), median(n));
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("plugin_cost: {label}, batches of {items}, medians of {runs} runs");
    println!("  per {unit} via plugin host : {:8.3} µs", us(p));
    println!("  per {unit} native Rust     : {:8.3} µs", us(n));
    println!(
        "  ratio plugin / native{}: {:8.1} x",
        " ".repeat(6usize.saturating_sub(unit.len()) + 4),
        p.as_secs_f64() / n.as_secs_f64()
    );
}

fn other_kinds(host: &PluginHost, entries: &[SourceEntry]) -> Result<(), Box<dyn std::error::Error>> {
    // Custom attributes: costCenter = upper(departmentNumber), employeeId integer, permanent boolean.
    let schema = vec![
        AttributeDecl { name: "costCenter".into(), ty: AttributeType::String, required: true, multi_valued: false },
        AttributeDecl { name: "employeeId".into(), ty: AttributeType::Integer, required: false, multi_valued: false },
        AttributeDecl { name: "permanent".into(), ty: AttributeType::Boolean, required: false, multi_valued: false },
    ];
    let config: toml::Table = toml::from_str(
        "costCenter = \"upper(departmentNumber)\"\nemployeeId = \"employeeNumber\"\npermanent = \"eq(employeeType, 'permanent')\"",
    )?;
    let loaded = host.load(TENANT, PluginKind::CustomAttributes, &builtin(PluginKind::CustomAttributes)?)?;
    let mut custom = PluginInstance::with_schema(host, loaded, TENANT, limits(), &config, &schema)?;
    let mapped: Vec<roster::model::Attributes> = entries
        .iter()
        .map(|e| match native_map(e) {
            MapOutcome::Mapped { attrs, .. } => attrs,
            _ => Default::default(),
        })
        .collect();
    let inputs: Vec<MappedUserInput<'_>> =
        entries.iter().zip(&mapped).map(|(entry, mapped)| MappedUserInput { entry, mapped }).collect();
    let native_custom = |e: &SourceEntry| -> Result<roster::model::Attributes, String> {
        let mut out = BTreeMap::new();
        let cc = e.first_str("departmentNumber").filter(|v| !v.is_empty()).ok_or("costCenter required")?;
        out.insert("costCenter".to_string(), vec![cc.to_uppercase()]);
        if let Some(n) = e.first_str("employeeNumber").filter(|v| !v.is_empty()) {
            let n: i64 = n.trim().parse().map_err(|_| "employeeId: not an integer")?;
            out.insert("employeeId".to_string(), vec![n.to_string()]);
        }
        let permanent = e.first_str("employeeType") == Some("permanent");
        out.insert("permanent".to_string(), vec![permanent.to_string()]);
        Ok(out.into())
    };
    compare(
        "declarative-attributes (built-in custom attributes), 3 typed attributes",
        "user",
        inputs.len(),
        || custom.compute(&inputs).expect("custom attributes"),
        || entries.iter().map(native_custom).collect(),
    );

    // Role assignment: 8 groups per user at depths 1–3, 6 rules (names and globs), all roles kept.
    let groups: Vec<GroupInput> = (0..8)
        .map(|g| GroupInput {
            anchor: format!("g{g}"),
            dn: Some(format!("cn=team-{g},ou=groups,dc=example,dc=com")),
            name: format!("team-{g}"),
        })
        .collect();
    let rules = [
        ("group", "cn=team-0,ou=groups,dc=example,dc=com", "admin", 100),
        ("pattern", "team-1*", "engineer", 50),
        ("pattern", "team-?", "member", 10),
        ("group", "team-5", "auditor", 40),
        ("pattern", "*-7", "oncall", 30),
        ("group", "nobody", "never", 1),
    ];
    let mut table = String::new();
    for (k, v, role, prio) in rules {
        table.push_str(&format!("[[rule]]\n{k} = {v:?}\nrole = {role:?}\npriority = {prio}\n"));
    }
    let config: toml::Table = toml::from_str(&table)?;
    let loaded = host.load(TENANT, PluginKind::RoleAssigner, &builtin(PluginKind::RoleAssigner)?)?;
    let mut roles = PluginInstance::new(host, loaded, TENANT, limits(), &config)?;
    let users: Vec<UserGroupsInput<'_>> = mapped
        .iter()
        .enumerate()
        .map(|(i, attrs)| UserGroupsInput {
            anchor: "u",
            attributes: attrs,
            groups: (0..8).map(|g| (g as u32, 1 + ((g + i) % 3) as u32)).collect(),
        })
        .collect();
    let glob = |p: &str, t: &str| -> bool {
        let (p, t): (Vec<char>, Vec<char>) = (p.chars().collect(), t.chars().collect());
        let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
        while ti < t.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some(pi);
                mark = ti;
                pi += 1;
            } else if let Some(s) = star {
                pi = s + 1;
                mark += 1;
                ti = mark;
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|c| *c == '*')
    };
    // Like the plugin: each group of the batch is checked against the rules
    // once, the first time a user of the batch is in it.
    let rules_matching = |group: &GroupInput| -> Vec<(&str, i64)> {
        let name = group.name.to_lowercase();
        rules
            .iter()
            .filter(|(k, v, _, _)| match *k {
                "group" => {
                    group.anchor.eq_ignore_ascii_case(v)
                        || name == v.to_lowercase()
                        || group.dn.as_deref().is_some_and(|d| d.eq_ignore_ascii_case(v))
                }
                _ => glob(&v.to_lowercase(), &name),
            })
            .map(|(_, _, role, prio)| (*role, *prio))
            .collect()
    };
    let native_roles = |users: &[UserGroupsInput<'_>]| -> Vec<RoleOutcome> {
        let mut matching: Vec<Option<Vec<(&str, i64)>>> = vec![None; groups.len()];
        users
            .iter()
            .map(|u| {
                let mut best: BTreeMap<&str, i64> = BTreeMap::new();
                for (g, _) in &u.groups {
                    let hits = matching[*g as usize].get_or_insert_with(|| rules_matching(&groups[*g as usize]));
                    for &(role, prio) in hits.iter() {
                        let p = best.entry(role).or_insert(prio);
                        *p = (*p).max(prio);
                    }
                }
                let mut r: Vec<(i64, &str)> = best.into_iter().map(|(r, p)| (p, r)).collect();
                r.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
                RoleOutcome::Roles(r.into_iter().map(|(_, r)| r.to_string()).collect())
            })
            .collect()
    };
    compare(
        "rule-roles (built-in role assignment), 8 groups x 6 rules",
        "user",
        users.len(),
        || roles.assign(&groups, &users).expect("roles"),
        || native_roles(&users),
    );

    // Conflict resolution: duplicate userName between two 7-attribute users, keep-oldest.
    let loaded = host.load(TENANT, PluginKind::ConflictResolver, &builtin(PluginKind::ConflictResolver)?)?;
    let mut resolver = PluginInstance::new(host, loaded, TENANT, limits(), &toml::Table::new())?;
    let conflicts: Vec<ConflictInput> = mapped
        .chunks(2)
        .map(|pair| ConflictInput {
            kind: ConflictKindInput::DuplicateKey,
            key: "userName".into(),
            value: "jdoe".into(),
            claimants: pair
                .iter()
                .enumerate()
                .map(|(i, attrs)| Claimant {
                    source: "corp".into(),
                    anchor: format!("a{i}"),
                    dn: None,
                    attributes: attrs.clone(),
                    stored_since: (i == 1).then(|| "2024-01-01T00:00:00Z".to_string()),
                    chosen_by_admin: false,
                })
                .collect(),
        })
        .collect();
    let native_decide = |c: &ConflictInput| -> DecisionOutput {
        let oldest = (0..c.claimants.len())
            .min_by_key(|&i| {
                let k = &c.claimants[i];
                (k.stored_since.is_none(), k.stored_since.clone().unwrap_or_default(), i)
            })
            .unwrap_or(0);
        DecisionOutput::Keep(oldest)
    };
    compare(
        "policy-resolver (built-in conflict resolution), duplicate of 2 claimants",
        "conflict",
        conflicts.len(),
        || resolver.resolve(&conflicts).expect("decisions"),
        || conflicts.iter().map(native_decide).collect(),
    );
    Ok(())
}
