//! Builds the built-in plugins from source for `wasm32-wasip2` so that
//! `cargo build --release` yields one self-contained `roster` binary.
//!
//! The plugins live in their own cargo workspace (`plugins/`) because they are
//! built for another target; this script drives that build with the same cargo
//! and embeds the results. It also exports the folder of every plugin it built
//! (`ROSTER_PLUGIN_BUILD_DIR`) so the integration tests can load the example and
//! deliberately broken plugins built from the same sources.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip2";
/// Plugins embedded in the binary: (crate file stem, env var the engine reads).
const BUILTINS: &[(&str, &str)] = &[
    ("declarative_mapper", "ROSTER_BUILTIN_DECLARATIVE_MAPPER"),
    ("declarative_attributes", "ROSTER_BUILTIN_DECLARATIVE_ATTRIBUTES"),
    ("rule_roles", "ROSTER_BUILTIN_RULE_ROLES"),
    ("policy_resolver", "ROSTER_BUILTIN_POLICY_RESOLVER"),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("engine/ has a parent").to_path_buf();
    let plugins = root.join("plugins");

    let members = workspace_members(&plugins);
    println!("cargo:rerun-if-changed={}", plugins.join("Cargo.toml").display());
    println!("cargo:rerun-if-changed={}", plugins.join("Cargo.lock").display());
    for dir in ["wire", "expr", "sdk"].iter().copied().chain(members.iter().map(|(d, _)| d.as_str())) {
        println!("cargo:rerun-if-changed={}", plugins.join(dir).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!("cargo:rerun-if-env-changed=ROSTER_PLUGIN_TARGET_DIR");

    // Outside the host's own target dir layout (target/<profile>/), so the two
    // cargo invocations never contend for the same lock.
    let target_dir =
        env::var_os("ROSTER_PLUGIN_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| default_target_dir(&root));

    // One package per cargo run: each plugin implements one WIT world, and the
    // SDK's kind features must not be unified across packages (see the
    // compile_error! in plugins/sdk/src/lib.rs).
    for (dir, package) in &members {
        build_plugin(&plugins, &target_dir, package).unwrap_or_else(|e| {
            panic!(
                "building plugin '{package}' (plugins/{dir}) for {WASM_TARGET} failed: {e} (see the output above). \
                 If the target is missing, run: rustup target add {WASM_TARGET}"
            )
        });
    }

    let built = target_dir.join(WASM_TARGET).join("release");
    println!("cargo:rustc-env=ROSTER_PLUGIN_BUILD_DIR={}", built.display());
    for (stem, var) in BUILTINS {
        let path = built.join(format!("{stem}.wasm"));
        if !path.is_file() {
            panic!("plugin build succeeded but {} is missing", path.display());
        }
        println!("cargo:rustc-env={var}={}", path.display());
    }
}

fn build_plugin(plugins: &Path, target_dir: &Path, package: &str) -> Result<(), String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(plugins)
        .args(["build", "--release", "--target", WASM_TARGET, "-p", package, "--manifest-path"])
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    // Flags meant for the host build (coverage, sanitizers, a host --target) must
    // not leak into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_PROFILE_RELEASE_OPT_LEVEL",
        "CARGO_PROFILE_RELEASE_STRIP",
        "CARGO_PROFILE_RELEASE_LTO",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("cargo exited with {status}")) }
}

/// `(directory, package name)` of every plugin (a `cdylib`) in the plugins
/// workspace, read from the manifests so a new plugin needs no change here.
/// Library members (wire, expr, sdk) are built as the plugins' dependencies.
fn workspace_members(plugins: &Path) -> Vec<(String, String)> {
    let manifest = std::fs::read_to_string(plugins.join("Cargo.toml")).expect("reading plugins/Cargo.toml");
    let list = manifest
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .expect("plugins/Cargo.toml has `members = [ … ]`");
    list.split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .map(|dir| {
            let member = std::fs::read_to_string(plugins.join(&dir).join("Cargo.toml"))
                .unwrap_or_else(|e| panic!("reading plugins/{dir}/Cargo.toml: {e}"));
            let is_plugin = member.contains("crate-type = [\"cdylib\"");
            let name = member
                .lines()
                .find_map(|l| l.trim().strip_prefix("name = \""))
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("plugins/{dir}/Cargo.toml has no package name"))
                .to_string();
            (dir, name, is_plugin)
        })
        .filter(|(_, _, is_plugin)| *is_plugin)
        .map(|(dir, name, _)| (dir, name))
        .collect()
}

fn default_target_dir(root: &Path) -> PathBuf {
    // Respect a relocated host target dir (CARGO_TARGET_DIR) by deriving ours from
    // OUT_DIR: <target>/<profile>/build/<pkg>/out → <target>/wasm-plugins.
    if let Some(out) = env::var_os("OUT_DIR").map(PathBuf::from) {
        if let Some(target) = out.ancestors().nth(4) {
            return target.join("wasm-plugins");
        }
    }
    root.join("target").join("wasm-plugins")
}
