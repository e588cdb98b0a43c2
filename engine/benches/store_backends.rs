//! The two store backends side by side (issue 11): the release `roster`
//! binary syncing the same generated directory into SQLite and into
//! PostgreSQL.
//!
//! ```sh
//! cargo bench --bench store_backends -- [--users 10000] [--runs 3] [--no-build]
//! ```
//!
//! The directory is `tests/support/gen-directory.py --with-uuid` (the
//! generator the `directory` bench loads into slapd), read as an LDIF source,
//! so the only difference between the columns is the store. For each backend,
//! `--runs` times (medians reported), every process under `/usr/bin/time`:
//! a full sync into an empty store (SQLite: the file removed; PostgreSQL: a
//! new database), a no-change re-sync, and a sync after 1,000 users changed
//! their display name. PostgreSQL is `ROSTER_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, trust auth), on loopback.
//! Results go to `bench-results/store-backends-u<users>.json` and are printed as a
//! Markdown table (BENCHMARKS.md).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;

const SEED: u64 = 42;
const CHANGED: usize = 1000;
const DB: &str = "roster_bench_store";

struct Args {
    users: usize,
    runs: usize,
    build: bool,
    pg: String,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        users: 10_000,
        runs: 3,
        build: true,
        pg: std::env::var("ROSTER_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--users" => a.users = it.next().context("--users N")?.parse().context("--users")?,
            "--runs" => a.runs = it.next().context("--runs N")?.parse().context("--runs")?,
            "--no-build" => a.build = false,
            "--pg" => a.pg = it.next().context("--pg URL")?,
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => bail!("unknown argument {other} (see the header of engine/benches/store_backends.rs)"),
        }
    }
    ensure!(a.runs >= 1 && a.users >= 1000, "--runs ≥ 1, --users ≥ 1000");
    Ok(a)
}

/// One process under `/usr/bin/time`: wall seconds and peak RSS in MB.
fn timed(cmd: &mut Command, what: &str) -> Result<(f64, f64)> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{what} failed ({}):\n{stderr}", out.status);
    let last = stderr.lines().last().unwrap_or("");
    let mut f = last.split_whitespace();
    let wall: f64 = f.next().and_then(|v| v.parse().ok()).with_context(|| format!("{what}: no time in {last:?}"))?;
    let rss_kb: f64 = f.next().and_then(|v| v.parse().ok()).with_context(|| format!("{what}: no RSS in {last:?}"))?;
    Ok((wall, rss_kb / 1024.0))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pg_admin(url: &str, sql: &str) -> Result<()> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).with_context(|| format!("connecting to {url}"))?;
    c.batch_execute(sql).with_context(|| sql.to_string())
}

fn db_url(admin: &str) -> Result<String> {
    let mut u = url::Url::parse(admin)?;
    u.set_path(&format!("/{DB}"));
    Ok(u.to_string())
}

struct Backend {
    name: &'static str,
    /// `ROSTER_STORE_URL`, for PostgreSQL.
    url: Option<String>,
}

fn fresh_store(b: &Backend, args: &Args, data: &Path) -> Result<()> {
    if data.exists() {
        std::fs::remove_dir_all(data)?;
    }
    if b.url.is_some() {
        pg_admin(&args.pg, &format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))?;
        pg_admin(&args.pg, &format!("CREATE DATABASE {DB}"))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("store_backends: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize()?;
    if args.build {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "-p", "roster", "--bin", "roster"])
            .current_dir(&root)
            .status()?;
        ensure!(status.success(), "cargo build --release failed");
    }
    let roster = root.join("target/release/roster");
    ensure!(roster.is_file(), "{} is not built", roster.display());

    let work = root.join("target/bench-work/store-backends");
    std::fs::create_dir_all(&work)?;
    let groups = args.users / 10;
    let ldif = work.join(format!("directory-u{}-g{groups}.ldif", args.users));
    if !ldif.exists() {
        let out = Command::new("/usr/bin/python3")
            .arg(root.join("tests/support/gen-directory.py"))
            .args(["--users", &args.users.to_string(), "--groups", &groups.to_string(), "--seed", &SEED.to_string()])
            .arg("--with-uuid")
            .arg("--out")
            .arg(&ldif)
            .output()?;
        ensure!(out.status.success(), "gen-directory.py: {}", String::from_utf8_lossy(&out.stderr));
    }
    let original = std::fs::read_to_string(&ldif)?;
    // 1,000 users with a new display name (the first `displayName:` lines).
    let mut n = 0;
    let changed: String = original
        .lines()
        .map(|l| {
            if n < CHANGED && l.starts_with("displayName:") {
                n += 1;
                format!("displayName: Changed {n}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    ensure!(n == CHANGED, "the directory has fewer than {CHANGED} display names");
    let source = work.join("source.ldif");
    let data = work.join("data");
    let cfg = work.join("roster.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\npath = {:?}\n[[tenant]]\nid = \"bench\"\n[[tenant.source]]\nname = \"dir\"\nkind = \"ldif\"\npath = {:?}\n\
             [tenant.mapping]\nuserName = \"lower(uid)\"\ndisplayName = \"coalesce(displayName, cn)\"\nemail = \"lower(mail)\"\n\
             [tenant.safety]\nmax_delete_percent = 100\nmax_deletes = 100000000\n",
            data.display().to_string(),
            source.display().to_string()
        ),
    )?;

    let backends =
        [Backend { name: "SQLite", url: None }, Backend { name: "PostgreSQL", url: Some(db_url(&args.pg)?) }];
    let mut results = serde_json::Map::new();
    for b in &backends {
        let (mut full, mut rss, mut resync, mut changes) = (vec![], vec![], vec![], vec![]);
        for run in 0..args.runs {
            fresh_store(b, &args, &data)?;
            std::fs::write(&source, &original)?;
            let sync = |what: &str| -> Result<(f64, f64)> {
                let mut cmd = Command::new("/usr/bin/time");
                cmd.args(["-f", "%e %M"]).arg(&roster).arg("--config").arg(&cfg).arg("sync");
                match &b.url {
                    Some(u) => cmd.env("ROSTER_STORE_URL", u),
                    None => cmd.env_remove("ROSTER_STORE_URL"),
                };
                timed(&mut cmd, &format!("{} {what} (run {run})", b.name))
            };
            let (w, r) = sync("full sync")?;
            full.push(w);
            rss.push(r);
            resync.push(sync("no-change re-sync")?.0);
            std::fs::write(&source, &changed)?;
            changes.push(sync("sync after 1,000 changes")?.0);
            eprintln!("[store_backends] {} run {run}: full {w:.2}s ({r:.0} MB)", b.name);
        }
        results.insert(
            b.name.into(),
            json!({
                "full_sync_s": median(&mut full),
                "full_sync_peak_rss_mb": median(&mut rss),
                "no_change_resync_s": median(&mut resync),
                "sync_after_1000_changes_s": median(&mut changes),
            }),
        );
    }
    if backends.iter().any(|b| b.url.is_some()) {
        pg_admin(&args.pg, &format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))?;
    }
    let out = root.join("bench-results");
    std::fs::create_dir_all(&out)?;
    let doc = json!({ "users": args.users, "groups": groups, "runs": args.runs, "results": results });
    std::fs::write(out.join(format!("store-backends-u{}.json", args.users)), serde_json::to_string_pretty(&doc)?)?;

    println!(
        "| {} users, {groups} groups (LDIF source), median of {} | SQLite | PostgreSQL | ratio |",
        args.users, args.runs
    );
    println!("|---|---|---|---|");
    for (label, key, unit) in [
        ("full sync into an empty store", "full_sync_s", "s"),
        ("full sync peak RSS", "full_sync_peak_rss_mb", "MB"),
        ("no-change re-sync", "no_change_resync_s", "s"),
        ("sync after 1,000 changed users", "sync_after_1000_changes_s", "s"),
    ] {
        let s = results["SQLite"][key].as_f64().unwrap_or(f64::NAN);
        let p = results["PostgreSQL"][key].as_f64().unwrap_or(f64::NAN);
        println!("| {label} | {s:.2} {unit} | {p:.2} {unit} | {:.2}× |", p / s);
    }
    Ok(())
}
