//! The connection: prepared statements reused across calls, transactions, and
//! the per-tenant lock that keeps event sequences and audit chains linear.

use std::collections::HashMap;

use postgres::types::ToSql;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use postgres::config::{Host, SslMode};
use postgres::{Client, GenericClient, Row, Statement, Transaction};

use crate::config::Secret;

use crate::store::StoreError;

/// A query parameter.
pub(super) type Param<'a> = &'a (dyn ToSql + Sync);

pub(super) fn q(context: &'static str) -> impl Fn(postgres::Error) -> StoreError {
    move |e| StoreError::Query { context, message: detailed(&e) }
}

/// The server's message with its detail: `Display` of a database error says
/// only "db error".
fn detailed(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {detail}", db.message()),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    }
}

/// Where the store's database is, resolved from `[store]`.
#[derive(Clone)]
pub struct PgTarget {
    pub url: String,
    pub password: Option<Secret>,
    pub ca_file: Option<PathBuf>,
}

fn open_error(url: &str, message: String) -> StoreError {
    StoreError::Open { path: redacted(url), message }
}

fn is_loopback(host: &Host) -> bool {
    match host {
        Host::Tcp(name) => name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        Host::Unix(_) => true,
    }
}

/// Opens a connection: the one place that chooses the transport. TLS is
/// verified (our rustls configuration), and required unless the server is
/// on loopback; a password comes from the configuration's secret reference.
pub(super) fn connect(target: &PgTarget) -> Result<Client, StoreError> {
    let url = target.url.as_str();
    let mut config: postgres::Config =
        url.parse().map_err(|e| open_error(url, format!("not a PostgreSQL URL: {e}")))?;
    if let Some(password) = &target.password {
        config.password(password.expose());
    }
    config.application_name("roster");
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    let local = config.get_hosts().iter().all(is_loopback);
    match config.get_ssl_mode() {
        // A store holds every tenant's directory: it does not cross a network in clear.
        SslMode::Disable if !local => {
            return Err(open_error(url, "sslmode=disable is refused for a server that is not on loopback".into()));
        }
        SslMode::Prefer if !local => {
            config.ssl_mode(SslMode::Require);
        }
        // Loopback traffic stays on the machine, and a local server's
        // certificate is typically self-signed (Debian's snakeoil), which a
        // verified handshake would refuse. `sslmode=require` still asks for TLS.
        SslMode::Prefer => {
            config.ssl_mode(SslMode::Disable);
        }
        _ => {}
    }
    let (tls, _, _) = crate::source::ldap::tls::client_config(target.ca_file.as_deref(), false)
        .map_err(|e| open_error(url, format!("TLS setup: {e}")))?;
    let connector = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
    config.connect(connector).map_err(|e| open_error(url, format!("cannot connect: {}", detailed(&e))))
}

/// The URL without its password, for messages and logs.
pub(crate) fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        // A key=value connection string: keep only what names the server.
        Err(_) => url
            .split_whitespace()
            .filter(|kv| !kv.to_ascii_lowercase().starts_with("password="))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// A live connection and the statements prepared on it.
pub(super) struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    pub(super) fn new(client: Client) -> Self {
        Self { client, statements: HashMap::new() }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Whether the server still answers (a round trip: for after an error).
    pub(super) fn is_usable(&mut self) -> bool {
        !self.client.is_closed() && self.client.is_valid(std::time::Duration::from_secs(5)).is_ok()
    }

    /// Statements outside a transaction (each one commits by itself).
    pub(super) fn db(&mut self) -> Db<'_, Client> {
        Db { client: &mut self.client, statements: &mut self.statements }
    }

    /// Runs `f` in a transaction, committed when it returns `Ok`; an `Err`
    /// (or a panic) rolls everything back.
    pub(super) fn transaction<T>(
        &mut self,
        context: &'static str,
        f: impl FnOnce(&mut Db<'_, Transaction<'_>>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tx = self.client.transaction().map_err(q(context))?;
        let out = f(&mut Db { client: &mut tx, statements: &mut self.statements })?;
        tx.commit().map_err(q(context))?;
        Ok(out)
    }

    /// A read-only transaction that sees one snapshot throughout, for reads
    /// that must be consistent across several statements.
    pub(super) fn snapshot<T>(
        &mut self,
        context: &'static str,
        f: impl FnOnce(&mut Db<'_, Transaction<'_>>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(q(context))?;
        let out = f(&mut Db { client: &mut tx, statements: &mut self.statements })?;
        tx.commit().map_err(q(context))?;
        Ok(out)
    }
}

/// A connection or a transaction, with the statement cache: a statement is
/// parsed and planned by the server once per connection, not on every call.
pub(super) struct Db<'a, C: GenericClient> {
    client: &'a mut C,
    statements: &'a mut HashMap<String, Statement>,
}

impl<C: GenericClient> Db<'_, C> {
    fn prepare(&mut self, context: &'static str, sql: &str) -> Result<Statement, StoreError> {
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql).map_err(q(context))?;
        self.statements.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    pub(super) fn execute(
        &mut self,
        context: &'static str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<u64, StoreError> {
        let st = self.prepare(context, sql)?;
        self.client.execute(&st, params).map_err(q(context))
    }

    pub(super) fn query(
        &mut self,
        context: &'static str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>, StoreError> {
        let st = self.prepare(context, sql)?;
        self.client.query(&st, params).map_err(q(context))
    }

    pub(super) fn query_opt(
        &mut self,
        context: &'static str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Option<Row>, StoreError> {
        let st = self.prepare(context, sql)?;
        self.client.query_opt(&st, params).map_err(q(context))
    }

    pub(super) fn query_one(
        &mut self,
        context: &'static str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Row, StoreError> {
        let st = self.prepare(context, sql)?;
        self.client.query_one(&st, params).map_err(q(context))
    }

    /// Rows one at a time as the server sends them, for results too large to
    /// hold (a tenant's whole audit trail).
    pub(super) fn for_each_row(
        &mut self,
        context: &'static str,
        sql: &str,
        params: &[Param<'_>],
        mut f: impl FnMut(&Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        use postgres::fallible_iterator::FallibleIterator;
        let st = self.prepare(context, sql)?;
        let mut rows = self.client.query_raw(&st, params.iter().copied()).map_err(q(context))?;
        while let Some(row) = rows.next().map_err(q(context))? {
            f(&row)?;
        }
        Ok(())
    }

    /// Several statements in one round trip, without parameters (DDL).
    pub(super) fn batch(&mut self, context: &'static str, sql: &str) -> Result<(), StoreError> {
        self.client.batch_execute(sql).map_err(q(context))
    }
}

impl Db<'_, Transaction<'_>> {
    /// Serialises, across every process sharing the database, the
    /// transactions that number a tenant's events or extend its audit chain:
    /// each reads the last number and writes the next, which two concurrent
    /// transactions would otherwise both do from the same value. Held until
    /// the transaction ends; take it before reading either.
    pub(super) fn lock_tenant(&mut self, tenant: &str) -> Result<(), StoreError> {
        self.execute(
            "locking the tenant",
            "SELECT pg_advisory_xact_lock(hashtextextended('roster-tenant:' || $1::text, 0))",
            &[&tenant],
        )?;
        Ok(())
    }
}

/// Reads column `i`, or says which operation found a row it cannot read.
pub(super) fn get<'r, T: postgres::types::FromSql<'r>>(
    row: &'r Row,
    i: usize,
    context: &'static str,
) -> Result<T, StoreError> {
    row.try_get(i).map_err(q(context))
}
