//! Directory-scale benchmarks (issue 9): the release `roster` binary against a
//! real OpenLDAP server holding a generated directory, next to `ldapsearch`
//! dumping the same entries.
//!
//! ```sh
//! cargo bench --bench directory -- [--users 10000,100000] [--runs 3] [--out bench-results/]
//! cargo bench --bench directory -- --help          # every option
//! ```
//!
//! Needs `slapd`, `ldap-utils` (ldapsearch, ldapmodify), `python3` and GNU
//! `/usr/bin/time`. The bench runs `cargo build --release -p roster --bin roster`
//! first (a no-op when the binary is fresh; `--no-build` skips it and uses
//! `target/release/roster` as it is; `--roster PATH` measures another binary).
//! Relative `--out` paths are relative to the workspace root (cargo runs benches
//! from `engine/`). Generated LDIF is cached in `target/bench-data/`, keyed by
//! the generator's arguments and the script's content.
//!
//! For every size N (users; groups = N/10) it generates a directory with
//! `tests/support/gen-directory.py --with-uuid` (non-ASCII names, heavy-tailed
//! group sizes, nesting, groups of N, N/2 and N/4 members), loads it offline into
//! a fresh slapd (`tests/support/slapd/start-slapd.sh`, loopback, free port,
//! `SLAPD_LOGLEVEL=none NOSYNC=1 OWNER_PID=<this bench>`), and measures, each
//! `--runs` times (medians reported), every roster process under
//! `/usr/bin/time -f '%e %M'` (wall time and peak RSS):
//!
//! 1. `search`: `ldapsearch -x -E pr=1000/noprompt` of every user and group
//!    (`'*' entryUUID`, the attributes Roster asks for) to /dev/null, after one
//!    unmeasured warm-up dump. The baseline every ratio is against.
//! 2. `full`: `roster sync` into an empty store (the database removed before each
//!    run; the compiled-plugin cache kept warm, so plugin compilation is not in
//!    the figure). LDAP source → built-in declarative mapper → custom attributes
//!    (two typed attributes) → role rules over nested groups → diff → SQLite.
//!    Per-phase breakdown from the run's own records: `-vv --log-format json`
//!    log timestamps (LDAP read start/end), the run record (`runs.started_at`,
//!    `finished_at`, `summary.plugin_seconds`) and the outbox (`events.created_at`
//!    is taken when the apply transaction starts).
//! 3. `resync`: `roster sync` again, nothing changed in the directory. Store
//!    writes: rows of users/groups/memberships/events before and after, plus
//!    `SUM(version)`/`MAX(updated_at)` of users and groups (every update bumps
//!    both) and the outbox sequence. Bookkeeping rows a run always writes (its
//!    run record, audit record, source state) are counted separately.
//! 4. `tenants`: one config with `--tenants` tenants (default 100) on the
//!    smallest directory, each reading its own slice (100 users by
//!    `employeeNumber`, ~10 groups by name) with its own mapping, custom
//!    attributes and role rules; one `roster sync` into an empty store.
//! 5. `cli-incremental`: one `ldapmodify` batch of `--batch` changes (3/5
//!    modify, 1/5 add, 1/5 delete, deterministic), then `roster sync`: an
//!    incremental read (RFC 4533 refreshOnly from the cookies the previous
//!    run stored) of the changed entries, then the rest of the pipeline.
//! 6. `serve`: `roster serve` with the source in `sync = { mode = "realtime" }`
//!    (RFC 4533 refreshAndPersist). Measured: the start-up refresh without a
//!    stored cookie (the CLI syncs' cookies are removed first, so the stream
//!    replays the whole directory); per run,
//!    one `ldapmodify` batch of `--batch` changes → all of them committed in the
//!    store; then real-time latency of single changes (one `title` modify at a
//!    time over LDAP from this process, sent when no run is in progress) →
//!    its event committed in the outbox (polled with a read-only SQLite
//!    connection; the outbox rows are written in the apply transaction, so "in
//!    the store" and "in the outbox" are the same commit); then serve is
//!    stopped (SIGTERM), a batch is applied to slapd, and serve restarted:
//!    time until it resumed from its stored cookies and applied the batch.
//!    Up to `--rt-changes` single changes, stopped early after `--rt-budget-secs`.
//!
//! Results: `directory.json` (every sample, medians, environment) and
//! `directory.md` (tables) and `directory.svg` (Roster vs ldapsearch) in `--out`,
//! written after every phase, so a failure at 100k still leaves the 10k results.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::{Value, json};

const TENANT: &str = "bench";
const SEED: u64 = 42;
const PASSWORD_ENV: &str = "BENCH_LDAP_PASSWORD";
const TIME_BIN: &str = "/usr/bin/time";
/// Store tables a run always writes a little to, whatever the directory did.
const BOOKKEEPING_TABLES: &[&str] =
    &["runs", "audit", "source_state", "quarantine", "plugin_health", "tenants", "event_sequences"];
const DATA_TABLES: &[&str] = &["users", "groups", "memberships", "events"];

const USAGE: &str = "\
cargo bench --bench directory -- [options]

  --users N,N,...        directory sizes in users (groups = users/10)   [10000,100000]
  --runs N               measured runs of each thing (median reported)  [3]
  --out DIR              results directory (relative: to the workspace root) [bench-results]
  --phases LIST          any of search,full,resync,tenants,cli-incremental,serve [all]
  --batch N              changes per incremental batch                  [1000]
  --rt-changes N         single changes for the realtime latency        [1000]
  --rt-budget-secs S     stop the latency series after S seconds        [300]
  --tenants N            tenants in the multi-tenant config             [100]
  --tenant-users N       directory size the tenants read slices of      [smallest --users]
  --roster PATH          measure this binary (default target/release/roster)
  --no-build             do not run `cargo build --release -p roster` first
  --keep                 keep the work directory (slapd, stores, logs) under target/bench-work
";

// ----------------------------------------------------------------------------- arguments

#[derive(Debug, Clone)]
struct Args {
    users: Vec<usize>,
    runs: usize,
    out: PathBuf,
    phases: BTreeSet<String>,
    batch: usize,
    rt_changes: usize,
    rt_budget: Duration,
    tenants: usize,
    tenant_users: Option<usize>,
    roster: Option<PathBuf>,
    build: bool,
    keep: bool,
}

const PHASES: &[&str] = &["search", "full", "resync", "tenants", "cli-incremental", "serve"];

fn parse_args() -> Result<Args> {
    let mut a = Args {
        users: vec![10_000, 100_000],
        runs: 3,
        out: PathBuf::from("bench-results"),
        phases: PHASES.iter().map(|p| p.to_string()).collect(),
        batch: 1000,
        rt_changes: 1000,
        rt_budget: Duration::from_secs(300),
        tenants: 100,
        tenant_users: None,
        roster: None,
        build: true,
        keep: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let (key, inline) = match argv[i].split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (argv[i].clone(), None),
        };
        i += 1;
        let mut value = || -> Result<String> {
            if let Some(v) = &inline {
                return Ok(v.clone());
            }
            let v = argv.get(i).cloned().ok_or_else(|| anyhow!("{key} needs a value\n\n{USAGE}"))?;
            i += 1;
            Ok(v)
        };
        let num = |v: String, what: &str| -> Result<usize> {
            v.trim().replace('_', "").parse::<usize>().with_context(|| format!("{what}: '{v}' is not a number"))
        };
        match key.as_str() {
            // `cargo bench` passes --bench to every bench binary.
            "--bench" => {}
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--users" => {
                a.users = value()?.split(',').map(|s| num(s.to_string(), "--users")).collect::<Result<_>>()?;
                ensure!(a.users.iter().all(|&n| n >= 1000), "--users: sizes below 1000 are too small to mean anything");
            }
            "--runs" => a.runs = num(value()?, "--runs")?.max(1),
            "--out" => a.out = PathBuf::from(value()?),
            "--phases" => {
                a.phases = value()?.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
                for p in &a.phases {
                    ensure!(
                        PHASES.contains(&p.as_str()),
                        "--phases: unknown phase '{p}' (known: {})",
                        PHASES.join(",")
                    );
                }
            }
            "--batch" => a.batch = num(value()?, "--batch")?.max(5),
            "--rt-changes" => a.rt_changes = num(value()?, "--rt-changes")?,
            "--rt-budget-secs" => a.rt_budget = Duration::from_secs(num(value()?, "--rt-budget-secs")? as u64),
            "--tenants" => a.tenants = num(value()?, "--tenants")?.clamp(1, 100),
            "--tenant-users" => a.tenant_users = Some(num(value()?, "--tenant-users")?),
            "--roster" => a.roster = Some(PathBuf::from(value()?)),
            "--no-build" => a.build = false,
            "--keep" => a.keep = true,
            // libtest-style filters and flags cargo may forward: ignore quietly.
            other if !other.starts_with('-') => {}
            other => bail!("unknown option '{other}'\n\n{USAGE}"),
        }
    }
    a.users.sort_unstable();
    a.users.dedup();
    Ok(a)
}

// ----------------------------------------------------------------------------- small helpers

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// RFC 3339 (Roster's timestamps, tracing's) → UNIX seconds.
fn parse_ts(s: &str) -> Option<f64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 { s[m] } else { (s[m - 1] + s[m]) / 2.0 })
}

/// Nearest-rank percentile.
fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    Some(s[rank.min(s.len()) - 1])
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn opt(x: Option<f64>) -> Value {
    x.map(|v| json!(r3(v))).unwrap_or(Value::Null)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
        let p = l.local_addr()?.port();
        // start-slapd.sh also takes PORT+1 (LDAPS).
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return Ok(p);
        }
    }
    bail!("no two consecutive free loopback ports found")
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

// ----------------------------------------------------------------------------- timed processes

/// One process run under `/usr/bin/time -f '%e %M'`.
#[derive(Debug, Clone)]
struct Timed {
    /// Wall time measured here (Instant), seconds.
    wall: f64,
    /// Wall time GNU time reports (10 ms resolution), seconds.
    time_wall: f64,
    /// Peak resident set size, MiB.
    rss_mb: f64,
    code: i32,
    started_unix: f64,
    ended_unix: f64,
}

impl Timed {
    fn json(&self) -> Value {
        json!({ "wall_s": r3(self.wall), "time_wall_s": self.time_wall, "peak_rss_mb": r3(self.rss_mb), "exit": self.code })
    }
}

fn parse_time_file(path: &Path) -> Result<(f64, f64)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // "Command exited with non-zero status N" or "Command terminated by signal N" may come first.
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    let mut parts = line.split_whitespace();
    let e = parts.next().and_then(|s| s.parse::<f64>().ok());
    let m = parts.next().and_then(|s| s.parse::<f64>().ok());
    match (e, m) {
        (Some(e), Some(m)) => Ok((e, m / 1024.0)),
        _ => bail!("cannot parse {TIME_BIN} output in {}: {text:?}", path.display()),
    }
}

struct Proc<'a> {
    program: &'a Path,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// None: /dev/null.
    stdout: Option<PathBuf>,
    stderr: PathBuf,
    stdin: Option<PathBuf>,
}

impl Proc<'_> {
    fn command(&self, time_out: &Path) -> Result<Command> {
        let mut cmd = Command::new(TIME_BIN);
        cmd.arg("-f").arg("%e %M").arg("-o").arg(time_out).arg(self.program).args(&self.args);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd.stdin(match &self.stdin {
            Some(p) => Stdio::from(File::open(p).with_context(|| format!("opening {}", p.display()))?),
            None => Stdio::null(),
        });
        cmd.stdout(match &self.stdout {
            Some(p) => Stdio::from(File::create(p).with_context(|| format!("creating {}", p.display()))?),
            None => Stdio::null(),
        });
        cmd.stderr(Stdio::from(
            File::create(&self.stderr).with_context(|| format!("creating {}", self.stderr.display()))?,
        ));
        Ok(cmd)
    }

    /// Runs to completion; a non-zero exit is returned, not an error.
    fn run(&self, label: &str) -> Result<Timed> {
        let time_out = self.stderr.with_extension("time");
        let mut cmd = self.command(&time_out)?;
        let started_unix = unix_now();
        let t0 = Instant::now();
        let status = cmd.status().with_context(|| {
            format!("{label}: cannot run {TIME_BIN} {} (is GNU time installed?)", self.program.display())
        })?;
        let wall = t0.elapsed().as_secs_f64();
        let ended_unix = unix_now();
        let (time_wall, rss_mb) = parse_time_file(&time_out).with_context(|| format!("{label}: timing"))?;
        Ok(Timed { wall, time_wall, rss_mb, code: status.code().unwrap_or(-1), started_unix, ended_unix })
    }
}

// ----------------------------------------------------------------------------- environment

struct Env {
    args: Args,
    root: PathBuf,
    roster: PathBuf,
    work: PathBuf,
    out: PathBuf,
    results: Value,
}

impl Env {
    fn setup(args: Args) -> Result<Env> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("locating the workspace root from CARGO_MANIFEST_DIR")?
            .to_path_buf();
        for tool in [TIME_BIN, "/usr/bin/python3"] {
            ensure!(Path::new(tool).exists(), "{tool} is missing (GNU time and python3 are required)");
        }
        for tool in ["ldapsearch", "ldapmodify"] {
            let ok = Command::new(tool).arg("-VV").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
            ensure!(ok, "{tool} is missing: apt-get install ldap-utils");
        }
        let roster = match &args.roster {
            Some(p) => p.clone(),
            None => {
                if args.build {
                    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                    eprintln!("[directory] cargo build --release -p roster --bin roster (no-op when fresh)");
                    let status = Command::new(&cargo)
                        .args(["build", "--release", "-p", "roster", "--bin", "roster"])
                        .current_dir(&root)
                        .status()
                        .with_context(|| format!("running {cargo} build"))?;
                    ensure!(
                        status.success(),
                        "building the roster binary failed ({status}); fix the build, or pass --no-build to measure the existing target/release/roster"
                    );
                }
                root.join("target/release/roster")
            }
        };
        ensure!(roster.exists(), "{} does not exist: run `cargo build --release -p roster`", roster.display());
        let out = if args.out.is_absolute() { args.out.clone() } else { root.join(&args.out) };
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let work = if args.keep {
            root.join("target/bench-work").join(format!("directory-{}", std::process::id()))
        } else {
            std::env::temp_dir().join(format!("roster-bench-directory-{}", std::process::id()))
        };
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        // Measure a private copy: a `cargo build` elsewhere must not swap the binary mid-run.
        let copy = work.join("roster");
        std::fs::copy(&roster, &copy).with_context(|| format!("copying {} to {}", roster.display(), copy.display()))?;
        let mut results = json!({ "meta": meta(&root, &roster, &args), "sizes": {}, "tenants": null });
        let digest = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(std::fs::read(&copy).context("reading the roster copy")?))
        };
        results["meta"]["roster_binary_sha256"] = json!(digest);
        Ok(Env { args, root, roster: copy, work, out, results })
    }

    fn script(&self, rel: &str) -> PathBuf {
        self.root.join("tests/support").join(rel)
    }

    fn record(&mut self, size: Option<usize>, phase: &str, value: Value) -> Result<()> {
        match size {
            Some(n) => {
                let sizes = self.results["sizes"].as_object_mut().context("results: sizes")?;
                let entry = sizes.entry(n.to_string()).or_insert_with(|| json!({}));
                entry[phase] = value;
            }
            None => self.results[phase] = value,
        }
        self.results["meta"]["finished_at_loadavg"] = json!(loadavg());
        write_reports(self)
    }
}

fn meta(root: &Path, roster: &Path, args: &Args) -> Value {
    let git = |a: &[&str]| -> String {
        Command::new("git")
            .args(a)
            .current_dir(root)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok()))
        .map(|kb| r3(kb / 1024.0 / 1024.0));
    let slapd = Command::new("/usr/sbin/slapd")
        .arg("-VV")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or_default().trim().to_string())
        .unwrap_or_default();
    let version = Command::new(roster)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let mtime = std::fs::metadata(roster)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    json!({
        "date_unix": unix_now() as u64,
        "git": git(&["describe", "--always", "--dirty"]),
        "git_modified_files": git(&["status", "--porcelain", "--untracked-files=no"]).lines().map(str::to_string).collect::<Vec<_>>(),
        "roster_binary": roster.display().to_string(),
        "roster_version": version,
        "roster_binary_mtime_unix": mtime,
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "mem_gib": mem_gib,
        "slapd": slapd,
        "started_at_loadavg": loadavg(),
        "args": {
            "users": args.users, "runs": args.runs, "batch": args.batch, "rt_changes": args.rt_changes,
            "rt_budget_secs": args.rt_budget.as_secs(), "tenants": args.tenants, "phases": args.phases,
        },
    })
}

// ----------------------------------------------------------------------------- generated directory

/// A generated directory: the LDIF and the user DNs the change batches use.
struct Directory {
    users: usize,
    groups: usize,
    ldif: PathBuf,
    /// Users and groups in the LDIF (what a full read returns).
    entries: usize,
    /// `uid=` user DNs, shuffled deterministically; handed out once each.
    pool: Vec<String>,
    cursor: usize,
    /// Globally unique numbers for added entries.
    added: usize,
    gen_secs: Option<f64>,
}

/// One batch of changes: modify (title, sometimes departmentNumber), add, delete.
struct Batch {
    tag: String,
    modify: Vec<String>,
    delete: Vec<String>,
    add_uids: Vec<String>,
    ldif: String,
}

impl Directory {
    fn prepare(env: &Env, users: usize) -> Result<Directory> {
        let groups = users / 10;
        let script = env.script("gen-directory.py");
        let text = std::fs::read(&script).with_context(|| format!("reading {}", script.display()))?;
        let hash = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&text))[..12].to_string()
        };
        let dir = env.root.join("target/bench-data");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let ldif = dir.join(format!("directory-u{users}-g{groups}-seed{SEED}-uuid-{hash}.ldif"));
        let mut gen_secs = None;
        if !ldif.exists() {
            eprintln!("[directory] generating {} ({users} users, {groups} groups)", ldif.display());
            let tmp = ldif.with_extension(format!("tmp{}", std::process::id()));
            let t0 = Instant::now();
            let out = Command::new("/usr/bin/python3")
                .arg(&script)
                .args(["--users", &users.to_string(), "--groups", &groups.to_string(), "--seed", &SEED.to_string()])
                .arg("--with-uuid")
                .arg("--out")
                .arg(&tmp)
                .output()
                .context("running gen-directory.py")?;
            ensure!(
                out.status.success(),
                "gen-directory.py failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::rename(&tmp, &ldif).with_context(|| format!("renaming {} into place", tmp.display()))?;
            gen_secs = Some(t0.elapsed().as_secs_f64());
        }
        let (entries, mut pool) = scan_ldif(&ldif)?;
        ensure!(pool.len() > users / 2, "{}: found only {} uid= user DNs", ldif.display(), pool.len());
        shuffle(&mut pool, 0x9e37_79b9_7f4a_7c15 ^ users as u64);
        Ok(Directory { users, groups, ldif, entries, pool, cursor: 0, added: 0, gen_secs })
    }

    fn take(&mut self, k: usize, what: &str) -> Result<Vec<String>> {
        ensure!(
            self.cursor + k <= self.pool.len(),
            "the {}-user directory has no {k} untouched users left for {what}; use fewer --runs or a smaller --batch",
            self.users
        );
        let v = self.pool[self.cursor..self.cursor + k].to_vec();
        self.cursor += k;
        Ok(v)
    }

    fn batch(&mut self, tag: &str, size: usize, base: &str) -> Result<Batch> {
        let n_mod = size * 3 / 5;
        let n_add = size / 5;
        let n_del = size - n_mod - n_add;
        let modify = self.take(n_mod, "modifications")?;
        let delete = self.take(n_del, "deletions")?;
        let mut add_uids = Vec::new();
        let mut ldif = String::new();
        let (mut m, mut a, mut d) = (0, 0, 0);
        for i in 0..size {
            // Interleaved: 3 modify, 1 add, 1 delete, … (the next kind with some left).
            let want = match i % 5 {
                0..=2 => 0,
                3 => 1,
                _ => 2,
            };
            let left = [n_mod - m, n_add - a, n_del - d];
            let kind = (0..3).map(|k| (want + k) % 3).find(|&k| left[k] > 0).context("internal: batch ran out")?;
            match kind {
                0 => {
                    let dn = &modify[m];
                    let _ = write!(ldif, "dn: {dn}\nchangetype: modify\nreplace: title\ntitle: Bench {tag} {m}\n-\n");
                    if m % 2 == 0 {
                        let _ = write!(ldif, "replace: departmentNumber\ndepartmentNumber: B-{:04}\n-\n", m % 97);
                    }
                    ldif.push('\n');
                    m += 1;
                }
                1 => {
                    self.added += 1;
                    let uid = format!("bench-{tag}-{a}");
                    let _ = write!(
                        ldif,
                        "dn: uid={uid},ou=people,{base}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: Bench {tag} {a}\nsn: Bench\ngivenName: Added\nmail: {uid}@example.com\ntitle: Added by the bench\ndepartmentNumber: D-0001\nemployeeNumber: {}\n\n",
                        900_000 + self.added
                    );
                    add_uids.push(uid);
                    a += 1;
                }
                _ => {
                    let _ = write!(ldif, "dn: {}\nchangetype: delete\n\n", delete[d]);
                    d += 1;
                }
            }
        }
        ensure!(m == n_mod && a == n_add && d == n_del, "internal: batch composition {m}/{a}/{d}");
        Ok(Batch { tag: tag.to_string(), modify, delete, add_uids, ldif })
    }
}

/// (users + groups, uid= user DNs) of a generated LDIF. Folded lines are joined;
/// base64 DNs (non-ASCII, escaped) are skipped: the batches only need plain ones.
fn scan_ldif(path: &Path) -> Result<(usize, Vec<String>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut entries = 0;
    let mut dns = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut flush = |record: &mut Vec<String>| {
        let dn = record.iter().find_map(|l| l.strip_prefix("dn: ")).map(str::to_string);
        let oc = |c: &str| record.iter().any(|l| l.eq_ignore_ascii_case(c));
        let (user, group) = (oc("objectClass: inetOrgPerson"), oc("objectClass: groupOfNames"));
        if user || group {
            entries += 1;
        }
        if let (true, Some(dn)) = (user, dn) {
            if dn.to_ascii_lowercase().starts_with("uid=") {
                dns.push(dn);
            }
        }
        record.clear();
    };
    for line in text.lines() {
        if line.is_empty() {
            flush(&mut record);
        } else if let Some(rest) = line.strip_prefix(' ') {
            if let Some(last) = record.last_mut() {
                last.push_str(rest);
            }
        } else if !line.starts_with('#') {
            record.push(line.to_string());
        }
    }
    flush(&mut record);
    Ok((entries, dns))
}

fn shuffle(v: &mut [String], mut seed: u64) {
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in (1..v.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

// ----------------------------------------------------------------------------- slapd

struct Slapd {
    dir: PathBuf,
    stop_script: PathBuf,
    uri: String,
    base: String,
    admin_dn: String,
    admin_pw: String,
    svc_dn: String,
    svc_pw: String,
    load_secs: f64,
}

impl Slapd {
    fn start(env: &Env, name: &str, ldif: &Path) -> Result<Slapd> {
        let dir = env.work.join(name);
        let script = env.script("slapd/start-slapd.sh");
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            eprintln!("[directory] starting slapd on 127.0.0.1:{port} with {}", ldif.display());
            let t0 = Instant::now();
            let out = Command::new("bash")
                .arg(&script)
                .arg(&dir)
                .arg(port.to_string())
                .arg(ldif)
                .env("SLAPD_LOGLEVEL", "none")
                .env("NOSYNC", "1")
                .env("OWNER_PID", std::process::id().to_string())
                .stdin(Stdio::null())
                .output()
                .context("running start-slapd.sh")?;
            if out.status.code() == Some(4) {
                last = String::from_utf8_lossy(&out.stderr).to_string();
                continue; // port taken meanwhile: another one
            }
            ensure!(
                out.status.success(),
                "start-slapd.sh {} {port} failed ({}):\n{}",
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            let load_secs = t0.elapsed().as_secs_f64();
            let vars = read_env_file(&dir.join("env"))?;
            let get = |k: &str| vars.get(k).cloned().ok_or_else(|| anyhow!("{}/env has no {k}", dir.display()));
            return Ok(Slapd {
                stop_script: env.script("slapd/stop-slapd.sh"),
                uri: get("LDAP_URI")?,
                base: get("LDAP_BASE")?,
                admin_dn: get("LDAP_ADMIN_DN")?,
                admin_pw: get("LDAP_ADMIN_PW")?,
                svc_dn: get("LDAP_SVC_DN")?,
                svc_pw: get("LDAP_SVC_PW")?,
                dir,
                load_secs,
            });
        }
        bail!("start-slapd.sh: no free port after 5 attempts: {last}")
    }

    fn ldapmodify(&self, file: &Path, log: &Path) -> Result<Timed> {
        let prog = PathBuf::from("ldapmodify");
        let p = Proc {
            program: &prog,
            args: vec![
                "-x".into(),
                "-H".into(),
                self.uri.clone(),
                "-D".into(),
                self.admin_dn.clone(),
                "-w".into(),
                self.admin_pw.clone(),
                "-f".into(),
                file.display().to_string(),
            ],
            envs: vec![],
            stdout: None,
            stderr: log.to_path_buf(),
            stdin: None,
        };
        let t = p.run("ldapmodify")?;
        ensure!(t.code == 0, "ldapmodify -f {} exited with {}:\n{}", file.display(), t.code, tail(log, 20));
        Ok(t)
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.stop_script)
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `KEY=value` / `KEY='value'` lines of start-slapd.sh's env file.
fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut vars = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim();
            let v = if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') {
                v[1..v.len() - 1].replace("'\\''", "'")
            } else {
                v.to_string()
            };
            vars.insert(k.trim().to_string(), v);
        }
    }
    Ok(vars)
}

// ----------------------------------------------------------------------------- roster configuration

struct TenantSpec {
    id: String,
    user_filter: Option<String>,
    group_filter: Option<String>,
    /// Makes the mapping this tenant's own.
    variant: Option<String>,
    realtime: bool,
}

fn tenant_toml(slapd: &Slapd, t: &TenantSpec) -> String {
    let base = &slapd.base;
    let mut s = String::new();
    let _ = writeln!(s, "[[tenant]]\nid = {}\n", toml_str(&t.id));
    let _ = writeln!(s, "[[tenant.source]]\nname = \"corp\"\nkind = \"ldap\"");
    let _ = writeln!(s, "url = {}", toml_str(&slapd.uri));
    let _ = writeln!(s, "bind_dn = {}", toml_str(&slapd.svc_dn));
    let _ = writeln!(s, "bind_password = {{ env = \"{PASSWORD_ENV}\" }}");
    let _ = writeln!(s, "user_base = {}", toml_str(&format!("ou=people,{base}")));
    let _ = writeln!(s, "group_base = {}", toml_str(&format!("ou=groups,{base}")));
    if let Some(f) = &t.user_filter {
        let _ = writeln!(s, "user_filter = {}", toml_str(f));
    }
    if let Some(f) = &t.group_filter {
        let _ = writeln!(s, "group_filter = {}", toml_str(f));
    }
    if t.realtime {
        let _ = writeln!(s, "sync = {{ mode = \"realtime\" }}");
    }
    s.push_str(
        r#"
[tenant.mapping]
userName = "lower(uid)"
"name.givenName" = "givenName"
"name.familyName" = "sn"
displayName = "coalesce(displayName, join(' ', givenName, sn), cn)"
email = "lower(first(mail))"
title = "title"
"#,
    );
    if let Some(v) = &t.variant {
        let _ = writeln!(s, "department = {}", toml_str(&format!("concat('{v}-', first(departmentNumber))")));
    }
    let _ = write!(
        s,
        r#"
[tenant.custom_attributes.costCenter]
type = "string"
from = "upper(departmentNumber)"

[tenant.custom_attributes.employeeId]
type = "integer"
from = "employeeNumber"

[[tenant.roles.rule]]
group = {}
role = "staff"
priority = 10

[[tenant.roles.rule]]
pattern = "alpha-*"
role = "alpha"
priority = 50

[[tenant.roles.rule]]
pattern = "nest-chain-*"
role = "chain-member"
priority = 60

[tenant.safety]
max_deletes = 100000000
max_delete_percent = 100

"#,
        toml_str(&format!("cn=all-staff,ou=groups,{base}"))
    );
    s
}

fn write_config(path: &Path, store: &Path, serve_listen: Option<&str>, tenants: &str) -> Result<()> {
    let mut s = format!(
        "# written by engine/benches/directory.rs\n[store]\npath = {}\n\n",
        toml_str(&store.display().to_string())
    );
    if let Some(l) = serve_listen {
        let _ = writeln!(s, "[serve]\nlisten = {}\n", toml_str(l));
    }
    s.push_str(tenants);
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

// ----------------------------------------------------------------------------- the store, read-only

fn open_db(store: &Path) -> Result<Connection> {
    let path = store.join("roster.db");
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("opening {} read-only", path.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

/// Removes the source's RFC 4533 cookies from the store, so the next start
/// of `serve` refreshes from nothing.
fn forget_cookies(store: &Path) -> Result<()> {
    let conn = Connection::open(store.join("roster.db"))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute("DELETE FROM source_state WHERE key LIKE 'syncrepl.%'", [])?;
    Ok(())
}

fn remove_db(store: &Path) -> Result<()> {
    for f in ["roster.db", "roster.db-wal", "roster.db-shm"] {
        let p = store.join(f);
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct RunRecord {
    id: i64,
    trigger: String,
    status: String,
    started: f64,
    finished: Option<f64>,
    summary: Value,
}

impl RunRecord {
    fn counts(&self) -> (i64, i64, i64, i64, i64) {
        let c = &self.summary["counts"];
        let g = |k: &str| c[k].as_i64().unwrap_or(0);
        (g("creates"), g("updates"), g("deletes"), g("members_added"), g("members_removed"))
    }
    fn duration(&self) -> Option<f64> {
        self.finished.map(|f| f - self.started)
    }
}

fn runs_after(conn: &Connection, after_id: i64) -> Result<Vec<RunRecord>> {
    let mut st = conn.prepare_cached(
        "SELECT id, trigger, status, started_at, finished_at, summary FROM runs WHERE tenant = ?1 AND id > ?2 ORDER BY id",
    )?;
    let rows = st.query_map(params![TENANT, after_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, trigger, status, started, finished, summary) = row?;
        out.push(RunRecord {
            id,
            trigger,
            status,
            started: parse_ts(&started).unwrap_or(0.0),
            finished: finished.as_deref().and_then(parse_ts),
            summary: serde_json::from_str(&summary).unwrap_or(Value::Null),
        });
    }
    Ok(out)
}

fn last_run_id(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT COALESCE(MAX(id), 0) FROM runs", [], |r| r.get(0))?)
}

fn last_seq(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events WHERE tenant = ?1", params![TENANT], |r| r.get(0))?)
}

fn runs_in_progress(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM runs WHERE finished_at IS NULL", [], |r| r.get(0))?)
}

/// When the apply transaction of a run started (the outbox rows carry it).
fn apply_started(conn: &Connection, run_id: i64) -> Result<Option<f64>> {
    let s: Option<String> = conn
        .query_row(
            "SELECT MIN(created_at) FROM events WHERE tenant = ?1 AND run_id = ?2",
            params![TENANT, run_id],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    Ok(s.as_deref().and_then(parse_ts))
}

/// What the store holds, to tell whether a run wrote anything.
fn store_marks(store: &Path) -> Result<BTreeMap<String, Value>> {
    let conn = open_db(store)?;
    let mut m = BTreeMap::new();
    for t in DATA_TABLES.iter().chain(BOOKKEEPING_TABLES) {
        let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))?;
        m.insert(format!("rows.{t}"), json!(n));
    }
    for t in ["users", "groups"] {
        let (v, u): (i64, Option<String>) =
            conn.query_row(&format!("SELECT COALESCE(SUM(version), 0), MAX(updated_at) FROM {t}"), [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        m.insert(format!("{t}.sum_version"), json!(v));
        m.insert(format!("{t}.max_updated_at"), json!(u));
    }
    m.insert("events.last_seq".into(), json!(last_seq(&conn)?));
    Ok(m)
}

/// Store writes between two marks: data (objects, memberships, outbox) and bookkeeping.
fn store_writes(before: &BTreeMap<String, Value>, after: &BTreeMap<String, Value>) -> Value {
    let num = |m: &BTreeMap<String, Value>, k: &str| m.get(k).and_then(Value::as_i64).unwrap_or(0);
    let mut data = serde_json::Map::new();
    for t in DATA_TABLES {
        let k = format!("rows.{t}");
        data.insert(format!("{t}_rows_delta"), json!(num(after, &k) - num(before, &k)));
    }
    for t in ["users", "groups"] {
        data.insert(
            format!("{t}_updated"),
            json!(
                num(after, &format!("{t}.sum_version")) != num(before, &format!("{t}.sum_version"))
                    || after.get(&format!("{t}.max_updated_at")) != before.get(&format!("{t}.max_updated_at"))
            ),
        );
    }
    data.insert("outbox_events_written".into(), json!(num(after, "events.last_seq") - num(before, "events.last_seq")));
    let zero = DATA_TABLES.iter().all(|t| num(after, &format!("rows.{t}")) == num(before, &format!("rows.{t}")))
        && data.iter().all(|(k, v)| !k.ends_with("_updated") || v == &json!(false))
        && num(after, "events.last_seq") == num(before, "events.last_seq");
    let mut books = serde_json::Map::new();
    for t in BOOKKEEPING_TABLES {
        let k = format!("rows.{t}");
        books.insert(t.to_string(), json!(num(after, &k) - num(before, &k)));
    }
    json!({ "zero_data_writes": zero, "data": data, "bookkeeping_rows_delta": books })
}

/// Whether a batch is in the store: modified titles, added users, deleted users gone.
/// Where a batch stands in the store: (modified titles, added users, deleted users
/// still present). Three table scans, no per-DN query (users.dn has no index):
/// ≈ 0.3 s at 100k users, so it is never on the clock.
fn batch_in_store(conn: &Connection, b: &Batch) -> Result<(i64, i64, i64)> {
    let modified: i64 = conn.query_row(
        "SELECT COUNT(*) FROM users WHERE tenant = ?1 AND attrs LIKE ?2",
        params![TENANT, format!("%\"Bench {} %", b.tag)],
        |r| r.get(0),
    )?;
    let added: i64 = conn.query_row(
        "SELECT COUNT(*) FROM users WHERE tenant = ?1 AND user_name LIKE ?2",
        params![TENANT, format!("bench-{}-%", b.tag)],
        |r| r.get(0),
    )?;
    let deleted: BTreeSet<String> = b.delete.iter().map(|d| d.to_lowercase()).collect();
    let mut st = conn.prepare_cached("SELECT dn FROM users WHERE tenant = ?1 AND dn IS NOT NULL")?;
    let mut still = 0i64;
    for dn in st.query_map(params![TENANT], |r| r.get::<_, String>(0))? {
        if deleted.contains(&dn?.to_lowercase()) {
            still += 1;
        }
    }
    Ok((modified, added, still))
}

fn batch_complete(conn: &Connection, b: &Batch) -> Result<bool> {
    let (m, a, d) = batch_in_store(conn, b)?;
    Ok(m == b.modify.len() as i64 && a == b.add_uids.len() as i64 && d == 0)
}

/// User events in the outbox after `seq`, by type (cheap: a range of the primary key).
fn user_events_after(conn: &Connection, seq: i64) -> Result<BTreeMap<String, i64>> {
    let mut st = conn.prepare_cached(
        "SELECT type, COUNT(*) FROM events WHERE tenant = ?1 AND seq > ?2 AND object_kind = 'user' GROUP BY type",
    )?;
    let rows = st.query_map(params![TENANT, seq], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

// ----------------------------------------------------------------------------- one roster sync

/// Timestamps from `--log-format json -vv`.
#[derive(Debug, Default)]
struct LogMarks {
    read_start: Option<f64>,
    users_done: Option<f64>,
    read_done: Option<f64>,
    plugins_loaded: Option<f64>,
    plugins_from_cache: Option<bool>,
    /// The `-vv` "apply transaction" split, when this Roster logs it (ms).
    apply_split: Option<Value>,
    /// When that line was logged: right after the apply transaction committed.
    committed: Option<f64>,
}

fn log_marks(path: &Path) -> LogMarks {
    let mut m = LogMarks::default();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        let ts = v["timestamp"].as_str().and_then(parse_ts);
        let f = &v["fields"];
        match f["message"].as_str().unwrap_or_default() {
            "reading LDAP directory" if m.read_start.is_none() => m.read_start = ts,
            "search complete" if f["kind"] == "user" && m.users_done.is_none() => m.users_done = ts,
            "LDAP read complete" if m.read_done.is_none() => m.read_done = ts,
            "apply transaction" => {
                let keys = ["objects_ms", "memberships_ms", "audit_ms", "commit_ms", "rows"];
                m.apply_split = Some(Value::Object(keys.iter().map(|k| (k.to_string(), f[*k].clone())).collect()));
                m.committed = ts;
            }
            "plugin loaded" => {
                m.plugins_loaded = ts;
                let cached = f["from_cache"].as_bool().unwrap_or(false);
                m.plugins_from_cache = Some(m.plugins_from_cache.unwrap_or(true) && cached);
            }
            _ => {}
        }
    }
    m
}

struct SyncSample {
    timed: Timed,
    run: RunRecord,
    breakdown: Value,
    apply_split: Option<Value>,
}

impl SyncSample {
    fn json(&self) -> Value {
        let (c, u, d, ma, mr) = self.run.counts();
        let src = &self.run.summary["sources"][0];
        json!({
            "process": self.timed.json(),
            "run_id": self.run.id,
            "status": self.run.status,
            "read_mode": src["read"]["mode"],
            "read": { "users": src["read"]["users"], "groups": src["read"]["groups"], "pages": src["read"]["requests"] },
            "quarantined": src["quarantined"],
            "not_remapped": src["not_remapped"],
            "counts": { "creates": c, "updates": u, "deletes": d, "members_added": ma, "members_removed": mr },
            "plugin_seconds": self.run.summary["plugin_seconds"],
            "phase_ms": self.run.summary["phase_ms"],
            "apply_split_ms": self.apply_split,
            "breakdown_s": self.breakdown,
        })
    }
}

fn roster_sync(env: &Env, cfg: &Path, store: &Path, slapd: &Slapd, label: &str, verbose: bool) -> Result<SyncSample> {
    roster_sync_with(env, cfg, store, slapd, label, verbose, &[])
}

fn roster_sync_with(
    env: &Env,
    cfg: &Path,
    store: &Path,
    slapd: &Slapd,
    label: &str,
    verbose: bool,
    sync_args: &[&str],
) -> Result<SyncSample> {
    let log = env.work.join("logs").join(format!("{label}.log"));
    std::fs::create_dir_all(log.parent().context("log dir")?)?;
    let mut args = vec!["--config".to_string(), cfg.display().to_string(), "--log-format".into(), "json".into()];
    if verbose {
        args.push("-vv".into());
    }
    args.push("sync".into());
    args.extend(sync_args.iter().map(|a| a.to_string()));
    let p = Proc {
        program: &env.roster,
        args,
        envs: vec![(PASSWORD_ENV.into(), slapd.svc_pw.clone())],
        stdout: None,
        stderr: log.clone(),
        stdin: None,
    };
    let before = if store.join("roster.db").exists() { last_run_id(&open_db(store)?)? } else { 0 };
    let timed = p.run(label)?;
    ensure!(
        timed.code == 0,
        "roster sync ({label}) exited with {} (see {}):\n{}",
        timed.code,
        log.display(),
        tail(&log, 15)
    );
    let conn = open_db(store)?;
    let runs = runs_after(&conn, before)?;
    ensure!(runs.len() == 1, "roster sync ({label}): expected one new run record, found {}", runs.len());
    let run = runs.into_iter().next().context("run record")?;
    let marks = log_marks(&log);
    let apply = apply_started(&conn, run.id)?;
    let d = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => json!(r3(b - a)),
        _ => Value::Null,
    };
    let breakdown = json!({
        "total_process": r3(timed.wall),
        "startup_to_run_start": d(Some(timed.started_unix), Some(run.started)),
        "start_to_applied": d(Some(timed.started_unix), marks.committed),
        "store_snapshot_load": d(Some(run.started), marks.read_start),
        "ldap_read_and_map": d(marks.read_start, marks.read_done),
        "ldap_users_search": d(marks.read_start, marks.users_done),
        "ldap_groups_search": d(marks.users_done, marks.read_done),
        "members_roles_conflicts_diff": d(marks.read_done, apply),
        "apply_and_run_record": d(apply, run.finished),
        "after_read_total": d(marks.read_done, run.finished),
        "exit_after_run_record": d(run.finished, Some(timed.ended_unix)),
        "plugins_from_cache": marks.plugins_from_cache,
    });
    Ok(SyncSample { timed, run, breakdown, apply_split: marks.apply_split })
}

/// Medians of the numeric fields of a list of breakdowns.
fn median_breakdown(samples: &[SyncSample]) -> Value {
    let mut keys: BTreeSet<String> = BTreeSet::new();
    for s in samples {
        if let Some(o) = s.breakdown.as_object() {
            keys.extend(o.iter().filter(|(_, v)| v.is_number()).map(|(k, _)| k.clone()));
        }
    }
    let mut out = serde_json::Map::new();
    for k in keys {
        let v: Vec<f64> = samples.iter().filter_map(|s| s.breakdown[&k].as_f64()).collect();
        out.insert(k, opt(median(&v)));
    }
    let mut plugin = serde_json::Map::new();
    for kind in ["mapper", "custom-attributes", "role-assigner", "conflict-resolver"] {
        let v: Vec<f64> = samples.iter().filter_map(|s| s.run.summary["plugin_seconds"][kind].as_f64()).collect();
        if !v.is_empty() {
            plugin.insert(kind.into(), opt(median(&v)));
        }
    }
    out.insert("plugin_seconds".into(), Value::Object(plugin));
    let runs: Vec<&RunRecord> = samples.iter().map(|s| &s.run).collect();
    out.insert("roster_phase_ms".into(), median_phase_ms(&runs));
    let splits: Vec<&Value> = samples.iter().filter_map(|s| s.apply_split.as_ref()).collect();
    out.insert("apply_split_ms".into(), median_fields(&splits));
    Value::Object(out)
}

/// Medians of the numeric fields of JSON objects.
fn median_fields(objects: &[&Value]) -> Value {
    let keys: BTreeSet<String> = objects.iter().filter_map(|o| o.as_object()).flat_map(|o| o.keys().cloned()).collect();
    let mut out = serde_json::Map::new();
    for k in keys {
        let v: Vec<f64> = objects.iter().filter_map(|o| o[&k].as_f64()).collect();
        if !v.is_empty() {
            out.insert(k, opt(median(&v)));
        }
    }
    if out.is_empty() { Value::Null } else { Value::Object(out) }
}

/// Medians of the run records' own `phase_ms` (Roster's per-phase timings), when it has them.
fn median_phase_ms(runs: &[&RunRecord]) -> Value {
    let phases: Vec<&Value> = runs.iter().map(|r| &r.summary["phase_ms"]).filter(|p| p.is_object()).collect();
    median_fields(&phases)
}

fn medians_of(samples: &[SyncSample]) -> Value {
    let wall: Vec<f64> = samples.iter().map(|s| s.timed.wall).collect();
    let rss: Vec<f64> = samples.iter().map(|s| s.timed.rss_mb).collect();
    json!({ "wall_s": opt(median(&wall)), "peak_rss_mb": opt(median(&rss)), "max_peak_rss_mb": opt(rss.iter().cloned().reduce(f64::max)) })
}

// ----------------------------------------------------------------------------- roster serve

struct Serve {
    child: Child,
    time_out: PathBuf,
    log: PathBuf,
    started: Instant,
    started_unix: f64,
    stopped: bool,
}

impl Serve {
    fn start(env: &Env, cfg: &Path, slapd: &Slapd, label: &str) -> Result<Serve> {
        let log = env.work.join("logs").join(format!("{label}.log"));
        std::fs::create_dir_all(log.parent().context("log dir")?)?;
        let time_out = log.with_extension("time");
        let p = Proc {
            program: &env.roster,
            args: vec![
                "--config".into(),
                cfg.display().to_string(),
                "--log-format".into(),
                "json".into(),
                "-v".into(),
                "serve".into(),
            ],
            envs: vec![(PASSWORD_ENV.into(), slapd.svc_pw.clone())],
            stdout: Some(log.with_extension("stdout")),
            stderr: log.clone(),
            stdin: None,
        };
        let mut cmd = p.command(&time_out)?;
        let started_unix = unix_now();
        let started = Instant::now();
        let child = cmd.spawn().with_context(|| format!("{label}: starting roster serve"))?;
        Ok(Serve { child, time_out, log, started, started_unix, stopped: false })
    }

    fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("roster serve exited early ({status}); log {}:\n{}", self.log.display(), tail(&self.log, 20));
        }
        Ok(())
    }

    /// The roster process under /usr/bin/time.
    fn roster_pid(&self) -> Option<i32> {
        let parent = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).unwrap_or_default();
        if let Some(p) = children.split_whitespace().next().and_then(|p| p.parse().ok()) {
            return Some(p);
        }
        // Without CONFIG_PROC_CHILDREN: the process whose parent is /usr/bin/time.
        for e in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let ppid =
                stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) {
                return Some(pid);
            }
        }
        None
    }

    /// SIGTERM (a graceful stop: runs in progress finish), then wait.
    fn stop(&mut self) -> Result<Timed> {
        self.stopped = true;
        if self.child.try_wait()?.is_none() {
            if let Some(pid) = self.roster_pid() {
                // SAFETY: plain kill(2) on a pid we started (the child of our /usr/bin/time).
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("roster serve did not stop within 120 s of SIGTERM; killed. Log: {}", self.log.display());
            }
            sleep_ms(20);
        };
        let wall = self.started.elapsed().as_secs_f64();
        let (time_wall, rss_mb) = parse_time_file(&self.time_out).context("roster serve timing")?;
        Ok(Timed {
            wall,
            time_wall,
            rss_mb,
            code: status.code().unwrap_or(-1),
            started_unix: self.started_unix,
            ended_unix: unix_now(),
        })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.stop();
        }
    }
}

/// Waits until the store exists and has a finished `realtime` run after `after_id`.
fn wait_first_realtime_run(serve: &mut Serve, store: &Path, after_id: i64, timeout: Duration) -> Result<RunRecord> {
    let deadline = Instant::now() + timeout;
    loop {
        serve.alive()?;
        if store.join("roster.db").exists() {
            let conn = open_db(store)?;
            if let Some(r) =
                runs_after(&conn, after_id)?.into_iter().find(|r| r.trigger == "realtime" && r.finished.is_some())
            {
                ensure!(
                    r.status == "applied" || r.status == "no-changes",
                    "the first realtime run ended '{}': {}",
                    r.status,
                    r.summary["detail"]
                );
                return Ok(r);
            }
        }
        ensure!(Instant::now() < deadline, "no realtime run finished within {timeout:?}; log {}", serve.log.display());
        sleep_ms(20);
    }
}

/// No run in progress, and none started for `quiet`.
fn wait_idle(serve: &mut Serve, conn: &Connection, quiet: Duration, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut since: Option<(Instant, i64)> = None;
    loop {
        serve.alive()?;
        let busy = runs_in_progress(conn)?;
        let last = last_run_id(conn)?;
        match since {
            Some((t, id)) if busy == 0 && id == last && t.elapsed() >= quiet => return Ok(()),
            Some((_, id)) if busy == 0 && id == last => {}
            _ => since = if busy == 0 { Some((Instant::now(), last)) } else { None },
        }
        ensure!(Instant::now() < deadline, "roster serve did not become idle within {timeout:?}");
        sleep_ms(2);
    }
}

/// Polls the outbox until the whole batch is committed; returns when it was seen.
/// On the clock only the outbox is polled (a primary-key range: the batch's
/// events, written in the same transaction as its rows); once the counts are
/// there, the store is checked exactly off the clock. Should that check fail
/// (an unrelated event made up the count), polling goes on and the time the
/// exact check passes is returned instead.
fn wait_batch(serve: &mut Serve, conn: &Connection, b: &Batch, seq0: i64, timeout: Duration) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    let want = (b.add_uids.len() as i64, b.modify.len() as i64, b.delete.len() as i64);
    let mut counted = false;
    loop {
        let ev = user_events_after(conn, seq0)?;
        let got = |t: &str| ev.get(t).copied().unwrap_or(0);
        if got("user.created") >= want.0 && got("user.updated") >= want.1 && got("user.deleted") >= want.2 {
            let seen = Instant::now();
            if batch_complete(conn, b)? {
                return Ok(if counted { Instant::now() } else { seen });
            }
            counted = true;
        }
        serve.alive()?;
        if Instant::now() > deadline {
            let (m, a, d) = batch_in_store(conn, b)?;
            bail!(
                "batch {} not applied within {timeout:?}: store has {m}/{} modified, {a}/{} added, {d} of {} deleted still present; outbox {ev:?}; log {}",
                b.tag,
                b.modify.len(),
                b.add_uids.len(),
                b.delete.len(),
                serve.log.display()
            );
        }
        sleep_ms(if counted { 50 } else { 5 });
    }
}

// ----------------------------------------------------------------------------- phases

struct Size {
    n: usize,
    dir: Directory,
    slapd: Slapd,
    work: PathBuf,
    cfg: PathBuf,
    store: PathBuf,
}

impl Size {
    fn setup(env: &Env, n: usize) -> Result<Size> {
        let dir = Directory::prepare(env, n)?;
        let slapd = Slapd::start(env, &format!("slapd-{n}"), &dir.ldif)?;
        let work = env.work.join(format!("u{n}"));
        std::fs::create_dir_all(&work)?;
        let cfg = work.join("roster.toml");
        let store = work.join("store");
        let spec =
            TenantSpec { id: TENANT.into(), user_filter: None, group_filter: None, variant: None, realtime: false };
        write_config(&cfg, &store, None, &tenant_toml(&slapd, &spec))?;
        Ok(Size { n, dir, slapd, work, cfg, store })
    }

    fn info(&self) -> Value {
        json!({
            "users": self.dir.users, "groups": self.dir.groups, "entries": self.dir.entries,
            "ldif": self.dir.ldif.display().to_string(),
            "ldif_mb": std::fs::metadata(&self.dir.ldif).map(|m| r3(m.len() as f64 / 1048576.0)).ok(),
            "generate_s": opt(self.dir.gen_secs), "slapd_start_with_slapadd_s": r3(self.slapd.load_secs),
        })
    }
}

fn phase_search(env: &Env, s: &Size) -> Result<Value> {
    let prog = PathBuf::from("ldapsearch");
    let filter = "(|(objectClass=inetOrgPerson)(objectClass=groupOfNames))";
    let mk = |attrs: &[&str], stderr: PathBuf, stdout: Option<PathBuf>| Proc {
        program: &prog,
        args: [
            "-x",
            "-H",
            &s.slapd.uri,
            "-D",
            &s.slapd.svc_dn,
            "-w",
            &s.slapd.svc_pw,
            "-b",
            &s.slapd.base,
            "-E",
            "pr=1000/noprompt",
            filter,
        ]
        .iter()
        .chain(attrs)
        .map(|x| x.to_string())
        .collect(),
        envs: vec![],
        stdout,
        stderr,
        stdin: None,
    };
    // Count what the dump returns (unmeasured), to compare with Roster's read.
    let count_out = s.work.join("ldapsearch-count.ldif");
    let t =
        mk(&["-LLL", "1.1"], s.work.join("ldapsearch-count.err"), Some(count_out.clone())).run("ldapsearch count")?;
    ensure!(
        t.code == 0,
        "ldapsearch (count) exited with {}: {}",
        t.code,
        tail(&s.work.join("ldapsearch-count.err"), 5)
    );
    let count = std::fs::read_to_string(&count_out)?.lines().filter(|l| l.starts_with("dn")).count();
    let warm = mk(&["*", "entryUUID"], s.work.join("ldapsearch-warm.err"), None).run("ldapsearch warm-up")?;
    ensure!(warm.code == 0, "ldapsearch warm-up exited with {}", warm.code);
    let mut samples = Vec::new();
    for r in 0..env.args.runs {
        let err = s.work.join(format!("ldapsearch-{r}.err"));
        let t = mk(&["*", "entryUUID"], err.clone(), None).run("ldapsearch")?;
        ensure!(t.code == 0, "ldapsearch exited with {}: {}", t.code, tail(&err, 5));
        eprintln!("[directory] {} users: ldapsearch dump {:.3} s", s.n, t.wall);
        samples.push(t);
    }
    let wall: Vec<f64> = samples.iter().map(|t| t.wall).collect();
    Ok(json!({
        "command": format!("ldapsearch -x -H {} -D {} -w *** -b {} -E pr=1000/noprompt '{filter}' '*' entryUUID > /dev/null", s.slapd.uri, s.slapd.svc_dn, s.slapd.base),
        "entries": count,
        "warmup": warm.json(),
        "samples": samples.iter().map(Timed::json).collect::<Vec<_>>(),
        "median_wall_s": opt(median(&wall)),
        "loadavg": loadavg(),
    }))
}

/// Compiles the plugins into the store's cache once, so measured runs load them
/// from it: a one-entry LDIF tenant with the same plugin kinds, then the
/// database is removed (the cache stays).
fn warm_plugin_cache(env: &Env, s: &Size) -> Result<()> {
    let ldif = s.work.join("warm.ldif");
    std::fs::write(
        &ldif,
        "dn: uid=warm,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: warm\ncn: Warm\nsn: Warm\nemployeeNumber: 1\nentryUUID: 0b1c2d3e-0000-4000-8000-000000000001\n\n",
    )?;
    let cfg = s.work.join("warm.toml");
    let tenant = tenant_toml(
        &s.slapd,
        &TenantSpec { id: TENANT.into(), user_filter: None, group_filter: None, variant: None, realtime: false },
    );
    // Same tenant, but an LDIF source instead of LDAP.
    let start = tenant.find("[[tenant.source]]").context("tenant toml")?;
    let end = tenant.find("[tenant.mapping]").context("tenant toml")?;
    let tenant = format!(
        "{}[[tenant.source]]\nname = \"corp\"\nkind = \"ldif\"\npath = {}\n\n{}",
        &tenant[..start],
        toml_str(&ldif.display().to_string()),
        &tenant[end..]
    );
    write_config(&cfg, &s.store, None, &tenant)?;
    let log = env.work.join("logs").join(format!("warm-{}.log", s.n));
    std::fs::create_dir_all(log.parent().context("log dir")?)?;
    let out = Command::new(&env.roster)
        .args(["--config", &cfg.display().to_string(), "sync"])
        .stderr(File::create(&log)?)
        .stdout(Stdio::null())
        .status()
        .context("warming the plugin cache")?;
    ensure!(out.success(), "warming the plugin cache failed ({out}): {}", tail(&log, 10));
    remove_db(&s.store)
}

fn phase_full(env: &Env, s: &Size) -> Result<Value> {
    warm_plugin_cache(env, s)?;
    let mut samples = Vec::new();
    for r in 0..env.args.runs {
        remove_db(&s.store)?;
        let sample = roster_sync(env, &s.cfg, &s.store, &s.slapd, &format!("full-{}-{r}", s.n), true)?;
        let (c, u, d, _, _) = sample.run.counts();
        let quarantined = sample.run.summary["sources"][0]["quarantined"].as_i64().unwrap_or(0);
        ensure!(sample.run.status == "applied", "full sync {r}: status '{}'", sample.run.status);
        ensure!(
            c + quarantined == s.dir.entries as i64 && u == 0 && d == 0,
            "full sync {r}: created {c} + quarantined {quarantined}, expected {} entries",
            s.dir.entries
        );
        eprintln!(
            "[directory] {} users: full sync {:.3} s, peak RSS {:.0} MB",
            s.n, sample.timed.wall, sample.timed.rss_mb
        );
        samples.push(sample);
    }
    Ok(json!({
        "samples": samples.iter().map(SyncSample::json).collect::<Vec<_>>(),
        "median": medians_of(&samples),
        "median_breakdown_s": median_breakdown(&samples),
        "loadavg": loadavg(),
    }))
}

fn ensure_populated(env: &Env, s: &Size) -> Result<()> {
    let populated = s.store.join("roster.db").exists()
        && open_db(&s.store)?.query_row("SELECT COUNT(*) FROM users", [], |r| r.get::<_, i64>(0))? > 0;
    if !populated {
        eprintln!("[directory] {} users: populating the store (unmeasured)", s.n);
        roster_sync(env, &s.cfg, &s.store, &s.slapd, &format!("populate-{}", s.n), false)?;
    }
    Ok(())
}

fn phase_resync(env: &Env, s: &Size) -> Result<Value> {
    ensure_populated(env, s)?;
    let mut samples = Vec::new();
    let mut writes = Vec::new();
    for r in 0..env.args.runs {
        let before = store_marks(&s.store)?;
        let sample = roster_sync(env, &s.cfg, &s.store, &s.slapd, &format!("resync-{}-{r}", s.n), true)?;
        let after = store_marks(&s.store)?;
        ensure!(sample.run.status == "no-changes", "no-change resync {r}: status '{}'", sample.run.status);
        let w = store_writes(&before, &after);
        eprintln!(
            "[directory] {} users: no-change resync {:.3} s, peak RSS {:.0} MB, zero data writes: {}",
            s.n, sample.timed.wall, sample.timed.rss_mb, w["zero_data_writes"]
        );
        writes.push(w);
        samples.push(sample);
    }
    // The same unchanged directory read whole (`sync --full`, as after a
    // lost cookie): every entry comes again, and the mapping memo keeps the
    // plugins from mapping any of them again.
    let mut full_reads = Vec::new();
    for r in 0..env.args.runs {
        let label = format!("fullread-{}-{r}", s.n);
        let sample = roster_sync_with(env, &s.cfg, &s.store, &s.slapd, &label, true, &["--full"])?;
        ensure!(sample.run.status == "no-changes", "unchanged full re-read {r}: status '{}'", sample.run.status);
        let src = &sample.run.summary["sources"][0];
        eprintln!(
            "[directory] {} users: unchanged full re-read {:.3} s, {} of {} entries not mapped again, mapper {:.3} s",
            s.n,
            sample.timed.wall,
            src["not_remapped"],
            s.dir.entries,
            sample.run.summary["plugin_seconds"]["mapper"].as_f64().unwrap_or(f64::NAN)
        );
        full_reads.push(sample);
    }
    Ok(json!({
        "samples": samples.iter().map(SyncSample::json).collect::<Vec<_>>(),
        "full_read": {
            "samples": full_reads.iter().map(SyncSample::json).collect::<Vec<_>>(),
            "median": medians_of(&full_reads),
            "median_breakdown_s": median_breakdown(&full_reads),
            "not_remapped": full_reads.iter().map(|f| f.run.summary["sources"][0]["not_remapped"].clone()).collect::<Vec<_>>(),
        },
        "store_writes": writes,
        "zero_data_writes_every_run": writes.iter().all(|w| w["zero_data_writes"] == json!(true)),
        "median": medians_of(&samples),
        "median_breakdown_s": median_breakdown(&samples),
        "loadavg": loadavg(),
    }))
}

fn phase_cli_incremental(env: &Env, s: &mut Size) -> Result<Value> {
    ensure_populated(env, s)?;
    let mut samples = Vec::new();
    let mut out = Vec::new();
    for r in 0..env.args.runs {
        let tag = format!("c{}x{r}", s.n);
        let b = s.dir.batch(&tag, env.args.batch, &s.slapd.base)?;
        let file = s.work.join(format!("batch-{tag}.ldif"));
        std::fs::write(&file, &b.ldif)?;
        let lm = s.slapd.ldapmodify(&file, &s.work.join(format!("batch-{tag}.err")))?;
        let sample = roster_sync(env, &s.cfg, &s.store, &s.slapd, &format!("incr-cli-{}-{r}", s.n), true)?;
        let (c, u, d, ma, mr) = sample.run.counts();
        let exact = c == b.add_uids.len() as i64 && u == b.modify.len() as i64 && d == b.delete.len() as i64;
        let in_store = batch_complete(&open_db(&s.store)?, &b)?;
        eprintln!(
            "[directory] {} users: ldapmodify {} changes {:.3} s; roster sync after it {:.3} s (created {c}, updated {u}, deleted {d}, memberships -{mr}; as expected: {exact}, in store: {in_store})",
            s.n, env.args.batch, lm.wall, sample.timed.wall
        );
        out.push(json!({
            "batch": { "tag": tag, "modify": b.modify.len(), "add": b.add_uids.len(), "delete": b.delete.len() },
            "ldapmodify": lm.json(),
            "sync": sample.json(),
            "counts_as_expected": exact,
            "memberships": { "added": ma, "removed": mr },
            "batch_in_store": in_store,
        }));
        samples.push(sample);
    }
    Ok(json!({
        "note": "roster sync reads what changed since the previous run's cookies (RFC 4533 refreshOnly), then runs the whole pipeline",
        "runs": out,
        "median": medians_of(&samples),
        "median_breakdown_s": median_breakdown(&samples),
        "loadavg": loadavg(),
    }))
}

fn phase_serve(env: &Env, s: &mut Size) -> Result<Value> {
    ensure_populated(env, s)?;
    let cfg = s.work.join("serve.toml");
    let listen = format!("127.0.0.1:{}", free_port()?);
    let spec = TenantSpec { id: TENANT.into(), user_filter: None, group_filter: None, variant: None, realtime: true };
    write_config(&cfg, &s.store, Some(&listen), &tenant_toml(&s.slapd, &spec))?;
    let mut result = serde_json::Map::new();
    let big = Duration::from_secs(3600);

    // Start-up without a stored cookie: the stream replays the whole
    // directory (what a first start, or a start after a changed source
    // definition, costs). The CLI syncs above stored cookies; forget them.
    forget_cookies(&s.store)?;
    let base_run = last_run_id(&open_db(&s.store)?)?;
    let mut serve = Serve::start(env, &cfg, &s.slapd, &format!("serve-{}", s.n))?;
    let first = wait_first_realtime_run(&mut serve, &s.store, base_run, big)?;
    let conn = open_db(&s.store)?;
    let startup = first.finished.unwrap_or(0.0) - serve.started_unix;
    eprintln!(
        "[directory] {} users: serve start-up refresh applied after {startup:.3} s (run {} took {:.3} s, read mode {})",
        s.n,
        first.id,
        first.duration().unwrap_or(0.0),
        first.summary["sources"][0]["read"]["mode"]
    );
    result.insert(
        "startup_refresh".into(),
        json!({
            "spawn_to_first_run_applied_s": r3(startup),
            "first_run_s": opt(first.duration()),
            "first_run_status": first.status,
            "first_run_read": first.summary["sources"][0]["read"],
            "first_run_counts": first.summary["counts"],
            "note": "the stored cookies are removed first: the RFC 4533 refresh replays every entry, which the first run maps and diffs",
        }),
    );
    wait_idle(&mut serve, &conn, Duration::from_millis(500), big)?;

    // Batches through the stream.
    let mut batches = Vec::new();
    let mut to_applied = Vec::new();
    for r in 0..env.args.runs {
        let tag = format!("s{}x{r}", s.n);
        let b = s.dir.batch(&tag, env.args.batch, &s.slapd.base)?;
        let file = s.work.join(format!("batch-{tag}.ldif"));
        std::fs::write(&file, &b.ldif)?;
        let run0 = last_run_id(&conn)?;
        let seq0 = last_seq(&conn)?;
        let t0 = Instant::now();
        let lm = s.slapd.ldapmodify(&file, &s.work.join(format!("batch-{tag}.err")))?;
        let t_lm = t0.elapsed().as_secs_f64();
        let seen = wait_batch(&mut serve, &conn, &b, seq0, Duration::from_secs(1800))?;
        let total = seen.duration_since(t0).as_secs_f64();
        wait_idle(&mut serve, &conn, Duration::from_millis(300), big)?;
        let runs = runs_after(&conn, run0)?;
        let durations: Vec<f64> = runs.iter().filter_map(RunRecord::duration).collect();
        eprintln!(
            "[directory] {} users: {} changes via syncrepl: all in the store {total:.3} s after ldapmodify started ({:.3} s after it ended; ldapmodify {t_lm:.3} s); {} runs",
            s.n,
            env.args.batch,
            total - t_lm,
            runs.len()
        );
        to_applied.push(total);
        batches.push(json!({
            "batch": { "tag": tag, "modify": b.modify.len(), "add": b.add_uids.len(), "delete": b.delete.len() },
            "ldapmodify": lm.json(),
            "ldapmodify_start_to_all_applied_s": r3(total),
            "ldapmodify_end_to_all_applied_s": r3(total - t_lm),
            "runs": runs.len(),
            "run_durations_s": durations.iter().map(|d| r3(*d)).collect::<Vec<_>>(),
            "run_counts": runs.iter().map(|r| r.summary["counts"].clone()).collect::<Vec<_>>(),
            "run_phase_ms": runs.iter().map(|r| r.summary["phase_ms"].clone()).collect::<Vec<_>>(),
        }));
    }
    result.insert("batches".into(), json!(batches));
    result.insert("batch_median_to_applied_s".into(), opt(median(&to_applied)));

    // Real-time latency, one change at a time.
    result.insert("realtime".into(), realtime_latency(env, s, &mut serve, &conn)?);
    result.insert("big_group".into(), big_group_latency(s, &mut serve, &conn)?);

    let timed = serve.stop()?;
    drop(conn);
    result.insert("serve_process".into(), timed.json());
    eprintln!("[directory] {} users: serve stopped; peak RSS {:.0} MB", s.n, timed.rss_mb);

    // Restart: resume from the stored cookies and apply what changed meanwhile.
    let tag = format!("r{}", s.n);
    let b = s.dir.batch(&tag, env.args.batch, &s.slapd.base)?;
    let file = s.work.join(format!("batch-{tag}.ldif"));
    std::fs::write(&file, &b.ldif)?;
    let (run0, seq0) = {
        let conn = open_db(&s.store)?;
        (last_run_id(&conn)?, last_seq(&conn)?)
    };
    let lm = s.slapd.ldapmodify(&file, &s.work.join(format!("batch-{tag}.err")))?;
    let mut serve = Serve::start(env, &cfg, &s.slapd, &format!("serve-resume-{}", s.n))?;
    let conn = open_db(&s.store)?;
    let seen = wait_batch(&mut serve, &conn, &b, seq0, Duration::from_secs(1800))?;
    let resume = seen.duration_since(serve.started).as_secs_f64();
    wait_idle(&mut serve, &conn, Duration::from_millis(300), big)?;
    let runs = runs_after(&conn, run0)?;
    let timed = serve.stop()?;
    eprintln!(
        "[directory] {} users: serve restarted with {} changes made while down: applied {resume:.3} s after spawn ({} runs, first read mode {})",
        s.n,
        env.args.batch,
        runs.len(),
        runs.first().map(|r| r.summary["sources"][0]["read"]["mode"].clone()).unwrap_or(Value::Null)
    );
    result.insert(
        "resume_after_restart".into(),
        json!({
            "ldapmodify": lm.json(),
            "spawn_to_batch_applied_s": r3(resume),
            "runs": runs.iter().map(|r| json!({
                "trigger": r.trigger, "status": r.status, "duration_s": opt(r.duration()),
                "read": r.summary["sources"][0]["read"], "counts": r.summary["counts"],
                "phase_ms": r.summary["phase_ms"],
            })).collect::<Vec<_>>(),
            "serve_process": timed.json(),
        }),
    );
    result.insert("loadavg".into(), json!(loadavg()));
    Ok(Value::Object(result))
}

/// A runtime and an LDAP connection bound as slapd's admin, to make changes with.
fn admin_connection(s: &Size, what: &str) -> Result<(tokio::runtime::Runtime, ldap3::Ldap)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    let ldap = rt
        .block_on(async {
            let (conn, mut ldap) = ldap3::LdapConnAsync::new(&s.slapd.uri).await?;
            ldap3::drive!(conn);
            ldap.simple_bind(&s.slapd.admin_dn, &s.slapd.admin_pw).await?.success()?;
            Ok::<_, ldap3::LdapError>(ldap)
        })
        .with_context(|| format!("binding to {} as {} for {what}", s.slapd.uri, s.slapd.admin_dn))?;
    Ok((rt, ldap))
}

/// Real-time changes to the group of every user (`all-staff`, N members,
/// with a role rule on it): a user leaves it, then joins again, 10 times.
/// Change sent → its membership event committed, and how many stored objects
/// each run loaded (`stored_loaded`: the neighbourhood, not the N members).
fn big_group_latency(s: &mut Size, serve: &mut Serve, conn: &Connection) -> Result<Value> {
    const ROUNDS: usize = 10;
    let group = format!("cn=all-staff,ou=groups,{}", s.slapd.base);
    let targets = s.dir.take(ROUNDS, "big-group changes")?;
    let (rt, mut ldap) = admin_connection(s, "the big-group changes")?;
    let run0 = last_run_id(conn)?;
    let mut total = Vec::new();
    for (i, dn) in targets.iter().enumerate() {
        for (add, event) in [(false, "group.member_removed"), (true, "group.member_added")] {
            wait_idle(serve, conn, Duration::ZERO, Duration::from_secs(600))?;
            let seq = last_seq(conn)?;
            let values = std::collections::HashSet::from([dn.as_str()]);
            let change = if add { ldap3::Mod::Add("member", values) } else { ldap3::Mod::Delete("member", values) };
            let t0 = Instant::now();
            rt.block_on(async { ldap.modify(&group, vec![change]).await?.success() })
                .with_context(|| format!("big-group change {i}: {event} {dn}"))?;
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                let n: i64 = conn.query_row(
                    "SELECT COUNT(*) FROM events WHERE tenant = ?1 AND seq > ?2 AND type = ?3",
                    params![TENANT, seq, event],
                    |r| r.get(0),
                )?;
                if n > 0 {
                    break;
                }
                if Instant::now() > deadline {
                    serve.alive()?;
                    bail!("big-group change {i} ({event} {dn}) not in the outbox after 600 s");
                }
                sleep_ms(1);
            }
            total.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let _ = rt.block_on(ldap.unbind());
    let runs = runs_after(conn, run0)?;
    let loaded: Vec<f64> =
        runs.iter().filter_map(|r| r.summary["sources"][0]["stored_loaded"].as_f64()).filter(|n| *n > 0.0).collect();
    let run_ms: Vec<f64> = runs.iter().filter_map(|r| r.duration().map(|d| d * 1000.0)).collect();
    let mut phases: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in &runs {
        for (k, v) in r.summary["phase_ms"].as_object().into_iter().flatten() {
            phases.entry(k.clone()).or_default().extend(v.as_f64());
        }
    }
    let phase_median: BTreeMap<String, Value> = phases.iter().map(|(k, v)| (k.clone(), opt(median(v)))).collect();
    eprintln!(
        "[directory] {} users: a user leaving / joining all-staff ({} members) via syncrepl: p50 {:.1} ms, max {:.1} ms; run {:.1} ms (phases {:?}); stored objects loaded per run, median {:.0}",
        s.n,
        s.n,
        percentile(&total, 50.0).unwrap_or(0.0),
        total.iter().cloned().reduce(f64::max).unwrap_or(0.0),
        median(&run_ms).unwrap_or(0.0),
        phase_median,
        median(&loaded).unwrap_or(0.0)
    );
    Ok(json!({
        "changes": total.len(),
        "send_to_committed": { "p50_ms": opt(percentile(&total, 50.0)), "max_ms": opt(total.iter().cloned().reduce(f64::max)) },
        "stored_loaded_median": opt(median(&loaded)),
        "run_ms_median": opt(median(&run_ms)),
        "run_phase_ms_median": phase_median,
    }))
}

fn realtime_latency(env: &Env, s: &mut Size, serve: &mut Serve, conn: &Connection) -> Result<Value> {
    let n = env.args.rt_changes;
    if n == 0 {
        return Ok(Value::Null);
    }
    let targets = s.dir.take(n, "realtime changes")?;
    let (rt, mut ldap) = admin_connection(s, "the realtime changes")?;
    let run0 = last_run_id(conn)?;
    let mut seq = last_seq(conn)?;
    let started = Instant::now();
    let (mut total, mut ack, mut apply_start) = (Vec::new(), Vec::new(), Vec::new());
    let mut stopped_early = false;
    let mut poll =
        conn.prepare("SELECT seq, created_at, payload FROM events WHERE tenant = ?1 AND seq > ?2 ORDER BY seq")?;
    for (i, dn) in targets.iter().enumerate() {
        if started.elapsed() > env.args.rt_budget {
            stopped_early = true;
            break;
        }
        wait_idle(serve, conn, Duration::ZERO, Duration::from_secs(600))?;
        let marker = format!("rt-{}-{i}", s.n);
        let sent_unix = unix_now();
        let t0 = Instant::now();
        rt.block_on(async {
            ldap.modify(dn, vec![ldap3::Mod::Replace("title", std::collections::HashSet::from([marker.as_str()]))])
                .await?
                .success()
        })
        .with_context(|| format!("realtime change {i}: modify {dn}"))?;
        let t_ack = t0.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(600);
        let created = loop {
            let mut found = None;
            let rows = poll.query_map(params![TENANT, seq], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })?;
            for row in rows {
                let (q, created_at, payload) = row?;
                seq = seq.max(q);
                if found.is_none() && payload.contains(&marker) {
                    found = Some(created_at);
                }
            }
            if let Some(c) = found {
                break c;
            }
            if Instant::now() > deadline {
                serve.alive()?;
                bail!("realtime change {i} ({dn} title={marker}) not in the outbox after 600 s");
            }
            sleep_ms(1);
        };
        total.push(t0.elapsed().as_secs_f64() * 1000.0);
        ack.push(t_ack * 1000.0);
        if let Some(c) = parse_ts(&created) {
            apply_start.push((c - sent_unix) * 1000.0);
        }
        if (i + 1) % 100 == 0 {
            eprintln!(
                "[directory] {} users: {} realtime changes, p50 {:.1} ms so far",
                s.n,
                i + 1,
                median(&total).unwrap_or(0.0)
            );
        }
    }
    let _ = rt.block_on(ldap.unbind());
    let runs = runs_after(conn, run0)?;
    let run_ms: Vec<f64> = runs.iter().filter_map(|r| r.duration().map(|d| d * 1000.0)).collect();
    let stats = |v: &[f64]| {
        json!({
            "p50_ms": opt(percentile(v, 50.0)), "p99_ms": opt(percentile(v, 99.0)),
            "max_ms": opt(v.iter().cloned().reduce(f64::max)), "min_ms": opt(v.iter().cloned().reduce(f64::min)),
        })
    };
    eprintln!(
        "[directory] {} users: realtime latency over {} changes: p50 {:.1} ms, p99 {:.1} ms (median run {:.1} ms)",
        s.n,
        total.len(),
        percentile(&total, 50.0).unwrap_or(0.0),
        percentile(&total, 99.0).unwrap_or(0.0),
        median(&run_ms).unwrap_or(0.0)
    );
    Ok(json!({
        "changes": total.len(),
        "requested": n,
        "stopped_early_by_budget": stopped_early,
        "budget_s": env.args.rt_budget.as_secs(),
        "send_to_committed": stats(&total),
        "send_to_ldap_ack": stats(&ack),
        "send_to_apply_start": stats(&apply_start),
        "runs": runs.len(),
        "run_duration": stats(&run_ms),
        "run_phase_ms_median": median_phase_ms(&runs.iter().collect::<Vec<_>>()),
        "method": "ldap3 modify (replace title) from the bench; each change sent when no run was in progress; committed = its event visible to a read-only SQLite connection polled every 1 ms (same transaction as the users row)",
    }))
}

fn phase_tenants(env: &Env, slapd: &Slapd, n: usize) -> Result<Value> {
    let work = env.work.join("tenants");
    std::fs::create_dir_all(&work)?;
    let store = work.join("store");
    let cfg = work.join("roster.toml");
    let k = env.args.tenants;
    let mut tenants = String::new();
    for t in 0..k {
        // 100 users each: employeeNumber 10TT00..10TT99 (users TT00..TT99), an
        // indexed equality filter; ~10 groups each: names ending -TT0..-TT9.
        let users: String = (0..100).map(|i| format!("(employeeNumber=10{t:02}{i:02})")).collect();
        let spec = TenantSpec {
            id: format!("t{t:03}"),
            user_filter: Some(format!("(&(objectClass=inetOrgPerson)(|{users}))")),
            group_filter: Some(format!("(&(objectClass=groupOfNames)(cn=*-{t:02}*))")),
            variant: Some(format!("t{t:03}")),
            realtime: false,
        };
        tenants.push_str(&tenant_toml(slapd, &spec));
    }
    write_config(&cfg, &store, None, &tenants)?;
    let run = |label: &str| -> Result<(Timed, i64, i64)> {
        remove_db(&store)?;
        let log = work.join(format!("{label}.log"));
        let p = Proc {
            program: &env.roster,
            args: vec!["--config".into(), cfg.display().to_string(), "sync".into()],
            envs: vec![(PASSWORD_ENV.into(), slapd.svc_pw.clone())],
            stdout: None,
            stderr: log.clone(),
            stdin: None,
        };
        let t = p.run(label)?;
        ensure!(t.code == 0, "{k}-tenant roster sync exited with {}:\n{}", t.code, tail(&log, 15));
        let conn = open_db(&store)?;
        let users: i64 = conn.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
        let groups: i64 = conn.query_row("SELECT COUNT(*) FROM groups", [], |r| r.get(0))?;
        Ok((t, users, groups))
    };
    // The first run compiles the plugins into the cache: reported, not counted.
    let (cold, _, _) = run("tenants-cold")?;
    let mut samples = Vec::new();
    let (mut users, mut groups) = (0, 0);
    for r in 0..env.args.runs {
        let (t, u, g) = run(&format!("tenants-{r}"))?;
        eprintln!(
            "[directory] {k} tenants on the {n}-user directory: roster sync {:.3} s, peak RSS {:.0} MB ({u} users, {g} groups stored)",
            t.wall, t.rss_mb
        );
        (users, groups) = (u, g);
        samples.push(t);
    }
    let wall: Vec<f64> = samples.iter().map(|t| t.wall).collect();
    let rss: Vec<f64> = samples.iter().map(|t| t.rss_mb).collect();
    Ok(json!({
        "tenants": k,
        "directory_users": n,
        "users_stored": users,
        "groups_stored": groups,
        "cold_plugin_cache_run": cold.json(),
        "samples": samples.iter().map(Timed::json).collect::<Vec<_>>(),
        "median_wall_s": opt(median(&wall)),
        "median_peak_rss_mb": opt(median(&rss)),
        "per_tenant_ms": opt(median(&wall).map(|w| w * 1000.0 / k as f64)),
        "loadavg": loadavg(),
    }))
}

// ----------------------------------------------------------------------------- reports

fn get_f(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

fn fmt_s(x: Option<f64>) -> String {
    x.map(|v| if v < 10.0 { format!("{v:.3} s") } else { format!("{v:.1} s") }).unwrap_or_else(|| "–".into())
}

fn fmt_ms(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.1} ms")).unwrap_or_else(|| "–".into())
}

fn fmt_mb(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.0} MB")).unwrap_or_else(|| "–".into())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn fmt_x(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.2} ×")).unwrap_or_else(|| "–".into())
}

fn write_reports(env: &Env) -> Result<()> {
    let json_path = env.out.join("directory.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&env.results)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    std::fs::write(env.out.join("directory.md"), markdown(&env.results))
        .with_context(|| format!("writing {}", env.out.join("directory.md").display()))?;
    std::fs::write(env.out.join("directory.svg"), svg(&env.results))
        .with_context(|| format!("writing {}", env.out.join("directory.svg").display()))?;
    Ok(())
}

fn markdown(r: &Value) -> String {
    let sizes: Vec<(String, &Value)> = r["sizes"]
        .as_object()
        .map(|m| {
            let mut v: Vec<_> = m.iter().map(|(k, v)| (k.clone(), v)).collect();
            v.sort_by_key(|(k, _)| k.parse::<usize>().unwrap_or(0));
            v
        })
        .unwrap_or_default();
    let meta = &r["meta"];
    let mut s = String::new();
    let _ = writeln!(s, "# Directory-scale benchmark (`cargo bench --bench directory`)\n");
    let _ = writeln!(
        s,
        "Roster `{}` ({}), {} cores ({}), {} GiB; {}; load average {} at start, {} at the end. Medians of {} runs.\n",
        meta["git"].as_str().unwrap_or(""),
        meta["roster_version"].as_str().unwrap_or(""),
        meta["nproc"],
        meta["cpu"].as_str().unwrap_or(""),
        meta["mem_gib"],
        meta["slapd"].as_str().unwrap_or(""),
        meta["started_at_loadavg"].as_str().unwrap_or(""),
        meta["finished_at_loadavg"].as_str().unwrap_or(""),
        meta["args"]["runs"]
    );
    let header = |s: &mut String| {
        let _ = write!(s, "| measure (median) |");
        for (k, _) in &sizes {
            let _ = write!(s, " {k} users |");
        }
        let _ = writeln!(s, " target |");
        let _ = write!(s, "|---|");
        for _ in &sizes {
            let _ = write!(s, "---|");
        }
        let _ = writeln!(s, "---|");
    };
    let row = |s: &mut String, name: &str, f: &dyn Fn(&Value) -> String, target: &str| {
        let _ = write!(s, "| {name} |");
        for (_, v) in &sizes {
            let _ = write!(s, " {} |", f(v));
        }
        let _ = writeln!(s, " {target} |");
    };
    header(&mut s);
    let dump = |v: &Value| get_f(v, &["search", "median_wall_s"]);
    let full = |v: &Value| get_f(v, &["full", "median", "wall_s"]);
    let resync = |v: &Value| get_f(v, &["resync", "median", "wall_s"]);
    row(&mut s, "entries (users + groups)", &|v| v["info"]["entries"].to_string(), "");
    row(&mut s, "`ldapsearch` dump to /dev/null", &|v| fmt_s(dump(v)), "");
    row(&mut s, "full sync, empty store", &|v| fmt_s(full(v)), "");
    row(&mut s, "full sync / dump", &|v| fmt_x(ratio(full(v), dump(v))), "≤ 2 × (100k)");
    row(&mut s, "full sync peak RSS", &|v| fmt_mb(get_f(v, &["full", "median", "peak_rss_mb"])), "< 256 MB (100k)");
    row(&mut s, "no-change resync", &|v| fmt_s(resync(v)), "");
    row(&mut s, "no-change resync / dump", &|v| fmt_x(ratio(resync(v), dump(v))), "≤ 1.3 ×");
    row(&mut s, "no-change resync peak RSS", &|v| fmt_mb(get_f(v, &["resync", "median", "peak_rss_mb"])), "");
    let full_read = |v: &Value| get_f(v, &["resync", "full_read", "median", "wall_s"]);
    row(&mut s, "unchanged directory read whole again (`sync --full`)", &|v| fmt_s(full_read(v)), "");
    row(&mut s, "… / dump", &|v| fmt_x(ratio(full_read(v), dump(v))), "");
    row(
        &mut s,
        "… entries not mapped again (mapping memo) / entries",
        &|v| format!("{} / {}", v["resync"]["full_read"]["not_remapped"][0], v["info"]["entries"]),
        "all",
    );
    row(
        &mut s,
        "no-change resync: data writes (users/groups/memberships/outbox)",
        &|v| match v["resync"]["zero_data_writes_every_run"].as_bool() {
            Some(true) => "0".into(),
            Some(false) => "**some**".into(),
            None => "–".into(),
        },
        "0",
    );
    row(
        &mut s,
        "`roster sync` after 1,000 changes (incremental read)",
        &|v| fmt_s(get_f(v, &["cli-incremental", "median", "wall_s"])),
        "",
    );
    row(
        &mut s,
        "… process start → the 1,000 changes applied (committed)",
        &|v| fmt_s(get_f(v, &["cli-incremental", "median_breakdown_s", "start_to_applied"])),
        "< 250 ms; 100k within 2 × of 10k",
    );
    row(
        &mut s,
        "1,000 changes via syncrepl (`serve`), ldapmodify start → all applied",
        &|v| fmt_s(get_f(v, &["serve", "batch_median_to_applied_s"])),
        "< 250 ms; 100k within 2 × of 10k",
    );
    row(
        &mut s,
        "realtime latency p50 (change → committed)",
        &|v| fmt_ms(get_f(v, &["serve", "realtime", "send_to_committed", "p50_ms"])),
        "< 20 ms",
    );
    row(
        &mut s,
        "realtime latency p99",
        &|v| fmt_ms(get_f(v, &["serve", "realtime", "send_to_committed", "p99_ms"])),
        "< 100 ms",
    );
    row(&mut s, "realtime changes measured", &|v| v["serve"]["realtime"]["changes"].to_string(), "1,000");
    row(
        &mut s,
        "realtime: a user leaves / joins `all-staff` (every user, role rule on it), p50 change → committed",
        &|v| fmt_ms(get_f(v, &["serve", "big_group", "send_to_committed", "p50_ms"])),
        "",
    );
    row(
        &mut s,
        "… stored objects loaded per such run (median)",
        &|v| get_f(v, &["serve", "big_group", "stored_loaded_median"]).map(|n| format!("{n:.0}")).unwrap_or_default(),
        "",
    );
    row(
        &mut s,
        "serve start-up refresh (no cookie) → applied",
        &|v| fmt_s(get_f(v, &["serve", "startup_refresh", "spawn_to_first_run_applied_s"])),
        "",
    );
    row(&mut s, "serve peak RSS", &|v| fmt_mb(get_f(v, &["serve", "serve_process", "peak_rss_mb"])), "");
    row(
        &mut s,
        "serve restart with 1,000 changes made while down → applied",
        &|v| fmt_s(get_f(v, &["serve", "resume_after_restart", "spawn_to_batch_applied_s"])),
        "",
    );
    let _ = writeln!(s);

    let _ = writeln!(s, "## Where the time goes (median seconds per phase)\n");
    let _ = writeln!(
        s,
        "From the run's own records: log timestamps (`-vv --log-format json`), `runs.started_at/finished_at`, and `events.created_at` (taken when the apply transaction starts). The LDAP read includes mapping and custom attributes (they run as entries stream in).\n"
    );
    let phases = [
        ("total_process", "whole process"),
        ("start_to_applied", "process start → changes applied (the apply transaction committed)"),
        ("startup_to_run_start", "start-up: config, store open, plugins loaded"),
        ("store_snapshot_load", "store snapshot load"),
        ("ldap_read_and_map", "LDAP read + map + custom attributes"),
        ("ldap_users_search", "… of which the user search"),
        ("ldap_groups_search", "… of which the group search"),
        ("members_roles_conflicts_diff", "members, roles, conflicts, diff"),
        ("apply_and_run_record", "apply transaction + run record"),
        ("after_read_total", "everything after the read"),
        ("exit_after_run_record", "exit after the run record"),
    ];
    let _ = write!(s, "| phase |");
    let cols: Vec<(String, &str, &Value)> = sizes
        .iter()
        .flat_map(|(k, v)| {
            [("full", "full"), ("resync", "resync"), ("cli-incremental", "after 1,000 changes")]
                .into_iter()
                .filter(|(p, _)| v.get(*p).is_some_and(|x| !x.is_null()))
                .map(move |(p, name)| (format!("{k} {name}"), p, *v))
                .collect::<Vec<_>>()
        })
        .collect();
    for (name, _, _) in &cols {
        let _ = write!(s, " {name} |");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "|---|{}", "---|".repeat(cols.len()));
    for (key, name) in phases {
        let _ = write!(s, "| {name} |");
        for (_, p, v) in &cols {
            let _ = write!(s, " {} |", fmt_s(get_f(v, &[p, "median_breakdown_s", key])));
        }
        let _ = writeln!(s);
    }
    for kind in ["mapper", "custom-attributes", "role-assigner"] {
        let _ = write!(s, "| inside the {kind} plugin |");
        for (_, p, v) in &cols {
            let _ = write!(s, " {} |", fmt_s(get_f(v, &[p, "median_breakdown_s", "plugin_seconds", kind])));
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s);

    // Roster's own per-phase timings, when its run records carry them.
    let has_phase_ms = cols.iter().any(|(_, p, v)| v[*p]["median_breakdown_s"]["roster_phase_ms"].is_object());
    if has_phase_ms {
        let _ =
            writeln!(s, "## Roster's own phase timings (run record `phase_ms`, median ms; apply split from `-vv`)\n");
        let _ = write!(s, "| phase |");
        for (name, _, _) in &cols {
            let _ = write!(s, " {name} |");
        }
        let rt: Vec<(&String, &Value)> = sizes
            .iter()
            .filter(|(_, v)| v["serve"]["realtime"]["run_phase_ms_median"].is_object())
            .map(|(k, v)| (k, &v["serve"]["realtime"]["run_phase_ms_median"]))
            .collect();
        for (k, _) in &rt {
            let _ = write!(s, " {k} one realtime change |");
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "|---|{}", "---|".repeat(cols.len() + rt.len()));
        let ms = |x: Option<f64>| x.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into());
        for phase in ["setup", "snapshot", "read", "resolve", "conflicts", "diff", "apply", "record"] {
            let _ = write!(s, "| {phase} |");
            for (_, p, v) in &cols {
                let _ = write!(s, " {} |", ms(get_f(v, &[p, "median_breakdown_s", "roster_phase_ms", phase])));
            }
            for (_, v) in &rt {
                let _ = write!(s, " {} |", ms(get_f(v, &[phase])));
            }
            let _ = writeln!(s);
        }
        for part in ["objects_ms", "memberships_ms", "audit_ms", "commit_ms"] {
            let _ = write!(s, "| apply: {} |", part.trim_end_matches("_ms"));
            for (_, p, v) in &cols {
                let _ = write!(s, " {} |", ms(get_f(v, &[p, "median_breakdown_s", "apply_split_ms", part])));
            }
            for _ in &rt {
                let _ = write!(s, " – |");
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s);
    }

    if let Some(t) = r.get("tenants").filter(|t| !t.is_null()) {
        let _ = writeln!(s, "## {} tenants, one `roster sync`\n", t["tenants"]);
        let _ = writeln!(
            s,
            "Each tenant reads its own slice of the {}-user directory (100 users, ~10 groups) with its own mapping, two custom attributes and role rules; empty store, plugins compiled once beforehand.\n",
            t["directory_users"]
        );
        let _ = writeln!(s, "| measure (median) | value |\n|---|---|");
        let _ = writeln!(s, "| wall time | {} |", fmt_s(get_f(t, &["median_wall_s"])));
        let _ = writeln!(s, "| per tenant | {} |", fmt_ms(get_f(t, &["per_tenant_ms"])));
        let _ = writeln!(s, "| peak RSS | {} |", fmt_mb(get_f(t, &["median_peak_rss_mb"])));
        let _ = writeln!(s, "| users / groups stored | {} / {} |", t["users_stored"], t["groups_stored"]);
        let _ = writeln!(
            s,
            "| first run (cold plugin cache) | {}, {} |\n",
            fmt_s(get_f(t, &["cold_plugin_cache_run", "wall_s"])),
            fmt_mb(get_f(t, &["cold_plugin_cache_run", "peak_rss_mb"]))
        );
    }
    let _ = writeln!(s, "Raw samples, environment and notes: `directory.json`. Chart: `directory.svg`.");
    s
}

/// One panel per size: ldapsearch vs Roster, seconds, bars labelled.
fn svg(r: &Value) -> String {
    let sizes: Vec<(String, Value)> = r["sizes"]
        .as_object()
        .map(|m| {
            let mut v: Vec<_> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            v.sort_by_key(|(k, _)| k.parse::<usize>().unwrap_or(0));
            v
        })
        .unwrap_or_default();
    let bars: [(&str, &[&str], &str); 4] = [
        ("ldapsearch dump", &["search", "median_wall_s"], "#9e9e9e"),
        ("roster full sync", &["full", "median", "wall_s"], "#1f77b4"),
        ("roster no-change resync", &["resync", "median", "wall_s"], "#2ca02c"),
        ("roster sync after 1,000 changes", &["cli-incremental", "median", "wall_s"], "#ff7f0e"),
    ];
    let (pw, ph, top, left, bottom) = (360.0, 260.0, 60.0, 50.0, 40.0);
    let width = left + sizes.len().max(1) as f64 * (pw + 40.0) + 10.0;
    let height = top + ph + bottom + 30.0 + bars.len() as f64 * 18.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="24" font-size="15" font-weight="bold">Roster vs ldapsearch, seconds (median; lower is better)</text>"#
    );
    for (i, (name, v)) in sizes.iter().enumerate() {
        let x0 = left + i as f64 * (pw + 40.0);
        let vals: Vec<Option<f64>> = bars.iter().map(|(_, p, _)| get_f(v, p)).collect();
        // 15 % headroom above the tallest bar for its label.
        let max = vals.iter().flatten().cloned().fold(0.0_f64, f64::max).max(0.001) * 1.15;
        let n: usize = name.parse().unwrap_or(0);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{} users, {} groups</text>"#,
            x0 + pw / 2.0,
            top - 16.0,
            n,
            n / 10
        );
        let _ = writeln!(s, r#"<line x1="{x0}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#, top + ph, x0 + pw, top + ph);
        let _ = writeln!(s, r#"<line x1="{x0}" y1="{top}" x2="{x0}" y2="{}" stroke="black"/>"#, top + ph);
        for k in 0..=4 {
            let y = top + ph - ph * k as f64 / 4.0;
            let _ = writeln!(
                s,
                r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end" font-size="10">{:.2}</text>"##,
                x0,
                x0 + pw,
                x0 - 4.0,
                y + 3.0,
                max * k as f64 / 4.0
            );
        }
        let bw = pw / (bars.len() as f64 * 1.5 + 0.5);
        for (j, ((_, _, color), val)) in bars.iter().zip(&vals).enumerate() {
            let Some(val) = val else { continue };
            let h = ph * val / max;
            let x = x0 + bw * 0.5 + j as f64 * bw * 1.5;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{bw:.1}" height="{h:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"#,
                top + ph - h,
                x + bw / 2.0,
                top + ph - h - 4.0,
                if *val < 10.0 { format!("{val:.2}") } else { format!("{val:.1}") }
            );
        }
        if let (Some(f), Some(d)) = (vals[1], vals[0]) {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle" font-size="11">full sync = {:.1} × dump</text>"#,
                x0 + pw / 2.0,
                top + ph + 18.0,
                f / d
            );
        }
    }
    for (j, (label, _, color)) in bars.iter().enumerate() {
        let y = top + ph + bottom + 10.0 + j as f64 * 18.0;
        let _ = writeln!(
            s,
            r#"<rect x="{left}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{}">{label}</text>"#,
            y - 10.0,
            left + 18.0,
            y
        );
    }
    s.push_str("</svg>\n");
    s
}

// ----------------------------------------------------------------------------- main

fn run() -> Result<()> {
    let args = parse_args()?;
    let mut env = Env::setup(args)?;
    eprintln!(
        "[directory] roster {}; work dir {}; results in {}; load average {}",
        env.roster.display(),
        env.work.display(),
        env.out.display(),
        loadavg()
    );
    let has = |env: &Env, p: &str| env.args.phases.contains(p);
    let tenant_users = env.args.tenant_users.unwrap_or_else(|| env.args.users.first().copied().unwrap_or(10_000));
    let mut tenants_done = !has(&env, "tenants");
    for n in env.args.users.clone() {
        eprintln!("[directory] ===== {n} users, {} groups =====", n / 10);
        let mut size = Size::setup(&env, n).with_context(|| format!("{n} users: setting up"))?;
        env.record(Some(n), "info", size.info())?;
        if has(&env, "search") {
            let v = phase_search(&env, &size).with_context(|| format!("{n} users: ldapsearch baseline"))?;
            env.record(Some(n), "search", v)?;
        }
        if has(&env, "full") {
            let v = phase_full(&env, &size).with_context(|| format!("{n} users: full sync"))?;
            env.record(Some(n), "full", v)?;
        }
        if has(&env, "resync") {
            let v = phase_resync(&env, &size).with_context(|| format!("{n} users: no-change resync"))?;
            env.record(Some(n), "resync", v)?;
        }
        if !tenants_done && n == tenant_users {
            let v = phase_tenants(&env, &size.slapd, n).context("multi-tenant sync")?;
            env.record(None, "tenants", v)?;
            tenants_done = true;
        }
        if has(&env, "cli-incremental") {
            let v = phase_cli_incremental(&env, &mut size)
                .with_context(|| format!("{n} users: roster sync after a batch of changes"))?;
            env.record(Some(n), "cli-incremental", v)?;
        }
        if has(&env, "serve") {
            let v = phase_serve(&env, &mut size).with_context(|| format!("{n} users: roster serve (syncrepl)"))?;
            env.record(Some(n), "serve", v)?;
        }
    }
    if !tenants_done {
        eprintln!("[directory] ===== {} tenants on a {tenant_users}-user directory =====", env.args.tenants);
        let dir = Directory::prepare(&env, tenant_users)?;
        let slapd = Slapd::start(&env, "slapd-tenants", &dir.ldif)?;
        let v = phase_tenants(&env, &slapd, tenant_users).context("multi-tenant sync")?;
        env.record(None, "tenants", v)?;
    }
    write_reports(&env)?;
    if !env.args.keep {
        let _ = std::fs::remove_dir_all(&env.work);
    }
    eprintln!("[directory] done: {}", env.out.join("directory.md").display());
    print!("{}", markdown(&env.results));
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("directory bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
