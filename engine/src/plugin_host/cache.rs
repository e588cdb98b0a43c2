//! Compiled components, cached by content so a second start does not recompile.
//!
//! `Component::new` costs ~36 ms for a small plugin (seconds in a debug build);
//! deserializing a precompiled one ~0.1 ms. The key includes the wasmtime
//! version and the engine settings that affect code generation, so an upgrade
//! or a settings change misses the cache instead of loading stale code.

use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Part of the cache key besides the plugin's hash. Bump when `engine_config`
/// changes in a way that affects compiled code.
pub const ENGINE_FINGERPRINT: &str = "wasmtime-48.0.8;epoch;pooling-1GiB;cranelift-speed;v2";

pub struct ComponentCache {
    dir: Option<PathBuf>,
}

impl ComponentCache {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    fn file_for(&self, hash: &str) -> Option<PathBuf> {
        let key = crate::util::sha256_hex(format!("{ENGINE_FINGERPRINT};{hash}").as_bytes());
        self.dir.as_ref().map(|d| d.join(format!("{}.cwasm", &key[..32])))
    }

    /// Returns the compiled component, compiling and caching it on a miss.
    pub fn load(&self, engine: &Engine, hash: &str, wasm: &[u8]) -> wasmtime::Result<(Component, bool)> {
        if let Some(file) = self.file_for(hash) {
            if file.is_file() {
                // SAFETY: the file was written by `Component::serialize` below into
                // Roster's own data directory; deserialize also checks the wasmtime
                // version and engine settings and fails cleanly on a mismatch.
                match unsafe { Component::deserialize_file(engine, &file) } {
                    Ok(c) => return Ok((c, true)),
                    Err(e) => {
                        tracing::warn!(file = %file.display(), error = %e, "discarding unusable compiled plugin cache entry")
                    }
                }
            }
            let component = Component::new(engine, wasm)?;
            if let Err(e) = write_atomically(&file, &component.serialize()?) {
                tracing::warn!(file = %file.display(), error = %e, "cannot write compiled plugin cache entry");
            }
            return Ok((component, false));
        }
        Ok((Component::new(engine, wasm)?, false))
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
