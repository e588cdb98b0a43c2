//! The kinds of plugin a tenant runs, one WIT world each.

use std::fmt;

/// A plugin kind: which world it implements and where it sits in the pipeline
/// (connector → mapper → custom attributes → role assignment → diff → conflict
/// resolution). A connector is a source, configured on `[[tenant.source]]`;
/// the other kinds are the tenant's pipeline stages, each with a built-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    Mapper,
    CustomAttributes,
    RoleAssigner,
    ConflictResolver,
    Connector,
}

impl PluginKind {
    /// The pipeline stages, in order; each has a built-in plugin.
    pub const ALL: [PluginKind; 4] =
        [PluginKind::Mapper, PluginKind::CustomAttributes, PluginKind::RoleAssigner, PluginKind::ConflictResolver];
    /// Every kind a plugin can be: the stages and source connectors.
    pub const EVERY: [PluginKind; 5] = [
        PluginKind::Mapper,
        PluginKind::CustomAttributes,
        PluginKind::RoleAssigner,
        PluginKind::ConflictResolver,
        PluginKind::Connector,
    ];

    /// The name used on the command line, in the registry and as the WIT world.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Mapper => "mapper",
            PluginKind::CustomAttributes => "custom-attributes",
            PluginKind::RoleAssigner => "role-assigner",
            PluginKind::ConflictResolver => "conflict-resolver",
            PluginKind::Connector => "connector",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::EVERY.into_iter().find(|k| k.as_str() == s)
    }

    /// The key under `[tenant.plugins]` that overrides the built-in.
    pub fn config_key(self) -> &'static str {
        match self {
            PluginKind::Mapper => "mapper",
            PluginKind::CustomAttributes => "custom_attributes",
            PluginKind::RoleAssigner => "role_assigner",
            PluginKind::ConflictResolver => "conflict_resolver",
            PluginKind::Connector => "connector",
        }
    }

    /// The functions the kind's world exports.
    pub fn exports(self) -> &'static [&'static str] {
        match self {
            PluginKind::Mapper => &["init", "map"],
            PluginKind::CustomAttributes => &["init", "compute"],
            PluginKind::RoleAssigner => &["init", "assign"],
            PluginKind::ConflictResolver => &["init", "resolve"],
            PluginKind::Connector => &["describe", "init", "read", "read-delta", "check"],
        }
    }

    /// WIT package versions a plugin of this kind may be built against.
    pub fn wit_versions(self) -> &'static [&'static str] {
        match self {
            PluginKind::Mapper => &["0.1.0", "0.2.0"],
            _ => &["0.2.0"],
        }
    }

    /// The file of `wit/` that defines the world, for messages.
    pub fn wit_file(self) -> &'static str {
        match self {
            PluginKind::Mapper => "wit/mapper.wit",
            PluginKind::CustomAttributes => "wit/custom-attributes.wit",
            PluginKind::RoleAssigner => "wit/role-assigner.wit",
            PluginKind::ConflictResolver => "wit/conflict-resolver.wit",
            PluginKind::Connector => "wit/connector.wit",
        }
    }

    /// One-line names of every kind, for "expected one of" messages.
    pub fn list() -> String {
        Self::EVERY.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
