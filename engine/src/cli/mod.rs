//! The CLI edge: argument parsing, output and exit codes. `anyhow` lives here
//! and nowhere below.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes (documented in the README).
pub mod exit {
    pub const OK: u8 = 0;
    /// A run or command failed (source unreachable, store error, …).
    pub const FAILURE: u8 = 1;
    /// Bad configuration or usage.
    pub const CONFIG: u8 = 2;
    /// The delete guard-rail blocked the plan; nothing was applied.
    pub const GUARDRAIL: u8 = 3;
    /// Too many entries failed to map; the run was aborted before apply.
    pub const ABORTED: u8 = 4;
    /// A source could not be read completely: changes read were applied, no deletes.
    pub const PARTIAL: u8 = 5;
}

#[derive(Parser, Debug)]
#[command(
    name = "roster",
    version,
    about = "Keeps your application's users and groups in step with your customers' directories"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, env = "ROSTER_CONFIG", default_value = "roster.toml")]
    pub config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Read the sources, map, plan and apply.
    Sync {
        /// Only this tenant (default: all).
        #[arg(long)]
        tenant: Option<String>,
        /// Print the plan and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply a plan even if it is over the delete guard-rail (this run only).
        #[arg(long)]
        allow_deletes: bool,
        /// Read every source whole, even one that can read only what changed (Active Directory).
        #[arg(long)]
        full: bool,
        /// Print the plan before applying it.
        #[arg(long)]
        show_plan: bool,
        /// Print the run report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run as a service: each source syncs as its `sync = { mode = … }` says
    /// (manual, schedule, realtime), with retries, notifications and /metrics.
    Serve {
        /// Address for /metrics and /healthz (default: [serve] listen, 127.0.0.1:9464).
        #[arg(long)]
        listen: Option<String>,
        /// This node's name among the nodes sharing the store (default: [serve] node_id, else host-pid).
        #[arg(long)]
        node_id: Option<String>,
    },
    /// API tokens for `roster serve`'s HTTP API (events, REST, SCIM).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// The events outbox: every applied change, in order.
    Events {
        #[command(subcommand)]
        action: EventsAction,
    },
    /// Webhook delivery: where each endpoint stands; replay dead letters.
    Webhooks {
        #[command(subcommand)]
        action: WebhooksAction,
    },
    /// The audit trail: every run, change and admin action, hash-chained.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Synced users; `edit` records a change the application made.
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// Synced groups.
    Groups {
        #[command(subcommand)]
        action: ListAction,
    },
    /// Entries that could not be synced, with the reason.
    Quarantine {
        #[command(subcommand)]
        action: QuarantineAction,
    },
    /// Each tenant's sources: kind, last complete sync, last run, quarantine.
    Status {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Recent sync runs.
    Runs {
        #[command(subcommand)]
        action: RunsAction,
    },
    /// One entry's way through the pipeline: source attributes, scope, mapper output, stored state, quarantine.
    Explain {
        #[arg(long)]
        tenant: String,
        /// The entry's anchor (entryUUID, objectGUID…) or DN.
        key: String,
    },
    /// The tenant's plugin registry: upload, list, activate (and roll back).
    Plugin {
        #[command(subcommand)]
        action: PluginAction,
    },
    /// Source checks.
    Source {
        #[command(subcommand)]
        action: SourceAction,
    },
    /// Configuration checks.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum ListAction {
    List {
        #[arg(long)]
        tenant: String,
        /// SCIM 2.0 JSON (RFC 7643) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Create a token; its secret is printed once and never stored.
    Create {
        #[arg(long)]
        name: String,
        /// Tenant the token may access (repeat for several).
        #[arg(long = "tenant", required = true)]
        tenants: Vec<String>,
        /// admin, operator, reader or plugin-publisher.
        #[arg(long, default_value = "reader")]
        role: String,
        #[arg(long, allow_hyphen_values = true)]
        expires_in_days: Option<i64>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Revoke {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum EventsAction {
    List {
        #[arg(long)]
        tenant: String,
        /// Events after this sequence number (a cursor; 0: from the oldest retained).
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum WebhooksAction {
    Status {
        #[arg(long)]
        tenant: String,
    },
    /// Send an endpoint's dead-lettered events again.
    Replay {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        endpoint: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditAction {
    /// Recompute the hash chain; exits non-zero naming the first record that
    /// was edited, removed or reordered.
    Verify,
    /// A tenant's audit records as JSON lines (one record per line).
    Export {
        /// The tenant; "*" for security events aimed at names that are no tenant.
        #[arg(long)]
        tenant: String,
        /// Records at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum UsersAction {
    List {
        #[arg(long)]
        tenant: String,
        /// SCIM 2.0 JSON (RFC 7643) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Record that the application changed attributes of a user. The value
    /// stands until the directory changes the attribute too; then the
    /// tenant's conflict resolver decides (`[tenant.conflicts] on_app_edit`,
    /// `precedence` with `app`).
    Edit {
        #[arg(long)]
        tenant: String,
        /// The user's anchor (entryUUID, objectGUID, …).
        anchor: String,
        /// ATTRIBUTE=VALUE (SCIM path, e.g. title=CTO); repeat for more; an
        /// empty value clears the attribute.
        #[arg(long = "set", value_name = "ATTRIBUTE=VALUE", required = true)]
        set: Vec<String>,
        /// Who made the change, for the record.
        #[arg(long, default_value = "app")]
        by: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RunsAction {
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve a run the delete guard-rail blocked: runs the tenant again and
    /// applies the new plan only if it deletes nothing that run did not plan.
    Approve {
        #[arg(long)]
        tenant: String,
        /// The blocked run's id (`roster runs list`).
        run: i64,
    },
}

#[derive(Subcommand, Debug)]
pub enum QuarantineAction {
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Settle a quarantined entry: `--keep` gives a conflicted unique value to
    /// this entry from the next run on; `--dismiss` clears the record (it comes
    /// back if the entry still fails).
    Resolve {
        #[arg(long)]
        tenant: String,
        /// The entry's anchor.
        anchor: String,
        #[arg(long, conflicts_with = "dismiss", required_unless_present = "dismiss")]
        keep: bool,
        #[arg(long)]
        dismiss: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum PluginAction {
    /// Validate a plugin, run its test vectors, store it as the next version and activate it.
    Add {
        #[arg(long)]
        tenant: String,
        /// Plugin kind: mapper.
        #[arg(long)]
        kind: String,
        /// Test vectors (JSON); default: FILE.vectors.json beside the plugin, if present.
        #[arg(long)]
        vectors: Option<PathBuf>,
        /// Store it without making it the active version.
        #[arg(long)]
        no_activate: bool,
        /// The component (.wasm).
        file: PathBuf,
    },
    /// Create a plugin crate that builds as is (SDK and WIT vendored).
    New {
        /// Plugin kind: mapper.
        #[arg(long, default_value = "mapper")]
        kind: String,
        /// Crate name; the crate is created in ./NAME.
        name: String,
    },
    /// Run a plugin file on sample entries exactly as a sync would (same host,
    /// sandbox and limits) and show each entry's result, time, instructions and memory.
    /// Needs no configuration file.
    Test {
        /// The component (.wasm).
        file: PathBuf,
        /// Entries: an LDIF file, or a JSON array of `{anchor, dn, kind, attributes}` (*.json).
        /// A conflict-resolver reads a JSON array of conflicts instead (see docs/plugins.md).
        #[arg(long)]
        input: PathBuf,
        /// The plugin's configuration: a TOML file holding what `[tenant.plugins.mapper.config]` would.
        /// (Not `--config`: that global option names roster's own configuration file.)
        #[arg(long, value_name = "FILE")]
        plugin_config: Option<PathBuf>,
        /// Plugin kind: mapper, custom-attributes, role-assigner or conflict-resolver.
        #[arg(long, default_value = "mapper")]
        kind: String,
        /// Custom-attribute declarations for a custom-attributes plugin: a TOML
        /// file shaped like [tenant.custom_attributes] (`NAME = { type = "integer" }`).
        #[arg(long, value_name = "FILE")]
        schema: Option<PathBuf>,
        /// Deadline per call in milliseconds (default: the tenant default, 2000).
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Memory cap in MiB (default: the tenant default, 64).
        #[arg(long)]
        memory_mb: Option<u64>,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Every stored version, and which one is active.
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Re-enable a kind of plugin that was disabled after consecutive failed runs.
    Enable {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        kind: String,
    },
    /// Make a stored version the active one (an older one to roll back).
    Activate { tenant: String, kind: String, version: i64 },
}

#[derive(Subcommand, Debug)]
pub enum SourceAction {
    /// Connect, authenticate and read: print what was found, change nothing.
    Test {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        source: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Parse the configuration and validate every tenant's plugins and expressions.
    Check,
}

pub fn main() -> ExitCode {
    restore_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::CONFIG } else { exit::OK });
        }
    };
    init_tracing(&cli);
    match commands::run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// `roster users list | head` should end quietly, as Unix tools do, not panic
/// on a closed pipe: Rust ignores SIGPIPE by default, so restore the default.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is
    // a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_tracing(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    // Detail is for Roster's own events: debug/trace of every dependency
    // (wasmtime's compiler above all) would bury them under gigabytes.
    // RUST_LOG still selects anything.
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "roster=debug,info",
        _ => "roster=trace,info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
