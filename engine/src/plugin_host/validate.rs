//! Checks a component's shape before linking, so a plugin author reads which
//! export is missing or which import is not supported instead of a raw
//! wasmtime linking error.

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

/// WIT package versions of `roster:plugin` this host can load.
pub const SUPPORTED_WIT_VERSIONS: &[&str] = &["0.1.0"];

/// The functions the `mapper` world exports.
const MAPPER_EXPORTS: &[&str] = &["init", "map"];

/// Problems with a component that claims to be a mapper; empty when it fits.
pub fn mapper_problems(engine: &Engine, component: &Component) -> Vec<String> {
    let ty = component.component_type();
    let mut problems = Vec::new();
    for name in MAPPER_EXPORTS {
        match ty.get_export(engine, name) {
            Some(e) if matches!(e.ty, ComponentItem::ComponentFunc(_)) => {}
            Some(_) => problems.push(format!("export '{name}' is not a function")),
            None => problems.push(format!(
                "missing export '{name}': a mapper exports `init` and `map` (world `mapper` in wit/mapper.wit)"
            )),
        }
    }
    for (name, _) in ty.imports(engine) {
        if let Some(rest) = name.strip_prefix("roster:plugin/") {
            let version = rest.split_once('@').map(|(_, v)| v).unwrap_or("(none)");
            if !SUPPORTED_WIT_VERSIONS.contains(&version) {
                problems.push(format!(
                    "imports '{name}': roster:plugin@{version} is not supported by this host (supported: {})",
                    SUPPORTED_WIT_VERSIONS.join(", ")
                ));
            }
        } else if !(name.starts_with("wasi:")) {
            problems.push(format!(
                "imports '{name}', which the host does not provide: plugins may import roster:plugin/host and WASI 0.2"
            ));
        }
    }
    problems
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
