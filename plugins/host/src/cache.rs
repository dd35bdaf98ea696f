//! Compiled components, keyed by the SHA-256 of the plugin's bytes: a bounded
//! in-memory map, and optionally a directory of serialized artifacts so a
//! restarted server does not recompile.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Largest serialized artifact read back from the cache directory.
const MAX_ARTIFACT_BYTES: u64 = 256 << 20;

pub(crate) struct ComponentCache {
    engine: Engine,
    max_entries: usize,
    memory: Mutex<Memory>,
    /// One lock per binary being compiled: a second request for the same
    /// binary (the set's loader and a config check, or the next set version
    /// while the last one still compiles) waits for that compile instead of
    /// running its own. At most one entry per binary in flight.
    compiling: Mutex<HashMap<[u8; 32], Arc<Mutex<()>>>>,
    #[cfg(test)]
    compiled: std::sync::atomic::AtomicU64,
    dir: Option<PathBuf>,
    // Artifacts from another wasmtime build or configuration must not be
    // loaded; this tag goes into every file name.
    engine_tag: String,
}

#[derive(Default)]
struct Memory {
    entries: HashMap<[u8; 32], (u64, Component)>,
    clock: u64,
}

impl ComponentCache {
    pub(crate) fn new(engine: &Engine, max_entries: usize, dir: Option<PathBuf>) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ComponentCache {
            engine: engine.clone(),
            max_entries,
            memory: Mutex::new(Memory::default()),
            compiling: Mutex::new(HashMap::new()),
            #[cfg(test)]
            compiled: std::sync::atomic::AtomicU64::new(0),
            dir,
            engine_tag: format!("{:016x}", hasher.finish()),
        }
    }

    /// The compiled component for `bytes` (whose SHA-256 is `digest`),
    /// compiling it if neither cache has it. Cache trouble is logged and
    /// otherwise ignored: the cache only ever saves time.
    pub(crate) fn get_or_compile(
        &self,
        digest: &[u8; 32],
        bytes: &[u8],
    ) -> wasmtime::Result<Component> {
        if let Some(component) = self.memory_get(digest) {
            return Ok(component);
        }
        let flight = Arc::clone(
            self.compiling
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(*digest)
                .or_default(),
        );
        let result = {
            let _only_one = flight.lock().unwrap_or_else(PoisonError::into_inner);
            // Whoever held the lock before may have compiled it.
            match self.memory_get(digest) {
                Some(component) => Ok(component),
                None => self.load_or_compile(digest, bytes),
            }
        };
        let mut compiling = self
            .compiling
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The last one out removes the entry (the map holds one reference).
        if Arc::strong_count(&flight) == 2 {
            compiling.remove(digest);
        }
        drop(compiling);
        result
    }

    /// The disk cache, or a compile; both remembered in memory.
    fn load_or_compile(&self, digest: &[u8; 32], bytes: &[u8]) -> wasmtime::Result<Component> {
        let path = self.artifact_path(digest);
        if let Some(component) = path.as_deref().and_then(|p| self.disk_get(p)) {
            self.memory_put(digest, &component);
            return Ok(component);
        }
        #[cfg(test)]
        self.compiled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let component = Component::from_binary(&self.engine, bytes)?;
        if let Some(path) = path {
            self.disk_put(&path, &component);
        }
        self.memory_put(digest, &component);
        Ok(component)
    }

    fn memory_get(&self, digest: &[u8; 32]) -> Option<Component> {
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        memory.clock += 1;
        let now = memory.clock;
        let entry = memory.entries.get_mut(digest)?;
        entry.0 = now;
        Some(entry.1.clone())
    }

    fn memory_put(&self, digest: &[u8; 32], component: &Component) {
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        memory.clock += 1;
        let now = memory.clock;
        if memory.entries.len() >= self.max_entries && !memory.entries.contains_key(digest) {
            // Evict the least recently used entry. Linear, but the map is
            // small and this runs only when a new binary is compiled.
            let oldest = memory
                .entries
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                memory.entries.remove(&oldest);
            }
        }
        memory.entries.insert(*digest, (now, component.clone()));
    }

    fn artifact_path(&self, digest: &[u8; 32]) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{}-{}.cwasm", hex(digest), self.engine_tag)))
    }

    /// Reads an artifact back. The file holds the SHA-256 of the artifact
    /// followed by the artifact; a mismatch (torn write, disk corruption)
    /// means "recompile", never "load".
    fn disk_get(&self, path: &Path) -> Option<Component> {
        let meta = std::fs::metadata(path).ok()?;
        if meta.len() > MAX_ARTIFACT_BYTES + 32 {
            return None;
        }
        let data = match std::fs::read(path) {
            Ok(data) => data,
            Err(err) => {
                tracing::warn!(path = %path.display(), "plugin cache: cannot read artifact: {err}");
                return None;
            }
        };
        if data.len() < 32 || Sha256::digest(&data[32..]).as_slice() != &data[..32] {
            tracing::warn!(path = %path.display(), "plugin cache: artifact is corrupt; recompiling");
            let _ = std::fs::remove_file(path);
            return None;
        }
        let artifact = &data[32..];
        // SAFETY: `Component::deserialize` trusts its input to be an artifact
        // this version of wasmtime produced with `serialize` (it runs the
        // native code inside). Ours are: the file name carries the SHA-256
        // of the wasm and the engine's compatibility hash, the content was
        // written by `disk_put` below and its checksum just matched, and the
        // directory is the operator's private cache directory (created 0700,
        // documented as "whoever can write here can run code as the server",
        // like the server's own binary). wasmtime additionally rejects
        // artifacts from other versions or configurations with an error.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, artifact) };
        match component {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(path = %path.display(), "plugin cache: unusable artifact ({err}); recompiling");
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    fn disk_put(&self, path: &Path, component: &Component) {
        if let Err(err) = self.try_disk_put(path, component) {
            tracing::warn!(path = %path.display(), "plugin cache: cannot write artifact: {err}");
        }
    }

    fn try_disk_put(&self, path: &Path, component: &Component) -> std::io::Result<()> {
        let artifact = component.serialize().map_err(std::io::Error::other)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        // Write then rename, so a reader never sees half a file.
        let tmp = dir.join(format!(".{}.tmp-{}", file_name(path), std::process::id()));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&Sha256::digest(&artifact))?;
        file.write_all(&artifact)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        self.prune(dir);
        Ok(())
    }

    /// Keeps at most `max_entries` artifacts, dropping the oldest.
    fn prune(&self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut artifacts: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if artifacts.len() <= self.max_entries {
            return;
        }
        artifacts.sort();
        let excess = artifacts.len() - self.max_entries;
        for (_, path) in artifacts.into_iter().take(excess) {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_requests_for_one_binary_compile_it_once() {
        let engine = Engine::default();
        let cache = Arc::new(ComponentCache::new(&engine, 4, None));
        let bytes = wat::parse_str("(component (core module))").unwrap();
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, bytes) = (Arc::clone(&cache), bytes.clone());
                std::thread::spawn(move || cache.get_or_compile(&digest, &bytes).is_ok())
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap());
        }
        assert_eq!(cache.compiled.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(
            cache.compiling.lock().unwrap().is_empty(),
            "in-flight entries left"
        );
    }
}
