//! Shared helpers: run the real `roster` binary against a throwaway data dir.

#![allow(dead_code)]

pub mod graph;
pub mod peers;
pub mod pg;
pub mod receiver;
pub mod samba;
pub mod serve;
pub mod slapd;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A plugin built from `plugins/` by engine/build.rs for this test run.
pub fn plugin_wasm(stem: &str) -> PathBuf {
    let p = PathBuf::from(env!("ROSTER_PLUGIN_BUILD_DIR")).join(format!("{stem}.wasm"));
    assert!(p.is_file(), "plugin {} was not built", p.display());
    p
}

/// Builds a crate made by `roster plugin new` exactly as its README says
/// (`cargo build --release`), in a target directory the scaffold tests share
/// so the SDK's dependencies compile once; returns the component.
pub fn build_scaffold(krate: &Path, file_stem: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("scaffold-target");
    let build = std::process::Command::new(cargo)
        .current_dir(krate)
        .args(["build", "--release", "--quiet"])
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .expect("cargo build");
    assert!(build.status.success(), "the scaffold builds as is:\n{}", String::from_utf8_lossy(&build.stderr));
    let wasm = target.join("wasm32-wasip2/release").join(format!("{file_stem}.wasm"));
    assert!(wasm.is_file(), "{} was not built", wasm.display());
    wasm
}

/// A temp dir with a `roster.toml` in it, and, when the suite runs against
/// PostgreSQL (`ROSTER_TEST_STORE=postgres`), a database of its own.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub pg: Option<pg::TestDatabase>,
}

/// What one `roster` invocation did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }

    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "roster failed\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "unexpected exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

impl Env {
    pub fn new(config: &str) -> Env {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let env = Env { dir, pg: pg::TestDatabase::for_this_run() };
        env.write_config(config);
        env
    }

    /// An environment on a PostgreSQL database of its own, whatever the run's
    /// store (what several `roster serve` nodes share).
    pub fn new_postgres(config: &str) -> Env {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let env = Env { dir, pg: Some(pg::TestDatabase::create()) };
        env.write_config(config);
        env
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("roster.toml")
    }

    pub fn write_config(&self, config: &str) {
        std::fs::write(self.config_path(), config).expect("writing roster.toml");
    }

    pub fn cmd(&self) -> Command {
        self.cmd_with_config(&self.config_path())
    }

    /// `roster --config FILE` on this environment's store.
    pub fn cmd_with_config(&self, config: &Path) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_roster"));
        c.arg("--config").arg(config).env_remove("RUST_LOG").env("NO_COLOR", "1");
        match &self.pg {
            Some(db) => c.env("ROSTER_STORE_URL", db.url()),
            None => c.env_remove("ROSTER_STORE_URL"),
        };
        c
    }

    /// Which backend the store of this run is.
    pub fn is_postgres(&self) -> bool {
        self.pg.is_some()
    }

    /// Runs SQL statements on the store directly (what a tamperer with
    /// database access could do).
    pub fn store_sql(&self, sql: &str) {
        match &self.pg {
            Some(db) => db.execute(sql),
            None => self.sqlite().execute_batch(sql).expect("running SQL on the store"),
        }
    }

    /// One integer from the store (`SELECT count(*) …`).
    pub fn store_count(&self, sql: &str) -> i64 {
        match &self.pg {
            Some(db) => db.query_i64(sql),
            None => self.sqlite().query_row(sql, [], |r| r.get(0)).expect("querying the store"),
        }
    }

    /// One row of text columns from the store.
    pub fn store_texts(&self, sql: &str) -> Vec<String> {
        match &self.pg {
            Some(db) => db.query_texts(sql),
            None => self
                .sqlite()
                .query_row(sql, [], |r| (0..r.as_ref().column_count()).map(|i| r.get::<_, String>(i)).collect())
                .expect("querying the store"),
        }
    }

    /// Everything the store holds, as bytes: the SQLite file, or a dump of
    /// every table for PostgreSQL (to search for what must not be stored).
    pub fn store_bytes(&self) -> Vec<u8> {
        match &self.pg {
            Some(db) => db.dump(),
            None => std::fs::read(self.path().join("data").join("roster.db")).expect("reading the store"),
        }
    }

    /// Keeps a copy of the store under `name`, for [`Env::restore_store`].
    pub fn save_store(&self, name: &str) {
        match &self.pg {
            Some(db) => db.copy_to(name),
            None => copy_files(&self.path().join("data"), &self.path().join(name)),
        }
    }

    /// Puts back the copy [`Env::save_store`] kept.
    pub fn restore_store(&self, name: &str) {
        match &self.pg {
            Some(db) => db.restore_from(name),
            None => copy_files(&self.path().join(name), &self.path().join("data")),
        }
    }

    fn sqlite(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.path().join("data").join("roster.db")).expect("opening the SQLite store")
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd().args(args).output().expect("running roster"))
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.cmd();
        for (k, v) in env {
            c.env(k, v);
        }
        Run::from(c.args(args).output().expect("running roster"))
    }

    /// `sync --json` and the report of the first tenant.
    pub fn sync(&self, extra: &[&str]) -> (Run, Value) {
        let mut args = vec!["sync", "--json"];
        args.extend_from_slice(extra);
        let run = self.run(&args);
        let report = if run.stdout.trim().is_empty() { Value::Null } else { run.json()[0].clone() };
        (run, report)
    }

    pub fn users(&self, tenant: &str) -> Vec<Value> {
        let r = self.run(&["users", "list", "--tenant", tenant, "--json"]).ok();
        r.json()["Resources"].as_array().cloned().unwrap_or_default()
    }

    pub fn groups(&self, tenant: &str) -> Vec<Value> {
        let r = self.run(&["groups", "list", "--tenant", tenant, "--json"]).ok();
        r.json()["Resources"].as_array().cloned().unwrap_or_default()
    }

    pub fn quarantine(&self, tenant: &str) -> Vec<Value> {
        let r = self.run(&["quarantine", "list", "--tenant", tenant, "--json"]).ok();
        r.json().as_array().cloned().unwrap_or_default()
    }

    pub fn runs(&self, tenant: &str) -> Vec<Value> {
        let r = self.run(&["runs", "list", "--tenant", tenant, "--json"]).ok();
        r.json().as_array().cloned().unwrap_or_default()
    }
}

fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

/// Finds a SCIM user by userName.
pub fn user<'a>(users: &'a [Value], user_name: &str) -> Option<&'a Value> {
    users.iter().find(|u| u["userName"] == user_name)
}

pub fn counts(report: &Value) -> (u64, u64, u64) {
    let c = &report["counts"];
    (c["creates"].as_u64().unwrap_or(0), c["updates"].as_u64().unwrap_or(0), c["deletes"].as_u64().unwrap_or(0))
}
