//! Helpers shared by the plugin host tests: fixtures, requests, readers.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cairn_plugin_host::{
    HostOptions, KeyReader, Limits, LoadedPlugin, NoKeys, Operation, PluginHost, PluginSpec,
    WasmSource, WriteRequest,
};

/// `plugins/` in the repository.
pub fn plugins_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A committed example plugin from `plugins/dist/`.
pub fn dist(name: &str) -> WasmSource {
    WasmSource::Path(plugins_dir().join("dist").join(format!("{name}.wasm")))
}

/// A hostile fixture from `plugins/testdata/`, assembled from its WAT text.
pub fn testdata(name: &str) -> WasmSource {
    let path = plugins_dir().join("testdata").join(format!("{name}.wat"));
    let bytes = wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    WasmSource::Bytes(bytes.into())
}

/// The host most tests share. Sharing it means each plugin binary is
/// compiled once per test run (the host caches by content hash), which
/// matters in debug builds where Cranelift itself is unoptimized.
pub fn host() -> PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(|| {
        PluginHost::new(HostOptions {
            max_concurrent_calls: 16,
            ..HostOptions::default()
        })
        .expect("plugin host")
    })
    .clone()
}

/// A host of its own, for tests that change options or drop it.
pub fn own_host(options: HostOptions) -> PluginHost {
    PluginHost::new(options).expect("plugin host")
}

pub fn load(
    host: &PluginHost,
    name: &str,
    source: WasmSource,
    config: &[(&str, &str)],
) -> Arc<LoadedPlugin> {
    // A deadline far above any honest call: these plugins are not the ones
    // being timed, and a loaded 2-core machine may deschedule a call for
    // longer than the default 50 ms. (Timeout tests set their own limits.)
    let mut spec = PluginSpec::new(name, source).with_limits(Limits {
        deadline: std::time::Duration::from_secs(10),
        ..Limits::default()
    });
    for (k, v) in config {
        spec = spec.with_config(*k, *v);
    }
    host.load(spec)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

pub fn load_with_limits(
    host: &PluginHost,
    name: &str,
    source: WasmSource,
    limits: Limits,
) -> Arc<LoadedPlugin> {
    host.load(PluginSpec::new(name, source).with_limits(limits))
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

pub fn put(key: &str, value: &str) -> WriteRequest {
    WriteRequest {
        op: Operation::Put,
        in_txn: false,
        key: key.as_bytes().to_vec(),
        range_end: None,
        value: Some(value.as_bytes().to_vec()),
        lease: None,
        principal: None,
        revision: 42,
    }
}

pub fn delete(key: &str, range_end: Option<&str>) -> WriteRequest {
    WriteRequest {
        op: Operation::DeleteRange,
        in_txn: false,
        key: key.as_bytes().to_vec(),
        range_end: range_end.map(|e| e.as_bytes().to_vec()),
        value: None,
        lease: None,
        principal: None,
        revision: 42,
    }
}

pub fn no_keys() -> Arc<dyn KeyReader> {
    Arc::new(NoKeys)
}

pub fn keys(pairs: &[(&str, &str)]) -> Arc<dyn KeyReader> {
    let map: BTreeMap<Vec<u8>, Vec<u8>> = pairs
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    Arc::new(map)
}

/// A reader that records which keys were asked for.
#[derive(Default)]
pub struct RecordingReader {
    pub keys: BTreeMap<Vec<u8>, Vec<u8>>,
    pub asked: Mutex<Vec<Vec<u8>>>,
}

impl KeyReader for RecordingReader {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.asked.lock().unwrap().push(key.to_vec());
        self.keys.get(key).cloned()
    }
}
