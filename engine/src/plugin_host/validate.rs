//! Checks a component's shape before linking, so a plugin author reads which
//! export is missing or which import is not supported instead of a raw
//! wasmtime linking error.

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::PluginKind;

/// The newest WIT package version of `roster:plugin` this host implements.
pub const LATEST_WIT_VERSION: &str = "0.2.0";

/// Problems with a component that claims to be a plugin of `kind`, and the
/// `roster:plugin` version it was built against (from its imports).
pub fn problems(engine: &Engine, component: &Component, kind: PluginKind) -> (Vec<String>, String) {
    let ty = component.component_type();
    let mut problems = Vec::new();
    for name in kind.exports() {
        match ty.get_export(engine, name) {
            Some(e) if matches!(e.ty, ComponentItem::ComponentFunc(_)) => {}
            Some(_) => problems.push(format!("export '{name}' is not a function")),
            None => problems.push(format!(
                "missing export '{name}': a {kind} plugin exports {} (world `{kind}` in {})",
                kind.exports().iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(" and "),
                kind.wit_file()
            )),
        }
    }
    let mut versions: Vec<String> = Vec::new();
    for (name, _) in ty.imports(engine) {
        if let Some(rest) = name.strip_prefix("roster:plugin/") {
            let version = rest.split_once('@').map(|(_, v)| v).unwrap_or("(none)").to_string();
            if !kind.wit_versions().contains(&version.as_str()) {
                problems.push(format!(
                    "imports '{name}': a {kind} plugin built against roster:plugin@{version} is not supported by this host (supported: {})",
                    kind.wit_versions().join(", ")
                ));
            }
            if rest.starts_with("http@") && kind != PluginKind::Connector {
                problems.push(format!(
                    "imports '{name}': only connector plugins may send HTTP requests, not a {kind} plugin"
                ));
            }
            if !versions.contains(&version) {
                versions.push(version);
            }
        } else if !(name.starts_with("wasi:")) {
            problems.push(format!(
                "imports '{name}', which the host does not provide: plugins may import roster:plugin/host and WASI 0.2"
            ));
        }
    }
    if versions.len() > 1 {
        problems
            .push(format!("imports several versions of roster:plugin ({}); build against one", versions.join(", ")));
    }
    let version = versions.into_iter().next().unwrap_or_else(|| LATEST_WIT_VERSION.to_string());
    (problems, version)
}

/// WASI interfaces whose calls the sandbox denies at run time. An uploaded
/// plugin must not import them at all: importing them means it was written to
/// use a file system or the network, which it will never get.
const UNGRANTED_WASI: &[(&str, &str)] =
    &[("wasi:filesystem/", "file system access"), ("wasi:sockets/", "network access"), ("wasi:http/", "HTTP access")];

/// Imports of capabilities the host does not grant, as messages an author can act on.
pub fn ungranted_imports(engine: &Engine, component: &Component) -> Vec<String> {
    let ty = component.component_type();
    ty.imports(engine)
        .filter_map(|(name, _)| {
            UNGRANTED_WASI.iter().find(|(prefix, _)| name.starts_with(prefix)).map(|(_, what)| {
                format!("imports '{name}': {what} is not granted to plugins; remove the code that uses it (std::fs, std::net…)")
            })
        })
        .collect()
}
