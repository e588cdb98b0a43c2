//! Logging to the tenant's log through the host's `log` import.
//!
//! The host tags every line with the plugin's name and version and caps its
//! volume. Log per batch or per problem, not per entry.
//!
//! ```no_run
//! use roster_plugin_sdk::prelude::*;
//! log::info!("mapping with {} rules", 3);
//! log::warn!("attribute {:?} is binary, ignored", "jpegPhoto");
//! ```
//!
//! Outside WebAssembly (native unit tests) lines go to standard error instead.

use crate::bindings::roster::plugin::host;

/// How important a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn into_raw(self) -> host::LogLevel {
        match self {
            Level::Trace => host::LogLevel::Trace,
            Level::Debug => host::LogLevel::Debug,
            Level::Info => host::LogLevel::Info,
            Level::Warn => host::LogLevel::Warn,
            Level::Error => host::LogLevel::Error,
        }
    }
}

/// Writes one line to the tenant's log.
pub fn log(level: Level, message: &str) {
    if cfg!(target_arch = "wasm32") {
        host::log(level.into_raw(), message);
    } else {
        eprintln!("[{level:?}] {message}");
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __roster_log {
    ($level:expr, $($arg:tt)+) => {
        $crate::log::log($level, &::std::format!($($arg)+))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __roster_log_trace {
    ($($arg:tt)+) => { $crate::__roster_log!($crate::log::Level::Trace, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __roster_log_debug {
    ($($arg:tt)+) => { $crate::__roster_log!($crate::log::Level::Debug, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __roster_log_info {
    ($($arg:tt)+) => { $crate::__roster_log!($crate::log::Level::Info, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __roster_log_warn {
    ($($arg:tt)+) => { $crate::__roster_log!($crate::log::Level::Warn, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __roster_log_error {
    ($($arg:tt)+) => { $crate::__roster_log!($crate::log::Level::Error, $($arg)+) };
}

/// `log!(Level::Info, "format {}", args)`: logs at a level chosen at run time.
#[doc(inline)]
pub use crate::__roster_log as log;
/// `debug!("format {}", args)`
#[doc(inline)]
pub use crate::__roster_log_debug as debug;
/// `error!("format {}", args)`
#[doc(inline)]
pub use crate::__roster_log_error as error;
/// `info!("format {}", args)`
#[doc(inline)]
pub use crate::__roster_log_info as info;
/// `trace!("format {}", args)`
#[doc(inline)]
pub use crate::__roster_log_trace as trace;
/// `warn!("format {}", args)`
#[doc(inline)]
pub use crate::__roster_log_warn as warn;
