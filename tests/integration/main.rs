//! Roster's integration tests: the real `roster` binary against real servers
//! (throwaway slapd instances on loopback) and real WebAssembly plugins built
//! from `plugins/`. One binary, one module per topic, shared helpers in `support`.

mod support;

mod ad;
mod admin_api;
mod api;
mod audit;
mod authoring;
mod cluster;
mod config_check;
mod conflicts;
mod connectors;
mod delivery;
mod example;
mod graph;
mod ldap;
mod memo;
mod plugin_kinds;
mod plugins;
mod registry;
mod scim_push;
mod secrets;
mod serve;
