//! The `custom-attributes` kind: typed custom attributes for mapped users.
//!
//! ```ignore
//! use roster_plugin_sdk::prelude::*;
//!
//! struct Badge;
//!
//! impl CustomAttributes for Badge {
//!     fn init(_config: &Config, _schema: &[AttributeDecl]) -> Result<Self, Vec<ConfigError>> {
//!         Ok(Badge)
//!     }
//!
//!     fn compute(&mut self, user: &MappedUser<'_>) -> Result<Vec<(String, Vec<String>)>, String> {
//!         let id = user.entry.first_str("employeeNumber").ok_or("no employeeNumber")?;
//!         Ok(vec![("badge".into(), vec![format!("B-{id}")])])
//!     }
//! }
//!
//! roster_plugin_sdk::export_custom_attributes!(Badge);
//! ```

use roster_wire::{Attrs, Packer};

use crate::{Config, ConfigError, Entry, PluginInfo, raw};

pub use crate::raw::AttributeType;

/// One custom attribute the tenant declared (`[tenant.custom_attributes.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeDecl {
    pub name: String,
    pub ty: AttributeType,
    pub required: bool,
    /// True for `list`, or when declared `multi_valued = true`.
    pub multi_valued: bool,
}

impl AttributeDecl {
    pub fn from_raw(d: &raw::AttributeDecl) -> Self {
        Self {
            name: d.name.clone(),
            ty: d.type_,
            required: d.required,
            multi_valued: d.multi_valued || d.type_ == AttributeType::List,
        }
    }
}

/// A mapped user: the source entry and what the mapper made of it.
pub struct MappedUser<'a> {
    pub entry: Entry<'a>,
    /// The mapper's output (SCIM paths → values), including any `custom.NAME`
    /// values the mapper set itself.
    pub mapped: Attrs<'a>,
}

/// A custom-attributes plugin. The host checks every value returned against
/// the declarations, so a plugin need not repeat that; returning canonical
/// forms (decimal integers, `true`/`false`, RFC 3339 UTC) is its job.
pub trait CustomAttributes: Sized + 'static {
    /// Validates the configuration against the declared attributes.
    fn init(config: &Config, schema: &[AttributeDecl]) -> Result<Self, Vec<ConfigError>>;

    fn info(&self) -> PluginInfo {
        PluginInfo::package()
    }

    /// Declared attribute name → values for one user; `Err` quarantines the
    /// user with the message (name the attribute).
    fn compute(&mut self, user: &MappedUser<'_>) -> Result<Vec<(String, Vec<String>)>, String>;
}

/// Exports a [`CustomAttributes`] implementation as the component's `init` and `compute`.
#[macro_export]
macro_rules! export_custom_attributes {
    ($ty:ty $(,)?) => {
        $crate::export_custom_attributes!(
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
                    schema: ::std::vec::Vec<$crate::raw::AttributeDecl>,
                ) -> ::core::result::Result<$crate::raw::PluginInfo, ::std::vec::Vec<$crate::raw::ConfigError>>
                {
                    $crate::custom_attributes::__private::init::<$ty>(
                        &__ROSTER_INSTANCE,
                        config,
                        schema,
                        $name,
                        $version,
                    )
                }

                fn compute(
                    users: ::std::vec::Vec<$crate::raw::MappedUser>,
                ) -> ::std::vec::Vec<$crate::raw::CustomResult> {
                    $crate::custom_attributes::__private::compute::<$ty>(&__ROSTER_INSTANCE, users)
                }
            }

    $crate::bindings::__export_world!(__RosterGuest with_types_in $crate::bindings);
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = <$ty as $crate::custom_attributes::CustomAttributes>::compute;
        };
    };
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    pub fn init<C: CustomAttributes>(
        instance: &'static crate::__private::Instance<C>,
        config: raw::Config,
        schema: Vec<raw::AttributeDecl>,
        name: &'static str,
        version: &'static str,
    ) -> Result<raw::PluginInfo, Vec<raw::ConfigError>> {
        let schema: Vec<AttributeDecl> = schema.iter().map(AttributeDecl::from_raw).collect();
        crate::__private::init(instance, config, name, version, |c| C::init(c, &schema), C::info)
    }

    pub fn compute<C: CustomAttributes>(
        instance: &'static crate::__private::Instance<C>,
        users: Vec<raw::MappedUser>,
    ) -> Vec<raw::CustomResult> {
        let mut packer = Packer::with_capacity(256);
        crate::__private::batch(
            instance,
            &users,
            || raw::CustomResult::Error(crate::__private::NOT_INITIALISED.into()),
            |plugin, user| compute_one(plugin, user, &mut packer),
        )
    }

    pub(crate) fn compute_one<C: CustomAttributes>(
        plugin: &mut C,
        user: &raw::MappedUser,
        packer: &mut Packer,
    ) -> raw::CustomResult {
        let entry = match Entry::from_raw(&user.entry) {
            Ok(e) => e,
            Err(e) => return raw::CustomResult::Error(e.to_string()),
        };
        let mapped = match Attrs::parse(&user.mapped) {
            Ok(a) => a,
            Err(e) => return raw::CustomResult::Error(format!("mapped attributes: {e}")),
        };
        match plugin.compute(&MappedUser { entry, mapped }) {
            Ok(values) => {
                packer.clear();
                for (name, vals) in &values {
                    packer.attr(name, vals);
                }
                raw::CustomResult::Attributes(packer.as_bytes().to_vec())
            }
            Err(message) => raw::CustomResult::Error(message),
        }
    }
}
