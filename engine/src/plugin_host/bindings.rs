//! Host-side bindings generated from `wit/` (package `roster:plugin@0.2.0`),
//! one module per world, sharing the `types` and `host` interfaces of the
//! first, and the frozen `roster:plugin@0.1.0` mapper world from
//! `wit/frozen/0.1.0`.
//!
//! A frozen version keeps its own module here. Its types are mapped onto the
//! latest Rust types (`with`): the component model checks types by structure,
//! and a released type never changes, so one set of Rust types serves every
//! version. Its `host` interface is linked separately, under its own name.

pub mod mapper {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "mapper",
    });
}

pub mod custom_attributes {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "custom-attributes",
        with: {
            "roster:plugin/types@0.2.0": super::mapper::roster::plugin::types,
            "roster:plugin/host@0.2.0": super::mapper::roster::plugin::host,
        },
    });
}

pub mod role_assigner {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "role-assigner",
        with: {
            "roster:plugin/types@0.2.0": super::mapper::roster::plugin::types,
            "roster:plugin/host@0.2.0": super::mapper::roster::plugin::host,
        },
    });
}

pub mod conflict_resolver {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "conflict-resolver",
        with: {
            "roster:plugin/types@0.2.0": super::mapper::roster::plugin::types,
            "roster:plugin/host@0.2.0": super::mapper::roster::plugin::host,
        },
    });
}

pub mod connector {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "connector",
        with: {
            "roster:plugin/types@0.2.0": super::mapper::roster::plugin::types,
            "roster:plugin/host@0.2.0": super::mapper::roster::plugin::host,
        },
    });
}

/// `roster:plugin@0.1.0`, frozen: plugins built against it keep loading.
pub mod v0_1_0 {
    wasmtime::component::bindgen!({
        path: "../wit/frozen/0.1.0",
        world: "mapper",
        with: {
            "roster:plugin/types@0.1.0": super::mapper::roster::plugin::types,
        },
    });
}

pub use mapper::roster::plugin::host::LogLevel;
pub use mapper::roster::plugin::types as wit;
