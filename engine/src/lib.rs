//! Roster: keeps an application's users and groups in step with its customers'
//! directories. See ARCHITECTURE.md for the bird's-eye view.
//!
//! The modules follow the data, one way:
//! [`source`] → [`scope`] → [`mapping`] (through [`plugin_host`]) → [`diff`] →
//! [`plan`] → [`store`] (apply), orchestrated by [`sync`] and driven by [`cli`].

pub mod admin;
pub mod api;
pub mod authoring;
pub mod cli;
pub mod config;
pub mod conflict;
pub mod custom_attrs;
pub mod delivery;
pub mod diff;
pub mod dn;
pub mod explain;
pub mod mapping;
pub mod model;
pub mod plan;
pub mod plugin_host;
pub mod registry;
pub mod roles;
pub mod scaffold;
pub mod scim;
pub mod scope;
pub mod serve;
pub mod source;
pub mod store;
pub mod sync;
pub mod util;
pub mod vectors;
