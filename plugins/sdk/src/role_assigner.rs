//! The `role-assigner` kind: a user's groups, direct and nested → roles.
//!
//! ```ignore
//! use roster_plugin_sdk::prelude::*;
//!
//! struct AdminsAreAdmins;
//!
//! impl RoleAssigner for AdminsAreAdmins {
//!     fn init(_config: &Config) -> Result<Self, Vec<ConfigError>> {
//!         Ok(AdminsAreAdmins)
//!     }
//!
//!     fn assign(&mut self, user: &UserGroups<'_>) -> Result<Vec<String>, String> {
//!         let admin = user.groups.iter().any(|m| m.group.name.eq_ignore_ascii_case("admins"));
//!         Ok(if admin { vec!["admin".into()] } else { vec![] })
//!     }
//! }
//!
//! roster_plugin_sdk::export_role_assigner!(AdminsAreAdmins);
//! ```

use roster_wire::Attrs;

use crate::{Config, ConfigError, PluginInfo, raw};

/// A group some user belongs to: anchor, DN and mapped `displayName` (`name`).
pub use crate::raw::GroupRef;

/// One of a user's groups.
#[derive(Debug, Clone, Copy)]
pub struct Membership<'a> {
    pub group: &'a GroupRef,
    /// The group's position in the batch's group list, the slice
    /// [`RoleAssigner::prepare`] was given: a key for what the plugin worked
    /// out per group.
    pub index: usize,
    /// 1 for a direct membership, 2 for a group inside that group, …
    pub depth: u32,
}

impl Membership<'_> {
    pub fn is_direct(&self) -> bool {
        self.depth == 1
    }
}

/// A user and every group they are in, through any depth of nesting.
pub struct UserGroups<'a> {
    pub anchor: &'a str,
    /// The user's mapped attributes (SCIM paths).
    pub attributes: Attrs<'a>,
    pub groups: Vec<Membership<'a>>,
}

/// A role-assignment plugin.
pub trait RoleAssigner: Sized + 'static {
    fn init(config: &Config) -> Result<Self, Vec<ConfigError>>;

    fn info(&self) -> PluginInfo {
        PluginInfo::package()
    }

    /// Called once per batch, before [`assign`](Self::assign) for each of its
    /// users, with every group they refer to. The same group is in most users'
    /// lists, so a plugin whose decision per group does not depend on the user
    /// can reset a per-group cache here and fill it, keyed by
    /// [`Membership::index`], as users come in. Nothing is kept from one batch
    /// to the next: a group's name may change between them.
    fn prepare(&mut self, groups: &[GroupRef]) {
        let _ = groups;
    }

    /// The user's roles, primary first; `Err` quarantines the user with the message.
    fn assign(&mut self, user: &UserGroups<'_>) -> Result<Vec<String>, String>;
}

/// Exports a [`RoleAssigner`] as the component's `init` and `assign`.
#[macro_export]
macro_rules! export_role_assigner {
    ($ty:ty $(,)?) => {
        $crate::export_role_assigner!(
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
                        <$ty as $crate::role_assigner::RoleAssigner>::init,
                        <$ty as $crate::role_assigner::RoleAssigner>::info,
                    )
                }

                fn assign(
                    groups: ::std::vec::Vec<$crate::raw::GroupRef>,
                    users: ::std::vec::Vec<$crate::raw::UserGroups>,
                ) -> ::std::vec::Vec<$crate::raw::RoleResult> {
                    $crate::role_assigner::__private::assign::<$ty>(&__ROSTER_INSTANCE, &groups, users)
                }
            }

    $crate::bindings::__export_world!(__RosterGuest with_types_in $crate::bindings);
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = <$ty as $crate::role_assigner::RoleAssigner>::assign;
        };
    };
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    pub fn assign<R: RoleAssigner>(
        instance: &'static crate::__private::Instance<R>,
        groups: &[raw::GroupRef],
        users: Vec<raw::UserGroups>,
    ) -> Vec<raw::RoleResult> {
        let mut prepared = false;
        crate::__private::batch(
            instance,
            &users,
            || raw::RoleResult::Error(crate::__private::NOT_INITIALISED.into()),
            |plugin, user| {
                if !prepared {
                    plugin.prepare(groups);
                    prepared = true;
                }
                assign_one(plugin, groups, user)
            },
        )
    }

    pub fn assign_one<R: RoleAssigner>(
        plugin: &mut R,
        groups: &[raw::GroupRef],
        user: &raw::UserGroups,
    ) -> raw::RoleResult {
        let attributes = match Attrs::parse(&user.attributes) {
            Ok(a) => a,
            Err(e) => return raw::RoleResult::Error(format!("user attributes: {e}")),
        };
        let mut memberships = Vec::with_capacity(user.groups.len());
        for m in &user.groups {
            match groups.get(m.group as usize) {
                Some(group) => memberships.push(Membership { group, depth: m.depth, index: m.group as usize }),
                None => {
                    return raw::RoleResult::Error(format!(
                        "membership refers to group #{} of {}",
                        m.group,
                        groups.len()
                    ));
                }
            }
        }
        match plugin.assign(&UserGroups { anchor: &user.anchor, attributes, groups: memberships }) {
            Ok(roles) => raw::RoleResult::Roles(roles),
            Err(message) => raw::RoleResult::Error(message),
        }
    }
}
