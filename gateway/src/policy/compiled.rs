//! Compiled policies kept on disk between starts: wasmtime's serialized code, named by the
//! module's digest and the engine's compatibility hash (its version and settings), and
//! authenticated with a key only Portcullis holds. Loading compiled code skips cranelift
//! (seconds for a Python or JavaScript policy); a file changed on disk fails its check and
//! is compiled again, never run.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Compiled code on disk, in one directory.
pub struct CompiledStore {
    dir: PathBuf,
    key: aws_lc_rs::hmac::Key,
}

impl CompiledStore {
    /// Code in `dir`, authenticated with a key derived from `secret` (the gateway's token
    /// signing key, which a file system that only holds the cache does not reveal).
    pub fn new(dir: &Path, secret: &[u8]) -> CompiledStore {
        let derived = Sha256::new()
            .chain_update(b"portcullis compiled policies\0")
            .chain_update(secret)
            .finalize();
        CompiledStore {
            dir: dir.to_path_buf(),
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &derived),
        }
    }

    /// For the tools a developer runs (`policy eval`, `test`, `replay`): the user's cache
    /// directory (`$XDG_CACHE_HOME/portcullis` or `~/.cache/portcullis`), with a random key
    /// made there once, readable by the user alone. None without a home, or when the
    /// directory cannot be written: then everything is compiled.
    pub fn for_tools() -> Option<CompiledStore> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
        let dir = base.join("portcullis");
        let key_file = dir.join("compiled.key");
        let secret = match std::fs::read(&key_file) {
            Ok(secret) if secret.len() == 32 => secret,
            _ => {
                let mut secret = vec![0u8; 32];
                getrandom::fill(&mut secret).ok()?;
                std::fs::create_dir_all(&dir).ok()?;
                crate::token::write_private(&key_file, &secret).ok()?;
                secret
            }
        };
        Some(CompiledStore::new(&dir.join("compiled"), &secret))
    }

    /// The compiled code of the module `digest`, if it was kept and its check passes.
    #[allow(unsafe_code)]
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(engine, digest);
        let kept = std::fs::read(&path).ok()?;
        let (code, tag) = kept.split_at_checked(kept.len().checked_sub(TAG)?)?;
        if aws_lc_rs::hmac::verify(&self.key, code, tag).is_err() {
            tracing::warn!(file = %path.display(), "compiled code that is not ours: compiling again");
            return None;
        }
        // SAFETY: wasmtime runs serialized code as it finds it, so it must be code this
        // engine serialized. The tag proves these are the bytes Portcullis wrote (only a
        // holder of the key can make it), for the engine whose compatibility hash names the
        // file; wasmtime checks its version and settings in the header again.
        match unsafe { Component::deserialize(engine, code) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "kept compiled code does not load: compiling again");
                None
            }
        }
    }

    /// Keeps `component`, compiled from the module `digest`. A store that cannot be written
    /// costs the next start a compile: logged, not an error.
    pub fn keep(&self, engine: &Engine, digest: &str, component: &Component) {
        let path = self.path(engine, digest);
        let written = component
            .serialize()
            .map_err(|e| e.to_string())
            .and_then(|mut code| {
                let tag = aws_lc_rs::hmac::sign(&self.key, &code);
                code.extend_from_slice(tag.as_ref());
                std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
                let beside = path.with_extension("partial");
                std::fs::write(&beside, &code)
                    .and_then(|()| std::fs::rename(&beside, &path))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "cannot keep the compiled policy");
        }
    }

    /// `<dir>/<sha256 of the digest and the engine's compatibility hash>.cwasm`.
    fn path(&self, engine: &Engine, digest: &str) -> PathBuf {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        digest.hash(&mut hasher);
        let name = hex::encode(hasher.0.finalize());
        self.dir.join(format!("{name}.cwasm"))
    }
}

/// The length of the tag after the code.
const TAG: usize = 32;

/// Feeds what `Hash` writes into SHA-256: a name that is the same in every process.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // Only the SHA-256 state is used.
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty component: the magic number, version 0x0d and the component layer.
    const MODULE: &[u8] = b"\0asm\x0d\x00\x01\x00";

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).expect("an engine")
    }

    #[test]
    fn kept_code_loads_and_changed_code_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine();
        let component = Component::new(&engine, MODULE).expect("compiles");
        let store = CompiledStore::new(dir.path(), b"secret");
        assert!(
            store.load(&engine, "sha256:a").is_none(),
            "nothing kept yet"
        );
        store.keep(&engine, "sha256:a", &component);
        assert!(store.load(&engine, "sha256:a").is_some());
        assert!(store.load(&engine, "sha256:b").is_none(), "another module");
        let other_key = CompiledStore::new(dir.path(), b"another secret");
        assert!(other_key.load(&engine, "sha256:a").is_none(), "not our tag");
        let path = store.path(&engine, "sha256:a");
        let mut bytes = std::fs::read(&path).expect("kept");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&path, &bytes).expect("changed");
        assert!(store.load(&engine, "sha256:a").is_none(), "a changed byte");
        std::fs::write(&path, b"short").expect("truncated");
        assert!(store.load(&engine, "sha256:a").is_none(), "a short file");
    }
}
