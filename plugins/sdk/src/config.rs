//! Plugin configuration: the tenant's TOML table for this plugin, as a tree.
//!
//! WIT has no recursive types, so the host sends the table flattened into
//! `config { nodes }` (node 0 is the root, arrays and tables point at child nodes
//! by index). [`Config::from_raw`] rebuilds the tree and rejects anything that is
//! not a tree — an index out of range, a node referenced twice, a cycle, nesting
//! deeper than [`MAX_DEPTH`] — with a [`ConfigError`] instead of panicking.

use std::collections::BTreeMap;
use std::fmt;

use crate::bindings::roster::plugin::types as wit;

/// Deepest nesting of arrays and tables accepted in a configuration.
pub const MAX_DEPTH: usize = 64;

/// One configuration value, as written in the tenant's TOML.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    /// An RFC 3339 date-time, as written in the TOML.
    Datetime(String),
    Array(Vec<ConfigValue>),
    Table(BTreeMap<String, ConfigValue>),
}

impl ConfigValue {
    /// The TOML name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            ConfigValue::Text(_) => "string",
            ConfigValue::Integer(_) => "integer",
            ConfigValue::Float(_) => "float",
            ConfigValue::Boolean(_) => "boolean",
            ConfigValue::Datetime(_) => "datetime",
            ConfigValue::Array(_) => "array",
            ConfigValue::Table(_) => "table",
        }
    }

    /// The text of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ConfigValue::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_integer(&self) -> Option<i64> {
        match self {
            ConfigValue::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// A float, or an integer widened to a float.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            ConfigValue::Float(f) => Some(*f),
            ConfigValue::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            ConfigValue::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The RFC 3339 text of a date-time value.
    pub fn as_datetime(&self) -> Option<&str> {
        match self {
            ConfigValue::Datetime(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[ConfigValue]> {
        match self {
            ConfigValue::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_table(&self) -> Option<&BTreeMap<String, ConfigValue>> {
        match self {
            ConfigValue::Table(t) => Some(t),
            _ => None,
        }
    }

    /// Looks `key` up if this value is a table.
    pub fn get(&self, key: &str) -> Option<&ConfigValue> {
        self.as_table().and_then(|t| t.get(key))
    }
}

/// The plugin's configuration: a tree whose root is normally a table.
///
/// A plugin with no configuration at all gets an empty table.
///
/// ```
/// use roster_plugin_sdk::prelude::*;
/// # use std::collections::BTreeMap;
/// # let config = Config::from_value(ConfigValue::Table(BTreeMap::from([
/// #     ("prefix".to_string(), ConfigValue::Text("x-".into())),
/// # ])));
/// fn prefix(config: &Config) -> Result<String, ConfigError> {
///     Ok(config.str("prefix")?.unwrap_or("").to_string())
/// }
/// assert_eq!(prefix(&config).unwrap(), "x-");
/// assert!(config.unknown_keys(&["prefix"]).is_empty());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    root: ConfigValue,
}

impl Default for Config {
    fn default() -> Self {
        Self::empty()
    }
}

impl Config {
    /// An empty table.
    pub fn empty() -> Self {
        Self { root: ConfigValue::Table(BTreeMap::new()) }
    }

    /// A configuration with this root (handy in unit tests).
    pub fn from_value(root: ConfigValue) -> Self {
        Self { root }
    }

    /// Rebuilds the tree from the flattened nodes the host sends.
    ///
    /// No nodes at all means an empty table. Every error names the dotted key
    /// where the tree went wrong.
    pub fn from_raw(config: &wit::Config) -> Result<Self, ConfigError> {
        Self::from_nodes(&config.nodes)
    }

    /// As [`Config::from_raw`], from the node list itself.
    pub fn from_nodes(nodes: &[wit::ConfigValue]) -> Result<Self, ConfigError> {
        if nodes.is_empty() {
            return Ok(Self::empty());
        }
        let mut used = vec![false; nodes.len()];
        let mut path = String::new();
        let root = decode(nodes, 0, &mut used, &mut path, 0)?;
        Ok(Self { root })
    }

    /// The root value (normally a table).
    pub fn root(&self) -> &ConfigValue {
        &self.root
    }

    /// The root table, if the root is one.
    pub fn table(&self) -> Option<&BTreeMap<String, ConfigValue>> {
        self.root.as_table()
    }

    /// A top-level value.
    pub fn get(&self, key: &str) -> Option<&ConfigValue> {
        self.root.get(key)
    }

    /// Follows a path of table keys from the root. Keys may themselves contain
    /// dots (`["user", "name.givenName"]`), which is why this takes a slice.
    pub fn lookup(&self, path: &[&str]) -> Option<&ConfigValue> {
        path.iter().try_fold(&self.root, |v, k| v.get(k))
    }

    /// The top-level keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.table().into_iter().flat_map(|t| t.keys().map(String::as_str))
    }

    /// True for an empty table (or a root that is not a table).
    pub fn is_empty(&self) -> bool {
        self.table().is_none_or(BTreeMap::is_empty)
    }

    /// A top-level string: `Ok(None)` when absent, an error when of another type.
    pub fn str(&self, key: &str) -> Result<Option<&str>, ConfigError> {
        self.typed(key, "a string", ConfigValue::as_str)
    }

    /// A top-level boolean: `Ok(None)` when absent, an error when of another type.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.typed(key, "a boolean", ConfigValue::as_bool)
    }

    /// A top-level integer: `Ok(None)` when absent, an error when of another type.
    pub fn integer(&self, key: &str) -> Result<Option<i64>, ConfigError> {
        self.typed(key, "an integer", ConfigValue::as_integer)
    }

    /// A top-level table: `Ok(None)` when absent, an error when of another type.
    pub fn table_at(&self, key: &str) -> Result<Option<&BTreeMap<String, ConfigValue>>, ConfigError> {
        self.typed(key, "a table", ConfigValue::as_table)
    }

    fn typed<'s, T>(
        &'s self,
        key: &str,
        expected: &str,
        get: impl FnOnce(&'s ConfigValue) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => get(v)
                .map(Some)
                .ok_or_else(|| ConfigError::new(key, format!("expected {expected}, found {}", v.type_name()))),
        }
    }

    /// One error per top-level key not in `known`, with a "did you mean" hint
    /// when a known key is close. A root that is not a table is an error too.
    pub fn unknown_keys(&self, known: &[&str]) -> Vec<ConfigError> {
        let Some(table) = self.table() else {
            return vec![ConfigError::new("", format!("expected a table, found {}", self.root.type_name()))];
        };
        table
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .map(|k| {
                let mut message = format!("unknown key '{k}'");
                match crate::suggest(k, known.iter().copied()) {
                    Some(s) => message.push_str(&format!(" (did you mean '{s}'?)")),
                    None if !known.is_empty() => message.push_str(&format!("; expected one of: {}", known.join(", "))),
                    None => {}
                }
                ConfigError::new(k.as_str(), message)
            })
            .collect()
    }
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn decode(
    nodes: &[wit::ConfigValue],
    index: u32,
    used: &mut [bool],
    path: &mut String,
    depth: usize,
) -> Result<ConfigValue, ConfigError> {
    let err = |path: &str, message: String| ConfigError::new(path, message);
    let i = index as usize;
    let Some(node) = nodes.get(i) else {
        return Err(err(path, format!("malformed configuration: node {index} does not exist ({} nodes)", nodes.len())));
    };
    if used[i] {
        return Err(err(path, format!("malformed configuration: node {index} is referenced twice")));
    }
    used[i] = true;
    if depth > MAX_DEPTH {
        return Err(err(path, format!("configuration nested deeper than {MAX_DEPTH} levels")));
    }
    Ok(match node {
        wit::ConfigValue::Text(s) => ConfigValue::Text(s.clone()),
        wit::ConfigValue::Integer(n) => ConfigValue::Integer(*n),
        wit::ConfigValue::Float(f) => ConfigValue::Float(*f),
        wit::ConfigValue::Boolean(b) => ConfigValue::Boolean(*b),
        wit::ConfigValue::Datetime(s) => ConfigValue::Datetime(s.clone()),
        wit::ConfigValue::Array(children) => {
            let mut items = Vec::with_capacity(children.len().min(nodes.len()));
            for (n, &child) in children.iter().enumerate() {
                let saved = path.len();
                path.push_str(&format!("[{n}]"));
                let v = decode(nodes, child, used, path, depth + 1);
                path.truncate(saved);
                items.push(v?);
            }
            ConfigValue::Array(items)
        }
        wit::ConfigValue::Table(children) => {
            let mut table = BTreeMap::new();
            for (key, child) in children {
                let mut sub = child_path(path, key);
                if table.contains_key(key) {
                    return Err(err(&sub, format!("duplicate key '{key}'")));
                }
                let v = decode(nodes, *child, used, &mut sub, depth + 1)?;
                table.insert(key.clone(), v);
            }
            ConfigValue::Table(table)
        }
    })
}

/// A configuration problem, reported by `roster config check`.
///
/// `key` is the dotted key inside the plugin's table (`user.displayName`);
/// `position` is a 0-based character offset inside that key's value, for
/// expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub position: Option<u32>,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), position: None, message: message.into() }
    }

    /// The same error, pointing at a character position inside the value.
    pub fn at(mut self, position: u32) -> Self {
        self.position = Some(position);
        self
    }

    /// Converts to the WIT record.
    pub fn into_raw(self) -> wit::ConfigError {
        wit::ConfigError { key: self.key, position: self.position, message: self.message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.key.is_empty(), self.position) {
            (true, _) => write!(f, "{}", self.message),
            (false, None) => write!(f, "{}: {}", self.key, self.message),
            (false, Some(p)) => write!(f, "{} (at {}): {}", self.key, p, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;
    use wit::ConfigValue as N;

    #[test]
    fn rebuilds_nested_tables_and_arrays() {
        let nodes = vec![
            N::Table(vec![("user".into(), 1), ("tags".into(), 3), ("n".into(), 6)]),
            N::Table(vec![("userName".into(), 2)]),
            N::Text("lower(uid)".into()),
            N::Array(vec![4, 5]),
            N::Text("a".into()),
            N::Boolean(true),
            N::Integer(7),
        ];
        let c = Config::from_nodes(&nodes).expect("valid");
        assert_eq!(c.lookup(&["user", "userName"]).and_then(ConfigValue::as_str), Some("lower(uid)"));
        assert_eq!(c.get("tags").and_then(ConfigValue::as_array).map(<[_]>::len), Some(2));
        assert_eq!(c.integer("n"), Ok(Some(7)));
        assert_eq!(c.str("n").unwrap_err().message, "expected a string, found integer");
        assert_eq!(c.keys().collect::<Vec<_>>(), ["n", "tags", "user"]);
        assert!(Config::from_nodes(&[]).unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_indices_cycles_and_sharing_without_panicking() {
        let out_of_range = [N::Table(vec![("a".into(), 9)])];
        let e = Config::from_nodes(&out_of_range).unwrap_err();
        assert_eq!(e.key, "a");
        assert!(e.message.contains("node 9 does not exist"), "{e}");

        let cycle = [N::Table(vec![("a".into(), 1)]), N::Array(vec![0])];
        assert!(Config::from_nodes(&cycle).unwrap_err().message.contains("referenced twice"));

        let shared = [N::Array(vec![1, 1]), N::Integer(1)];
        assert_eq!(Config::from_nodes(&shared).unwrap_err().key, "[1]");

        let dup = [N::Table(vec![("a".into(), 1), ("a".into(), 2)]), N::Integer(1), N::Integer(2)];
        assert!(Config::from_nodes(&dup).unwrap_err().message.contains("duplicate key"));

        let deep: Vec<_> = (0..200).map(|i| N::Array(vec![i + 1])).collect();
        assert!(Config::from_nodes(&deep).unwrap_err().message.contains("nested deeper"));
    }

    #[test]
    fn unknown_keys_suggest_close_names() {
        let c =
            Config::from_value(ConfigValue::Table(BTreeMap::from([("usr".to_string(), ConfigValue::Boolean(true))])));
        let errs = c.unknown_keys(&["user", "group"]);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].message, "unknown key 'usr' (did you mean 'user'?)");
    }
}
