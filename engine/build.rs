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
const BUILTINS: &[(&str, &str)] = &[("declarative_mapper", "ROSTER_BUILTIN_DECLARATIVE_MAPPER")];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("engine/ has a parent").to_path_buf();
    let plugins = root.join("plugins");

    for p in ["Cargo.toml", "Cargo.lock", "wire", "sdk", "declarative-mapper", "examples", "testing"] {
        println!("cargo:rerun-if-changed={}", plugins.join(p).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!("cargo:rerun-if-env-changed=ROSTER_PLUGIN_TARGET_DIR");

    // Outside the host's own target dir layout (target/<profile>/), so the two
    // cargo invocations never contend for the same lock.
    let target_dir =
        env::var_os("ROSTER_PLUGIN_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| default_target_dir(&root));

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&plugins)
        .args(["build", "--release", "--workspace", "--target", WASM_TARGET, "--manifest-path"])
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
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
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run cargo to build the plugins: {e}"));
    if !status.success() {
        panic!(
            "building the built-in plugins for {WASM_TARGET} failed (see the output above). \
             If the target is missing, run: rustup target add {WASM_TARGET}"
        );
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
