//! A deliberately hostile plugin, for testing how the host contains failures.
//!
//! Configuration:
//!
//! * `fail`: how to misbehave, one of `"trap"` (a WebAssembly `unreachable`),
//!   `"loop"` (spin forever), `"memory-bomb"` (allocate and touch 1 MiB chunks
//!   forever), `"error"` (an error result), `"panic"` (a Rust panic, which traps),
//!   `"wrong-count"` (leave the entry's result out, so the batch gets fewer
//!   results than entries). Absent: behave.
//! * `when_uid`: only entries whose `uid` equals this misbehave; the others
//!   are mapped normally. Absent: every entry misbehaves.
//!
//! Normal mapping: users get `userName = uid`, `displayName = cn`; groups get
//! `displayName = cn`.
//!
//! It implements the raw `Guest` trait (see `roster_plugin_sdk::raw`) because
//! a `Mapper` cannot return the wrong number of results.

use std::cell::RefCell;
use std::hint::black_box;

use roster_plugin_sdk::prelude::*;
use roster_plugin_sdk::raw;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    Trap,
    Loop,
    MemoryBomb,
    Error,
    Panic,
    WrongCount,
}

const FAILS: &[(&str, Fail)] = &[
    ("trap", Fail::Trap),
    ("loop", Fail::Loop),
    ("memory-bomb", Fail::MemoryBomb),
    ("error", Fail::Error),
    ("panic", Fail::Panic),
    ("wrong-count", Fail::WrongCount),
];

#[derive(Debug)]
struct Settings {
    fail: Option<Fail>,
    when_uid: Option<String>,
}

thread_local! {
    static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) };
}

fn settings(config: &Config) -> Result<Settings, Vec<ConfigError>> {
    let mut errors = config.unknown_keys(&["fail", "when_uid"]);
    let fail = match config.str("fail") {
        Ok(None) => None,
        Ok(Some(name)) => match FAILS.iter().find(|(n, _)| *n == name) {
            Some(&(_, fail)) => Some(fail),
            None => {
                let names: Vec<_> = FAILS.iter().map(|(n, _)| *n).collect();
                errors.push(ConfigError::new(
                    "fail",
                    format!("unknown failure '{name}'; expected one of: {}", names.join(", ")),
                ));
                None
            }
        },
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let when_uid = config.str("when_uid").unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    if errors.is_empty() { Ok(Settings { fail, when_uid: when_uid.map(str::to_string) }) } else { Err(errors) }
}

fn behave(entry: &Entry<'_>) -> MapResult {
    let mut out = Output::for_entry(entry);
    if entry.is_user() {
        let Some(uid) = entry.first_str("uid") else {
            return MapResult::error("no uid");
        };
        out.set("userName", uid);
    }
    match entry.first_str("cn") {
        Some(cn) => out.set("displayName", cn).finish(),
        None if entry.is_group() => MapResult::error("no cn"),
        None => out.finish(),
    }
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

fn memory_bomb() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Non-zero fill: every page is written, not just reserved.
        hoard.push(vec![0xa5; 1 << 20]);
        black_box(&mut hoard);
    }
}

struct Broken;

impl raw::Guest for Broken {
    fn init(config: raw::Config) -> Result<raw::PluginInfo, Vec<raw::ConfigError>> {
        let to_raw = |errors: Vec<ConfigError>| -> Vec<raw::ConfigError> {
            errors.into_iter().map(ConfigError::into_raw).collect()
        };
        SETTINGS.set(None);
        let config = Config::from_raw(&config).map_err(|e| to_raw(vec![e]))?;
        let settings = settings(&config).map_err(to_raw)?;
        log::info!("armed: {settings:?}");
        SETTINGS.set(Some(settings));
        Ok(plugin_info!().into_raw())
    }

    fn map(entries: Vec<raw::Entry>) -> Vec<raw::MapResult> {
        SETTINGS.with_borrow(|settings| {
            let mut results = Vec::with_capacity(entries.len());
            for raw_entry in &entries {
                let result = match (settings, Entry::from_raw(raw_entry)) {
                    (None, _) => MapResult::error("map before init"),
                    (_, Err(e)) => MapResult::error(e.to_string()),
                    (Some(s), Ok(entry)) => {
                        let targeted = s.when_uid.as_deref().is_none_or(|u| entry.first_str("uid") == Some(u));
                        match s.fail.filter(|_| targeted) {
                            None => behave(&entry),
                            Some(Fail::Trap) => trap(),
                            Some(Fail::Loop) => spin(),
                            Some(Fail::MemoryBomb) => memory_bomb(),
                            Some(Fail::Panic) => panic!("broken-mapper: deliberate panic on entry {}", entry.anchor()),
                            Some(Fail::Error) => {
                                MapResult::error(format!("broken-mapper: deliberate error on entry {}", entry.anchor()))
                            }
                            Some(Fail::WrongCount) => continue,
                        }
                    }
                };
                results.push(result.into_raw());
            }
            results
        })
    }
}

roster_plugin_sdk::export_guest!(Broken);
