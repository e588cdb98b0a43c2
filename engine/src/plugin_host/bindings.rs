//! Host-side bindings generated from `wit/` (package `roster:plugin@0.1.0`).
//!
//! When a new WIT version is released, the frozen one keeps its own module here
//! and converts to the latest types, so plugins built against it keep loading.

pub mod v0_1_0 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "mapper",
    });
}

pub use v0_1_0::Mapper;
pub use v0_1_0::MapperPre;
pub use v0_1_0::roster::plugin::host::LogLevel;
pub use v0_1_0::roster::plugin::types as wit;
