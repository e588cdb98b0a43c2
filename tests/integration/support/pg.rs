//! A PostgreSQL database per test, when the suite runs against PostgreSQL
//! (`ROSTER_TEST_STORE=postgres`, as `tests/run` does for its second pass).
//!
//! The server is the one on the machine (`ROSTER_TEST_PG`, by default
//! `postgres://postgres@127.0.0.1:5432/postgres`); a test that cannot reach it
//! fails, it is never skipped.

use std::sync::atomic::{AtomicU32, Ordering};

pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server's admin URL.
pub fn admin_url() -> String {
    std::env::var("ROSTER_TEST_PG").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string())
}

pub fn postgres_run() -> bool {
    match std::env::var("ROSTER_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("ROSTER_TEST_STORE={other}: expected sqlite or postgres"),
    }
}

fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {url}: {e} (start it, or set ROSTER_TEST_PG)"))
}

/// Runs one statement, or fails the test with the server's message.
fn run(client: &mut postgres::Client, sql: &str) {
    if let Err(e) = client.batch_execute(sql) {
        let message = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string());
        panic!("{sql}: {message}");
    }
}

/// A database created for one test and dropped after it.
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// A fresh database when this is a PostgreSQL run, else none.
    pub fn for_this_run() -> Option<TestDatabase> {
        postgres_run().then(TestDatabase::create)
    }

    pub fn create() -> TestDatabase {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("roster_it_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let admin = admin_url();
        let mut client = connect(&admin);
        // One statement each: several in one query string form a transaction,
        // which CREATE DATABASE refuses.
        run(&mut client, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        run(&mut client, &format!("CREATE DATABASE {name}"));
        let mut url = url::Url::parse(&admin).expect("ROSTER_TEST_PG is a URL");
        url.set_path(&format!("/{name}"));
        TestDatabase { name, url: url.to_string() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn execute(&self, sql: &str) {
        run(&mut connect(&self.url), sql);
    }

    pub fn query_i64(&self, sql: &str) -> i64 {
        let row = connect(&self.url).query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.get(0)
    }

    pub fn query_texts(&self, sql: &str) -> Vec<String> {
        let row = connect(&self.url).query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}"));
        (0..row.len()).map(|i| row.get::<_, String>(i)).collect()
    }

    /// Copies the database to `<name>_<suffix>` (no one may be connected to it).
    pub fn copy_to(&self, suffix: &str) {
        let copy = format!("{}_{suffix}", self.name);
        let mut admin = connect(&admin_url());
        run(&mut admin, &format!("DROP DATABASE IF EXISTS {copy} WITH (FORCE)"));
        run(&mut admin, &format!("CREATE DATABASE {copy} TEMPLATE {}", self.name));
    }

    /// Replaces the database with the copy [`TestDatabase::copy_to`] made.
    pub fn restore_from(&self, suffix: &str) {
        let copy = format!("{}_{suffix}", self.name);
        let mut admin = connect(&admin_url());
        run(&mut admin, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        run(&mut admin, &format!("CREATE DATABASE {} TEMPLATE {copy}", self.name));
    }

    /// Every row of every table of the database, as text.
    pub fn dump(&self) -> Vec<u8> {
        let mut client = connect(&self.url);
        let tables: Vec<String> = client
            .query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", &[])
            .expect("listing tables")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut out = Vec::new();
        for t in tables {
            for row in client.query(&format!("SELECT t::text FROM \"{t}\" t"), &[]).expect("dumping a table") {
                out.extend_from_slice(row.get::<_, String>(0).as_bytes());
                out.push(b'\n');
            }
        }
        out
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Best effort: a leftover database is harmless (named by pid) and the
        // next run of the same pid drops it first.
        if let Ok(mut client) = postgres::Client::connect(&admin_url(), postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
            // Copies made by `copy_to`.
            let copies: Vec<String> = client
                .query("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", &[&format!("{}_", self.name)])
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
                .unwrap_or_default();
            for copy in copies {
                let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {copy} WITH (FORCE)"));
            }
        }
    }
}
