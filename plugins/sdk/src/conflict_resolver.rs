//! The `conflict-resolver` kind: decides what happens when the plan hits a
//! conflict (a duplicate unique value, the same person in two sources, an
//! attribute changed both in the application and in the directory).
//!
//! ```ignore
//! use roster_plugin_sdk::prelude::*;
//!
//! /// Everything goes to a human.
//! struct Careful;
//!
//! impl ConflictResolver for Careful {
//!     fn init(_config: &Config) -> Result<Self, Vec<ConfigError>> {
//!         Ok(Careful)
//!     }
//!
//!     fn resolve(&mut self, conflict: &Conflict<'_>) -> Decision {
//!         Decision::Quarantine(format!("{} '{}' needs a human", conflict.key, conflict.value))
//!     }
//! }
//!
//! roster_plugin_sdk::export_conflict_resolver!(Careful);
//! ```

use roster_wire::{Attrs, Packer};

use crate::{Config, ConfigError, PluginInfo, raw};

pub use crate::raw::ConflictKind;

/// One side of a conflict.
pub struct Claimant<'a> {
    /// The source's name, or `app` for the application's side of an app edit.
    pub source: &'a str,
    pub anchor: &'a str,
    pub dn: Option<&'a str>,
    /// What this side would store (SCIM paths → values).
    pub attributes: Attrs<'a>,
    /// When the store first saw this object (RFC 3339); `None` if it is new.
    pub stored_since: Option<&'a str>,
    /// An admin settled the conflict for this claimant (`roster quarantine resolve --keep`).
    pub chosen_by_admin: bool,
}

impl Claimant<'_> {
    /// The first value of an attribute, as text.
    pub fn first_str(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).and_then(|a| a.first()).and_then(|v| std::str::from_utf8(v).ok())
    }
}

pub struct Conflict<'a> {
    pub kind: ConflictKind,
    /// The attribute in conflict: the unique key, the correlation key, or the
    /// attribute both sides changed.
    pub key: &'a str,
    pub value: &'a str,
    pub claimants: Vec<Claimant<'a>>,
}

/// What to do about a conflict. The host checks it fits the conflict; one
/// that does not (an index out of range, a merge for a duplicate) holds the
/// conflict for human review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// This claimant (index) wins.
    Keep(usize),
    /// Every claimant is held for human review, with this reason.
    Quarantine(String),
    /// `duplicate-key`: a new value per claimant, in order.
    Rename(Vec<String>),
    /// `same-person`: one user, with the primary claimant's identity.
    Merge { primary: usize, attributes: Vec<(String, Vec<String>)> },
}

impl Decision {
    pub fn into_raw(self) -> raw::Decision {
        match self {
            Decision::Keep(i) => raw::Decision::Keep(u32::try_from(i).unwrap_or(u32::MAX)),
            Decision::Quarantine(reason) => raw::Decision::Quarantine(reason),
            Decision::Rename(values) => raw::Decision::Rename(values),
            Decision::Merge { primary, attributes } => {
                let mut packer = Packer::with_capacity(256);
                for (name, values) in &attributes {
                    packer.attr(name, values);
                }
                raw::Decision::Merge(raw::Merge {
                    primary: u32::try_from(primary).unwrap_or(u32::MAX),
                    attributes: packer.as_bytes().to_vec(),
                })
            }
        }
    }
}

/// A conflict-resolution plugin.
pub trait ConflictResolver: Sized + 'static {
    fn init(config: &Config) -> Result<Self, Vec<ConfigError>>;

    fn info(&self) -> PluginInfo {
        PluginInfo::package()
    }

    fn resolve(&mut self, conflict: &Conflict<'_>) -> Decision;
}

/// Exports a [`ConflictResolver`] as the component's `init` and `resolve`.
#[macro_export]
macro_rules! export_conflict_resolver {
    ($ty:ty $(,)?) => {
        $crate::export_conflict_resolver!(
            $ty,
            name = ::core::env!("CARGO_PKG_NAME"),
            version = ::core::env!("CARGO_PKG_VERSION")
        );
    };
    ($ty:ty, name = $name:expr, version = $version:expr $(,)?) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static __ROSTER_INSTANCE: ::core::cell::RefCell<::core::option::Option<$ty>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct __RosterGuest;

            impl $crate::raw::Guest for __RosterGuest {
                fn init(
                    config: $crate::raw::Config,
                ) -> ::core::result::Result<$crate::raw::PluginInfo, ::std::vec::Vec<$crate::raw::ConfigError>>
                {
                    $crate::__private::init::<$ty>(
                        &__ROSTER_INSTANCE,
                        config,
                        $name,
                        $version,
                        <$ty as $crate::conflict_resolver::ConflictResolver>::init,
                        <$ty as $crate::conflict_resolver::ConflictResolver>::info,
                    )
                }

                fn resolve(
                    conflicts: ::std::vec::Vec<$crate::raw::Conflict>,
                ) -> ::std::vec::Vec<$crate::raw::Decision> {
                    $crate::conflict_resolver::__private::resolve::<$ty>(&__ROSTER_INSTANCE, conflicts)
                }
            }

    $crate::bindings::__export_world!(__RosterGuest with_types_in $crate::bindings);
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = <$ty as $crate::conflict_resolver::ConflictResolver>::resolve;
        };
    };
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    pub fn resolve<R: ConflictResolver>(
        instance: &'static crate::__private::Instance<R>,
        conflicts: Vec<raw::Conflict>,
    ) -> Vec<raw::Decision> {
        crate::__private::batch(
            instance,
            &conflicts,
            || raw::Decision::Quarantine(crate::__private::NOT_INITIALISED.into()),
            |plugin, c| resolve_one(plugin, c).into_raw(),
        )
    }

    pub fn resolve_one<R: ConflictResolver>(plugin: &mut R, c: &raw::Conflict) -> Decision {
        let mut claimants = Vec::with_capacity(c.claimants.len());
        for raw in &c.claimants {
            let attributes = match Attrs::parse(&raw.attributes) {
                Ok(a) => a,
                Err(e) => return Decision::Quarantine(format!("claimant {}: attributes: {e}", raw.anchor)),
            };
            claimants.push(Claimant {
                source: &raw.source,
                anchor: &raw.anchor,
                dn: raw.dn.as_deref(),
                attributes,
                stored_since: raw.stored_since.as_deref(),
                chosen_by_admin: raw.chosen_by_admin,
            });
        }
        plugin.resolve(&Conflict { kind: c.kind, key: &c.key, value: &c.value, claimants })
    }
}
