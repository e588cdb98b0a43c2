//! Write Roster mapping plugins in a few lines of Rust.
//!
//! A Roster plugin is a WebAssembly component implementing the `mapper` world
//! of WIT package `roster:plugin@0.1.0` (`wit/` at the root of the Roster
//! repository). This crate runs the bindings generator for you and hides the
//! wire details: implement [`Mapper`], call [`export_mapper!`], build for
//! `wasm32-wasip2`, and the result is the component.
//!
//! ```
//! # #[cfg(feature = "mapper")]
//! # mod example {
//! use roster_plugin_sdk::prelude::*;
//!
//! struct Upper;
//!
//! impl Mapper for Upper {
//!     fn init(_config: &Config) -> Result<Self, Vec<ConfigError>> {
//!         Ok(Upper)
//!     }
//!
//!     fn map(&mut self, entry: &Entry<'_>) -> MapResult {
//!         let Some(uid) = entry.first_str("uid") else {
//!             return MapResult::skip("no uid");
//!         };
//!         Output::for_entry(entry)
//!             .set("userName", uid.to_lowercase())
//!             .set_opt("displayName", entry.first_str("cn").map(str::to_uppercase))
//!             .finish()
//!     }
//! }
//!
//! roster_plugin_sdk::export_mapper!(Upper);
//! # }
//! ```
//!
//! `Cargo.toml` of the plugin:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]          # add "rlib" to unit-test it natively
//!
//! [dependencies]
//! roster-plugin-sdk = { path = "…/plugins/sdk" }
//! ```
//!
//! and `cargo build --release --target wasm32-wasip2` emits
//! `target/wasm32-wasip2/release/<crate>.wasm`, a component.
//!
//! # Life cycle
//!
//! The host calls `init` once per instance with the tenant's configuration
//! ([`Config`]); the value [`Mapper::init`] returns is kept for the life of the
//! instance and every batch of entries is handed to [`Mapper::map`] one entry at
//! a time, in order. `map` before a successful `init` answers every entry with
//! an error. An entry whose packed attributes are malformed gets an error
//! result without reaching `map`.
//!
//! A panic, an infinite loop or an allocation storm does not take the host down:
//! the instance traps, is killed or hits its limits, and the host reports the
//! plugin as failed.
//!
//! # Connectors
//!
//! With the `connector` feature the crate builds the other direction: a
//! source connector (world `connector`) that reads users and groups from a
//! remote system page by page, through the host's HTTP ([`http`]); the host
//! adds the credentials and enforces the allowlist. Implement
//! [`Connector`](connector::Connector) and call [`export_connector!`]:
//!
//! ```
//! # #[cfg(feature = "connector")]
//! # mod example {
//! use roster_plugin_sdk::prelude::*;
//!
//! /// One user per line of a text file served over HTTP.
//! struct Lines {
//!     url: String,
//! }
//!
//! impl Connector for Lines {
//!     fn init(config: &Config) -> Result<Self, Vec<ConfigError>> {
//!         let mut errors = config.unknown_keys(&["url"]);
//!         match config.str("url") {
//!             Ok(Some(url)) if errors.is_empty() => return Ok(Lines { url: url.to_string() }),
//!             Ok(Some(_)) => {}
//!             Ok(None) => errors.push(ConfigError::new("url", "required")),
//!             Err(e) => errors.push(e),
//!         }
//!         Err(errors)
//!     }
//!
//!     fn read(&mut self, _cursor: Option<&str>) -> Result<Page, ReadError> {
//!         let response = http::Request::get(&self.url).header("Accept", "text/plain").send()?;
//!         if !response.is_success() {
//!             return Err(ReadError::Http(format!("HTTP {}", response.status)));
//!         }
//!         let mut page = Page::new(); // no next cursor: one page is the whole read
//!         for name in response.text().lines().filter(|l| !l.is_empty()) {
//!             page.push(SourceObject::user(name).attr("userName", name));
//!         }
//!         Ok(page)
//!     }
//!
//!     fn check(&mut self) -> Result<String, ReadError> {
//!         Ok(format!("{} answers HTTP {}", self.url, http::get(&self.url)?.status))
//!     }
//! }
//!
//! roster_plugin_sdk::export_connector!(Lines);
//! # }
//! ```
//!
//! Calls before a successful `init` answer `ReadError::Config`. A connector
//! that reads deltas says so in [`Connector::describe`](connector::Connector::describe)
//! and implements `read_delta`; the default sends the host back to a full read.
//!
//! # Lower level
//!
//! [`raw`] exposes the generated WIT types and [`export_guest!`] exports a raw
//! `Guest` implementation, for plugins that need control over whole batches.

pub mod config;
pub mod entry;
pub mod log;
pub mod output;

pub use config::{Config, ConfigError, ConfigValue};
pub use entry::{Entry, EntryKind};
pub use output::{MapResult, Mapped, Output};
pub use roster_wire;
pub use roster_wire::{Attr, Attrs};

// One plugin kind per build: each kind is a WIT world, and the component a
// crate builds can implement only one. wit-bindgen embeds every generated
// world's type information in the module and wit-component merges them, so
// two kinds in one build would make a component that claims both worlds.
#[cfg(any(
    all(
        feature = "mapper",
        any(
            feature = "custom-attributes",
            feature = "role-assigner",
            feature = "conflict-resolver",
            feature = "connector"
        )
    ),
    all(
        feature = "custom-attributes",
        any(feature = "role-assigner", feature = "conflict-resolver", feature = "connector")
    ),
    all(feature = "role-assigner", any(feature = "conflict-resolver", feature = "connector")),
    all(feature = "conflict-resolver", feature = "connector"),
))]
compile_error!(
    "roster-plugin-sdk: enable exactly one plugin kind feature (mapper, custom-attributes, role-assigner, conflict-resolver, connector). \
     Plugins of different kinds in one cargo workspace are built one package at a time (`cargo build -p NAME`)."
);
#[cfg(not(any(
    feature = "mapper",
    feature = "custom-attributes",
    feature = "role-assigner",
    feature = "conflict-resolver",
    feature = "connector"
)))]
compile_error!(
    "roster-plugin-sdk: enable the feature of your plugin's kind: mapper, custom-attributes, role-assigner, conflict-resolver or connector"
);

/// Bindings generated from the WIT (`wit_bindgen::generate!`) for the world
/// of the enabled kind. Prefer the types at the crate root; [`raw`]
/// re-exports what is useful from here.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    #[cfg(feature = "mapper")]
    wit_bindgen::generate!({
        world: "mapper",
        path: "../../wit",
        generate_unused_types: true,
        pub_export_macro: true,
        default_bindings_module: "roster_plugin_sdk::bindings",
        export_macro_name: "__export_world",
    });
    #[cfg(feature = "custom-attributes")]
    wit_bindgen::generate!({
        world: "custom-attributes",
        path: "../../wit",
        generate_unused_types: true,
        pub_export_macro: true,
        default_bindings_module: "roster_plugin_sdk::bindings",
        export_macro_name: "__export_world",
    });
    #[cfg(feature = "role-assigner")]
    wit_bindgen::generate!({
        world: "role-assigner",
        path: "../../wit",
        generate_unused_types: true,
        pub_export_macro: true,
        default_bindings_module: "roster_plugin_sdk::bindings",
        export_macro_name: "__export_world",
    });
    #[cfg(feature = "conflict-resolver")]
    wit_bindgen::generate!({
        world: "conflict-resolver",
        path: "../../wit",
        generate_unused_types: true,
        pub_export_macro: true,
        default_bindings_module: "roster_plugin_sdk::bindings",
        export_macro_name: "__export_world",
    });
    #[cfg(feature = "connector")]
    wit_bindgen::generate!({
        world: "connector",
        path: "../../wit",
        generate_unused_types: true,
        pub_export_macro: true,
        default_bindings_module: "roster_plugin_sdk::bindings",
        export_macro_name: "__export_world",
    });
}

/// The WIT-level interface, for plugins that want whole batches (see
/// [`export_guest!`]). The conversions between these types and the friendly
/// ones are [`Config::from_raw`], [`Entry::from_raw`], [`MapResult::into_raw`],
/// [`ConfigError::into_raw`] and [`PluginInfo::into_raw`].
pub mod raw {
    /// The trait a raw guest implements: the world's exports exactly as in the WIT.
    pub use crate::bindings::Guest;
    pub use crate::bindings::roster::plugin::host::{LogLevel, log};
    pub use crate::bindings::roster::plugin::types::*;
    /// The `connector` world's own types (`connector-types`) and the host's `http` interface.
    #[cfg(feature = "connector")]
    pub use crate::bindings::roster::plugin::{
        connector_types::{Capabilities, ConnectorInfo, Page, ReadError, Rejected, SourceObject},
        http::{HttpError, Request as HttpRequest, Response as HttpResponse, send as http_send},
    };
}

/// Everything a plugin usually needs: `use roster_plugin_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::log;
    pub use crate::{Config, ConfigError, ConfigValue, Entry, EntryKind, Output, PluginInfo, plugin_info};

    #[cfg(feature = "conflict-resolver")]
    pub use crate::conflict_resolver::{Claimant, Conflict, ConflictKind, ConflictResolver, Decision};
    #[cfg(feature = "connector")]
    pub use crate::connector::{Connector, ConnectorInfo, Page, ReadError, Rejected, SourceObject};
    #[cfg(feature = "custom-attributes")]
    pub use crate::custom_attributes::{AttributeDecl, AttributeType, CustomAttributes, MappedUser};
    #[cfg(feature = "conflict-resolver")]
    pub use crate::export_conflict_resolver;
    #[cfg(feature = "custom-attributes")]
    pub use crate::export_custom_attributes;
    #[cfg(feature = "mapper")]
    pub use crate::export_mapper;
    #[cfg(feature = "role-assigner")]
    pub use crate::export_role_assigner;
    #[cfg(feature = "role-assigner")]
    pub use crate::role_assigner::{GroupRef, RoleAssigner, UserGroups};
    #[cfg(feature = "mapper")]
    pub use crate::{MapResult, Mapped, Mapper};
    #[cfg(feature = "connector")]
    pub use crate::{connector_info, export_connector, http};
}

#[cfg(feature = "conflict-resolver")]
pub mod conflict_resolver;
#[cfg(feature = "connector")]
pub mod connector;
#[cfg(feature = "custom-attributes")]
pub mod custom_attributes;
#[cfg(feature = "connector")]
pub mod http;
#[cfg(feature = "mapper")]
mod mapper;
#[cfg(feature = "mapper")]
#[doc(hidden)]
pub use mapper::__private as __mapper;
#[cfg(feature = "mapper")]
pub use mapper::Mapper;
#[cfg(feature = "role-assigner")]
pub mod role_assigner;

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
}

thread_local! {
    static PACKAGE: std::cell::Cell<(&'static str, &'static str)> =
        const { std::cell::Cell::new(("unknown", "0.0.0")) };
}

impl PluginInfo {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self { name: name.into(), version: version.into() }
    }

    /// The package name and version of the crate that called
    /// [`export_mapper!`] (`"unknown"`, `"0.0.0"` outside an exported plugin;
    /// use [`plugin_info!`] for the calling crate's own).
    pub fn package() -> Self {
        let (name, version) = PACKAGE.with(std::cell::Cell::get);
        Self::new(name, version)
    }

    pub fn into_raw(self) -> raw::PluginInfo {
        raw::PluginInfo { name: self.name, version: self.version }
    }
}

/// `PluginInfo` with the calling crate's `CARGO_PKG_NAME` and `CARGO_PKG_VERSION`.
#[macro_export]
macro_rules! plugin_info {
    () => {
        $crate::PluginInfo::new(::core::env!("CARGO_PKG_NAME"), ::core::env!("CARGO_PKG_VERSION"))
    };
}

/// Exports a type implementing [`raw::Guest`] directly, bypassing the
/// friendly traits: the plugin sees whole batches of WIT records and answers
/// with WIT results. Only for plugins that need it (the test suite's hostile
/// plugin does).
#[macro_export]
macro_rules! export_guest {
    ($ty:ident) => {
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_world!($ty with_types_in $crate::bindings);

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn __assert_guest<T: $crate::raw::Guest>() {}
            let _ = __assert_guest::<$ty>;
        };
    };
}

#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;
    use std::thread::LocalKey;

    use crate::{Config, ConfigError, PluginInfo, raw};

    pub type Instance<M> = LocalKey<RefCell<Option<M>>>;

    /// `init` for every kind: decodes the configuration, builds the instance
    /// with `build`, keeps it, and reports the plugin's name and version.
    pub fn init<M: 'static>(
        instance: &'static Instance<M>,
        config: raw::Config,
        name: &'static str,
        version: &'static str,
        build: impl FnOnce(&Config) -> Result<M, Vec<ConfigError>>,
        info: impl FnOnce(&M) -> PluginInfo,
    ) -> Result<raw::PluginInfo, Vec<raw::ConfigError>> {
        crate::PACKAGE.with(|p| p.set((name, version)));
        // A failed re-init leaves no instance behind, never a stale one.
        instance.with(|cell| cell.replace(None));
        let config = Config::from_raw(&config).map_err(|e| vec![e.into_raw()])?;
        match build(&config) {
            Ok(plugin) => {
                let info = info(&plugin).into_raw();
                instance.with(|cell| *cell.borrow_mut() = Some(plugin));
                Ok(info)
            }
            Err(errors) if errors.is_empty() => {
                Err(vec![ConfigError::new("", "the plugin rejected its configuration without saying why").into_raw()])
            }
            Err(errors) => Err(errors.into_iter().map(ConfigError::into_raw).collect()),
        }
    }

    /// Runs `each` over a batch with the live instance, or answers every item
    /// with `uninitialised` when `init` has not succeeded.
    pub fn batch<M: 'static, I, O>(
        instance: &'static Instance<M>,
        items: &[I],
        uninitialised: impl Fn() -> O,
        mut each: impl FnMut(&mut M, &I) -> O,
    ) -> Vec<O> {
        instance.with(|cell| {
            let mut guard = cell.borrow_mut();
            match guard.as_mut() {
                Some(plugin) => items.iter().map(|item| each(plugin, item)).collect(),
                None => items.iter().map(|_| uninitialised()).collect(),
            }
        })
    }

    pub const NOT_INITIALISED: &str = "plugin not initialised: called before a successful init";
}

/// The closest of `candidates` to `word` (case-insensitive edit distance), if
/// close enough to be a plausible typo: for "did you mean" hints.
///
/// ```
/// assert_eq!(roster_plugin_sdk::suggest("coalese", ["coalesce", "concat"]), Some("coalesce"));
/// assert_eq!(roster_plugin_sdk::suggest("xyz", ["coalesce"]), None);
/// ```
pub fn suggest<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let word: Vec<char> = word.chars().flat_map(char::to_lowercase).collect();
    let limit = (word.len() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &[char], b: &str) -> usize {
    let b: Vec<char> = b.chars().flat_map(char::to_lowercase).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(all(test, feature = "mapper"))]
mod tests {
    use std::cell::RefCell;

    use super::*;

    struct Echo {
        suffix: String,
    }

    impl Mapper for Echo {
        fn init(config: &Config) -> Result<Self, Vec<ConfigError>> {
            let mut errors = config.unknown_keys(&["suffix"]);
            let suffix = config.str("suffix").unwrap_or_else(|e| {
                errors.push(e);
                None
            });
            if errors.is_empty() { Ok(Echo { suffix: suffix.unwrap_or("").to_string() }) } else { Err(errors) }
        }

        fn map(&mut self, entry: &Entry<'_>) -> MapResult {
            match entry.first_str("uid") {
                Some(uid) => Output::for_entry(entry).set("userName", format!("{uid}{}", self.suffix)).finish(),
                None => MapResult::skip("no uid"),
            }
        }
    }

    thread_local! {
        static INSTANCE: RefCell<Option<Echo>> = const { RefCell::new(None) };
    }

    fn echo_init(
        instance: &'static __private::Instance<Echo>,
        config: raw::Config,
        name: &'static str,
        version: &'static str,
    ) -> Result<raw::PluginInfo, Vec<raw::ConfigError>> {
        __private::init(instance, config, name, version, Echo::init, Echo::info)
    }

    fn raw_entry(attrs: Vec<u8>) -> raw::Entry {
        raw::Entry { anchor: "a".into(), dn: None, kind: raw::EntryKind::User, attributes: attrs }
    }

    fn config(nodes: Vec<raw::ConfigValue>) -> raw::Config {
        raw::Config { nodes }
    }

    #[test]
    fn glue_initialises_maps_and_refuses_to_map_before_init() {
        let entries = || {
            vec![
                raw_entry(roster_wire::pack([("uid", ["jdoe"].as_slice())])),
                raw_entry(roster_wire::pack([("cn", ["x"].as_slice())])),
                raw_entry(vec![0x05, b'u']), // truncated
            ]
        };
        let before = __mapper::map(&INSTANCE, entries());
        assert_eq!(before.len(), 3);
        assert!(before.iter().all(|r| matches!(r, raw::MapResult::Error(m) if m.contains("before a successful init"))));

        let bad = echo_init(
            &INSTANCE,
            config(vec![raw::ConfigValue::Table(vec![("suffx".into(), 1)]), raw::ConfigValue::Text("!".into())]),
            "echo",
            "1.2.3",
        )
        .unwrap_err();
        assert_eq!(bad[0].key, "suffx");
        assert_eq!(bad[0].message, "unknown key 'suffx' (did you mean 'suffix'?)");

        let broken_tree = echo_init(&INSTANCE, config(vec![raw::ConfigValue::Array(vec![7])]), "echo", "1.2.3");
        assert!(broken_tree.unwrap_err()[0].message.contains("node 7 does not exist"));

        let info = echo_init(
            &INSTANCE,
            config(vec![raw::ConfigValue::Table(vec![("suffix".into(), 1)]), raw::ConfigValue::Text("!".into())]),
            "echo",
            "1.2.3",
        )
        .unwrap();
        assert_eq!((info.name.as_str(), info.version.as_str()), ("echo", "1.2.3"));

        let results = __mapper::map(&INSTANCE, entries());
        assert_eq!(results.len(), 3);
        let raw::MapResult::Mapped(m) = &results[0] else { panic!("{:?}", results[0]) };
        assert_eq!(
            roster_wire::Attrs::parse(&m.attributes).unwrap().get("userName").unwrap().first(),
            Some(&b"jdoe!"[..])
        );
        assert!(matches!(&results[1], raw::MapResult::Skip(r) if r == "no uid"));
        assert!(matches!(&results[2], raw::MapResult::Error(e) if e.contains("malformed packed attributes")));

        // A failed re-init drops the old instance.
        assert!(echo_init(&INSTANCE, config(vec![raw::ConfigValue::Integer(1)]), "echo", "1").is_err());
        assert!(matches!(&__mapper::map(&INSTANCE, entries())[0], raw::MapResult::Error(_)));
    }

    #[test]
    fn output_reuses_its_buffer_and_packs_every_shape() {
        let mut out = Output::group();
        out.set("displayName", "Staff").set_all("emails", Vec::<String>::new()).set_all("x", ["1", "2", "3"]);
        assert_eq!(out.len(), 2);
        let MapResult::Mapped(first) = out.finish() else { unreachable!() };
        assert!(out.is_empty(), "finish leaves the builder empty");
        assert_eq!(first.kind, EntryKind::Group);
        let attrs = first.attrs().unwrap();
        assert_eq!(attrs.get("x").unwrap().values().collect::<Vec<_>>(), [b"1", b"2", b"3"]);
        drop(out);
        let MapResult::Mapped(second) = Output::user().set("userName", "u").finish() else { unreachable!() };
        assert_eq!(second.attrs().unwrap().len(), 1, "nothing left over from the previous output");
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("User", ["user", "group"]), Some("user"));
        assert_eq!(suggest("grop", ["user", "group"]), Some("group"));
        assert_eq!(suggest("zzzzzz", ["user", "group"]), None);
    }
}
