//! `roster plugin new`: a plugin crate that builds as is.
//!
//! The SDK, the wire format crate and the WIT files are vendored into the new
//! crate from the copies compiled into this binary, so the scaffold depends on
//! nothing but crates.io and always matches the host's WIT version.

use std::path::{Path, PathBuf};

/// (path inside the new crate, contents)
const VENDORED: &[(&str, &str)] = &[
    ("wit/types.wit", include_str!("../../wit/types.wit")),
    ("wit/mapper.wit", include_str!("../../wit/mapper.wit")),
    ("wit/custom-attributes.wit", include_str!("../../wit/custom-attributes.wit")),
    ("wit/role-assigner.wit", include_str!("../../wit/role-assigner.wit")),
    ("wit/conflict-resolver.wit", include_str!("../../wit/conflict-resolver.wit")),
    ("wit/connector.wit", include_str!("../../wit/connector.wit")),
    ("vendor/roster-wire/src/lib.rs", include_str!("../../plugins/wire/src/lib.rs")),
    ("vendor/roster-plugin-sdk/src/lib.rs", include_str!("../../plugins/sdk/src/lib.rs")),
    ("vendor/roster-plugin-sdk/src/config.rs", include_str!("../../plugins/sdk/src/config.rs")),
    ("vendor/roster-plugin-sdk/src/entry.rs", include_str!("../../plugins/sdk/src/entry.rs")),
    ("vendor/roster-plugin-sdk/src/log.rs", include_str!("../../plugins/sdk/src/log.rs")),
    ("vendor/roster-plugin-sdk/src/output.rs", include_str!("../../plugins/sdk/src/output.rs")),
    ("vendor/roster-plugin-sdk/src/mapper.rs", include_str!("../../plugins/sdk/src/mapper.rs")),
    ("vendor/roster-plugin-sdk/src/custom_attributes.rs", include_str!("../../plugins/sdk/src/custom_attributes.rs")),
    ("vendor/roster-plugin-sdk/src/role_assigner.rs", include_str!("../../plugins/sdk/src/role_assigner.rs")),
    ("vendor/roster-plugin-sdk/src/conflict_resolver.rs", include_str!("../../plugins/sdk/src/conflict_resolver.rs")),
    ("vendor/roster-plugin-sdk/src/connector.rs", include_str!("../../plugins/sdk/src/connector.rs")),
    ("vendor/roster-plugin-sdk/src/http.rs", include_str!("../../plugins/sdk/src/http.rs")),
];

const WIRE_MANIFEST: &str = r#"[package]
name = "roster-wire"
version = "0.1.0"
edition = "2024"
license = "Apache-2.0"
publish = false
"#;

const SDK_MANIFEST: &str = r#"[package]
name = "roster-plugin-sdk"
version = "0.1.0"
edition = "2024"
license = "Apache-2.0"
publish = false

[dependencies]
roster-wire = { path = "../roster-wire" }
wit-bindgen = { version = "0.63", default-features = false, features = ["macros", "realloc", "std"] }

[features]
mapper = []
custom-attributes = []
role-assigner = []
conflict-resolver = []
connector = []
"#;

/// The starting point for each kind other than the mapper: the example
/// plugins of `plugins/examples/`, which the test suite builds and runs.
const CUSTOM_ATTRIBUTES_LIB: &str = include_str!("../../plugins/examples/badge-attributes/src/lib.rs");
const ROLE_ASSIGNER_LIB: &str = include_str!("../../plugins/examples/department-roles/src/lib.rs");
const CONFLICT_RESOLVER_LIB: &str = include_str!("../../plugins/examples/newest-wins-resolver/src/lib.rs");

const CONNECTOR_LIB: &str = r#"//! A Roster source connector. Build: `cargo build --release`; the component is
//! target/wasm32-wasip2/release/{crate}.wasm. Use it as a source:
//!
//! ```toml
//! [[tenant.source]]
//! name = "vendor"
//! kind = "plugin"
//! plugin = "target/wasm32-wasip2/release/{crate}.wasm"
//! allow_hosts = ["api.example.com"]
//! auth = { type = "bearer", token = { env = "VENDOR_TOKEN" } }
//! [tenant.source.config]
//! url = "https://api.example.com/people.txt"
//! ```
//!
//! The host sends every request (allowlist, credentials, limits); this code
//! never sees a secret. See docs/connectors.md of Roster.

use roster_plugin_sdk::prelude::*;

/// One user per line of a text document.
struct Lines {
    url: String,
}

impl Connector for Lines {
    fn init(config: &Config) -> Result<Self, Vec<ConfigError>> {
        let mut errors = config.unknown_keys(&["url"]);
        match config.str("url") {
            Ok(Some(url)) if errors.is_empty() => return Ok(Lines { url: url.to_string() }),
            Ok(Some(_)) => {}
            Ok(None) => errors.push(ConfigError::new("url", "required")),
            Err(e) => errors.push(e),
        }
        Err(errors)
    }

    fn read(&mut self, _cursor: Option<&str>) -> Result<Page, ReadError> {
        let response = http::Request::get(&self.url).header("Accept", "text/plain").send()?;
        if !response.is_success() {
            return Err(ReadError::Http(format!("HTTP {}", response.status)));
        }
        // No next cursor: this one page is the whole read.
        let mut page = Page::new();
        for name in response.text().lines().map(str::trim).filter(|l| !l.is_empty()) {
            page.push(SourceObject::user(name).attr("userName", name));
        }
        Ok(page)
    }

    fn check(&mut self) -> Result<String, ReadError> {
        Ok(format!("{} answers HTTP {}", self.url, http::get(&self.url)?.status))
    }
}

roster_plugin_sdk::export_connector!(Lines);
"#;

const MAPPER_LIB: &str = r#"//! A Roster mapping plugin. Build: `cargo build --release`; the component is
//! target/wasm32-wasip2/release/{crate}.wasm. Try it: `roster plugin test` / upload: `roster plugin add`.

use roster_plugin_sdk::prelude::*;

struct Plugin;

impl Mapper for Plugin {
    fn init(config: &Config) -> Result<Self, Vec<ConfigError>> {
        // Refuse settings this plugin does not know, with "did you mean" hints.
        let unknown = config.unknown_keys(&[]);
        if unknown.is_empty() { Ok(Plugin) } else { Err(unknown) }
    }

    fn map(&mut self, entry: &Entry<'_>) -> MapResult {
        let mut out = Output::for_entry(entry);
        if entry.is_user() {
            let Some(uid) = entry.first_str("uid") else {
                return MapResult::skip("no uid");
            };
            out.set("userName", uid.to_lowercase())
                .set_opt("name.givenName", entry.first_str("givenName"))
                .set_opt("name.familyName", entry.first_str("sn"))
                .set_opt("displayName", entry.first_str("displayName").or(entry.first_str("cn")))
                .set_all("emails", entry.values_str("mail").map(str::to_lowercase));
        } else {
            let Some(name) = entry.first_str("displayName").or(entry.first_str("cn")) else {
                return MapResult::error("group has neither displayName nor cn");
            };
            out.set("displayName", name);
        }
        out.finish()
    }
}

roster_plugin_sdk::export_mapper!(Plugin);
"#;

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("plugin kind '{0}' has no template; kinds: {kinds}", kinds = crate::plugin_host::PluginKind::list())]
    UnknownKind(String),
    #[error("'{0}' is not a valid crate name: use lowercase letters, digits, '-' and '_', starting with a letter")]
    BadName(String),
    #[error("{0} already exists; choose another name or remove it")]
    Exists(String),
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
}

/// Creates `dir/name/` with a plugin crate of the given kind; returns its path.
pub fn new_plugin(dir: &Path, kind: &str, name: &str) -> Result<PathBuf, ScaffoldError> {
    use crate::plugin_host::PluginKind;
    let Some(plugin_kind) = PluginKind::parse(kind) else {
        return Err(ScaffoldError::UnknownKind(kind.to_string()));
    };
    let lib = match plugin_kind {
        PluginKind::Mapper => MAPPER_LIB,
        PluginKind::CustomAttributes => CUSTOM_ATTRIBUTES_LIB,
        PluginKind::RoleAssigner => ROLE_ASSIGNER_LIB,
        PluginKind::ConflictResolver => CONFLICT_RESOLVER_LIB,
        PluginKind::Connector => CONNECTOR_LIB,
    };
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(ScaffoldError::BadName(name.to_string()));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root.display().to_string()));
    }
    let crate_file = name.replace('-', "_");
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
roster-plugin-sdk = {{ path = "vendor/roster-plugin-sdk", features = ["{kind}"] }}

# Small components: size over speed, one codegen unit, full LTO.
[profile.release]
opt-level = "s"
codegen-units = 1
lto = true
strip = "debuginfo"

# A workspace of its own, so it builds wherever it is put.
[workspace]
"#
    );
    let readme = format!(
        "# {name}\n\nA Roster {kind} plugin.\n\n```sh\nrustup target add wasm32-wasip2   # once\ncargo build --release             # → target/wasm32-wasip2/release/{crate_file}.wasm\n{test}{add}```\n\n`vendor/` holds the Roster plugin SDK and `wit/` the interface (roster:plugin@{wit}) this plugin is built against.\n",
        add = if plugin_kind == PluginKind::Connector {
            "# a connector is a source: name the .wasm in [[tenant.source]] with kind = \"plugin\" (see src/lib.rs)\n"
                .to_string()
        } else {
            format!("roster plugin add --tenant TENANT --kind {kind} target/wasm32-wasip2/release/{crate_file}.wasm\n")
        },
        test = if plugin_kind == PluginKind::Mapper {
            format!("roster plugin test target/wasm32-wasip2/release/{crate_file}.wasm --input entries.ldif\n")
        } else {
            String::new()
        },
        wit = crate::plugin_host::LATEST_WIT_VERSION,
    );
    let mut files: Vec<(String, String)> = vec![
        ("Cargo.toml".into(), manifest),
        (".cargo/config.toml".into(), "[build]\ntarget = \"wasm32-wasip2\"\n".into()),
        (".gitignore".into(), "/target\n".into()),
        ("README.md".into(), readme),
        ("src/lib.rs".into(), lib.replace("{crate}", &crate_file)),
        ("vendor/roster-wire/Cargo.toml".into(), WIRE_MANIFEST.into()),
        ("vendor/roster-plugin-sdk/Cargo.toml".into(), SDK_MANIFEST.into()),
    ];
    files.extend(VENDORED.iter().map(|(p, c)| (p.to_string(), c.to_string())));
    for (rel, contents) in files {
        let path = root.join(&rel);
        let write = || -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, contents)
        };
        write().map_err(|e| ScaffoldError::Write { path: path.display().to_string(), message: e.to_string() })?;
    }
    Ok(root)
}
