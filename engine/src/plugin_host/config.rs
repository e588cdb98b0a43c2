//! Plugin configuration: the tenant's TOML table, flattened into the WIT tree.

use super::bindings::wit::{Config, ConfigValue};

/// Flattens a TOML table into nodes; node 0 is the root table.
pub fn to_wit(table: &toml::Table) -> Config {
    let mut nodes = vec![ConfigValue::Table(Vec::new())];
    let root = flatten_table(table, &mut nodes);
    nodes[0] = ConfigValue::Table(root);
    Config { nodes }
}

fn flatten_table(table: &toml::Table, nodes: &mut Vec<ConfigValue>) -> Vec<(String, u32)> {
    table.iter().map(|(k, v)| (k.clone(), push(v, nodes))).collect()
}

fn push(value: &toml::Value, nodes: &mut Vec<ConfigValue>) -> u32 {
    let index = nodes.len();
    // Reserve the slot first so a parent always precedes its children.
    nodes.push(ConfigValue::Boolean(false));
    let node = match value {
        toml::Value::String(s) => ConfigValue::Text(s.clone()),
        toml::Value::Integer(i) => ConfigValue::Integer(*i),
        toml::Value::Float(f) => ConfigValue::Float(*f),
        toml::Value::Boolean(b) => ConfigValue::Boolean(*b),
        toml::Value::Datetime(d) => ConfigValue::Datetime(d.to_string()),
        toml::Value::Array(items) => ConfigValue::Array(items.iter().map(|v| push(v, nodes)).collect()),
        toml::Value::Table(t) => ConfigValue::Table(flatten_table(t, nodes)),
    };
    nodes[index] = node;
    index as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_tables_and_arrays_keep_their_shape() {
        let table: toml::Table = toml::from_str(
            "user = { userName = \"lower(uid)\" }\nrules = [ { group = \"a\", priority = 2 } ]\nstrict = true",
        )
        .expect("toml");
        let c = to_wit(&table);
        let ConfigValue::Table(root) = &c.nodes[0] else { panic!("root is not a table") };
        let rules = root.iter().find(|(k, _)| k == "rules").map(|(_, i)| *i).expect("rules");
        let ConfigValue::Array(items) = &c.nodes[rules as usize] else { panic!("rules is not an array") };
        let ConfigValue::Table(rule) = &c.nodes[items[0] as usize] else { panic!("rule is not a table") };
        let prio = rule.iter().find(|(k, _)| k == "priority").map(|(_, i)| *i).expect("priority");
        assert!(matches!(c.nodes[prio as usize], ConfigValue::Integer(2)));
    }
}
