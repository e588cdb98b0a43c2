//! Roster: keeps an application's users and groups in step with its customers'
//! directories. See ARCHITECTURE.md for the bird's-eye view.

pub mod config;
pub mod source;
