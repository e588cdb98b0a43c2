//! The `mapper` kind: source entries → application users and groups.

use crate::{Config, ConfigError, Entry, MapResult, PluginInfo};

/// A mapping plugin.
///
/// One value of the implementing type lives per plugin instance, created by
/// [`Mapper::init`]; export the type with [`export_mapper!`].
pub trait Mapper: Sized + 'static {
    /// Validates the configuration and builds the instance. Report every
    /// problem found, not just the first: `roster config check` shows them all.
    fn init(config: &Config) -> Result<Self, Vec<ConfigError>>;

    /// The plugin's name and version, reported after a successful `init`.
    /// Defaults to the crate's package name and version ([`PluginInfo::package`]).
    fn info(&self) -> PluginInfo {
        PluginInfo::package()
    }

    /// Maps one entry. Called once per entry, in batch order.
    fn map(&mut self, entry: &Entry<'_>) -> MapResult;
}

/// Exports a [`Mapper`] as the component's `init` and `map`.
///
/// ```ignore
/// roster_plugin_sdk::export_mapper!(MyMapper);
/// // or, to report another name or version than the crate's:
/// roster_plugin_sdk::export_mapper!(MyMapper, name = "acme-mapper", version = "2.1.0");
/// ```
///
/// Use it once per plugin crate. It only generates code when compiling for
/// WebAssembly; natively (unit tests) it just checks that the type is a `Mapper`.
#[macro_export]
macro_rules! export_mapper {
    ($ty:ty $(,)?) => {
        $crate::export_mapper!($ty, name = ::core::env!("CARGO_PKG_NAME"), version = ::core::env!("CARGO_PKG_VERSION"));
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
                        <$ty as $crate::Mapper>::init,
                        <$ty as $crate::Mapper>::info,
                    )
                }

                fn map(entries: ::std::vec::Vec<$crate::raw::Entry>) -> ::std::vec::Vec<$crate::raw::MapResult> {
                    $crate::__mapper::map::<$ty>(&__ROSTER_INSTANCE, entries)
                }
            }

    $crate::bindings::__export_world!(__RosterGuest with_types_in $crate::bindings);
        };

        // Natively: only check the type (and keep it from looking unused).
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = <$ty as $crate::Mapper>::init;
            let _ = <$ty as $crate::Mapper>::map;
        };
    };
}

#[doc(hidden)]
pub mod __private {
    use crate::{Entry, MapResult, Mapper, raw};

    pub fn map<M: Mapper>(
        instance: &'static crate::__private::Instance<M>,
        entries: Vec<raw::Entry>,
    ) -> Vec<raw::MapResult> {
        crate::__private::batch(
            instance,
            &entries,
            || MapResult::error(crate::__private::NOT_INITIALISED).into_raw(),
            |mapper, raw_entry| {
                match Entry::from_raw(raw_entry) {
                    Ok(entry) => mapper.map(&entry),
                    Err(e) => MapResult::error(e.to_string()),
                }
                .into_raw()
            },
        )
    }
}
