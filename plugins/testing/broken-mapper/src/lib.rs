//! A deliberately hostile plugin, for testing how the host contains failures.
//!
//! Configuration:
//!
//! * `fail`: how to misbehave, one of `"trap"` (a WebAssembly `unreachable`),
//!   `"loop"` (spin forever), `"memory-bomb"` (allocate and touch 1 MiB chunks
//!   forever), `"error"` (an error result), `"panic"` (a Rust panic, which traps),
//!   `"wrong-count"` (leave the entry's result out, so the batch gets fewer
//!   results than entries). Absent: behave.
//!
//!   Probes of the sandbox, which report what they managed as the entry's map
//!   error so a test can assert on it: `"read-file"` (read `/etc/passwd`, list
//!   `/` and `.`), `"read-env"` (count the environment, read `HOME`, `PATH`,
//!   `ROSTER_TEST_SECRET`, count the arguments), `"open-socket"` (TCP connect to
//!   `127.0.0.1:<port>`, resolve `localhost`, bind a UDP socket), `"clock"` (wall
//!   clock seconds since the UNIX epoch and a monotonic delta across a 20 ms
//!   sleep), `"random"` (std's only stable door to WASI randomness: the keys of a
//!   fresh `RandomState`, compared with a zero-keyed `DefaultHasher`),
//!   `"sleep"` (sleep `ms` milliseconds inside one call), `"exit"`
//!   (`std::process::exit(3)`, which must end the instance, not the host;
//!   WASI p2 reports it as exit status 1).
//!
//!   Abuse of the host that maps the entry (normally) afterwards:
//!   `"huge-output"` (a `displayName` of `bytes` bytes), `"log-flood"` (100,000
//!   calls to the host log).
//! * `port`: for `open-socket`, default 22. `bytes`: for `huge-output`, default
//!   8 MiB. `ms`: for `sleep`, default 10,000.
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
    ReadFile,
    ReadEnv,
    OpenSocket,
    Clock,
    Random,
    Sleep,
    Exit,
    HugeOutput,
    LogFlood,
}

const FAILS: &[(&str, Fail)] = &[
    ("trap", Fail::Trap),
    ("loop", Fail::Loop),
    ("memory-bomb", Fail::MemoryBomb),
    ("error", Fail::Error),
    ("panic", Fail::Panic),
    ("wrong-count", Fail::WrongCount),
    ("read-file", Fail::ReadFile),
    ("read-env", Fail::ReadEnv),
    ("open-socket", Fail::OpenSocket),
    ("clock", Fail::Clock),
    ("random", Fail::Random),
    ("sleep", Fail::Sleep),
    ("exit", Fail::Exit),
    ("huge-output", Fail::HugeOutput),
    ("log-flood", Fail::LogFlood),
];

/// Log calls made by `log-flood`.
const LOG_FLOOD_CALLS: u32 = 100_000;

#[derive(Debug)]
struct Settings {
    fail: Option<Fail>,
    when_uid: Option<String>,
    port: u16,
    bytes: usize,
    ms: u64,
}

thread_local! {
    static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) };
}

fn settings(config: &Config) -> Result<Settings, Vec<ConfigError>> {
    let mut errors = config.unknown_keys(&["fail", "when_uid", "port", "bytes", "ms"]);
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
    let mut int = |key: &str, default: i64, max: i64| match config.integer(key) {
        Ok(None) => default,
        Ok(Some(v)) if (0..=max).contains(&v) => v,
        Ok(Some(v)) => {
            errors.push(ConfigError::new(key, format!("{v} is out of range 0..={max}")));
            default
        }
        Err(e) => {
            errors.push(e);
            default
        }
    };
    let port = int("port", 22, i64::from(u16::MAX)) as u16;
    let bytes = int("bytes", 8 << 20, 1 << 30) as usize;
    let ms = int("ms", 10_000, 3_600_000) as u64;
    if errors.is_empty() {
        Ok(Settings { fail, when_uid: when_uid.map(str::to_string), port, bytes, ms })
    } else {
        Err(errors)
    }
}

/// Whatever a probe got, in a few words; content is shown so a leak is visible.
fn shown<T: std::fmt::Debug, E: std::fmt::Display>(r: Result<T, E>) -> String {
    match r {
        Ok(v) => {
            let mut s = format!("OK {v:?}");
            s.truncate(s.floor_char_boundary(200));
            s
        }
        Err(e) => format!("error: {e}"),
    }
}

fn read_file() -> String {
    let passwd = shown(std::fs::read_to_string("/etc/passwd"));
    let list = |p: &str| {
        shown(std::fs::read_dir(p).map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect::<Vec<_>>()))
    };
    format!("read-file: /etc/passwd: {passwd}; read_dir /: {}; read_dir .: {}", list("/"), list("."))
}

fn read_env() -> String {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    format!(
        "read-env: {} vars {vars:?}; HOME: {}; PATH: {}; ROSTER_TEST_SECRET: {}; {} args; cwd: {}",
        vars.len(),
        shown(std::env::var("HOME")),
        shown(std::env::var("PATH")),
        shown(std::env::var("ROSTER_TEST_SECRET")),
        std::env::args().count(),
        shown(std::env::current_dir()),
    )
}

fn open_socket(port: u16) -> String {
    use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
    let tcp = shown(TcpStream::connect(("127.0.0.1", port)).map(|s| s.peer_addr().ok()));
    let lookup = shown(("localhost", port).to_socket_addrs().map(Iterator::collect::<Vec<_>>));
    let udp = shown(UdpSocket::bind("127.0.0.1:0").map(|s| s.local_addr().ok()));
    format!("open-socket: tcp connect 127.0.0.1:{port}: {tcp}; lookup localhost: {lookup}; udp bind: {udp}")
}

fn clock() -> String {
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
    let wall = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs().to_string(),
        Err(e) => format!("before the epoch by {} s", e.duration().as_secs()),
    };
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(20));
    let delta = start.elapsed();
    format!("clock: wall {wall} s since the epoch; monotonic delta {} ns", delta.as_nanos())
}

fn random() -> String {
    use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher};
    // `RandomState::new()` takes its keys from WASI's insecure seed; a
    // `DefaultHasher` has zero keys. Equal hashes mean the seed was zero.
    let seeded = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
    let mut zero = DefaultHasher::new();
    0x5eed_u64.hash(&mut zero);
    format!("random: seeded {seeded:016x} zero-keyed {:016x}", zero.finish())
}

fn sleep(ms: u64) -> String {
    let start = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(ms));
    format!("sleep: slept {ms} ms ({} ms by the monotonic clock)", start.elapsed().as_millis())
}

fn huge_output(entry: &Entry<'_>, bytes: usize) -> MapResult {
    let mut out = Output::for_entry(entry);
    if let Some(uid) = entry.first_str("uid") {
        out.set("userName", uid);
    }
    out.set("displayName", "x".repeat(bytes)).finish()
}

fn log_flood(entry: &Entry<'_>) -> MapResult {
    for i in 0..LOG_FLOOD_CALLS {
        log::info!("flood {i}");
    }
    behave(entry)
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
                            Some(Fail::ReadFile) => MapResult::error(read_file()),
                            Some(Fail::ReadEnv) => MapResult::error(read_env()),
                            Some(Fail::OpenSocket) => MapResult::error(open_socket(s.port)),
                            Some(Fail::Clock) => MapResult::error(clock()),
                            Some(Fail::Random) => MapResult::error(random()),
                            Some(Fail::Sleep) => MapResult::error(sleep(s.ms)),
                            Some(Fail::Exit) => std::process::exit(3),
                            Some(Fail::HugeOutput) => huge_output(&entry, s.bytes),
                            Some(Fail::LogFlood) => log_flood(&entry),
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
