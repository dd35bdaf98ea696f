//! Loading a plugin (compile, link, discover and type-check its hooks) and
//! calling it (a fresh instance per call, under deadline and memory limit).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::Store;
use wasmtime::Trap;
use wasmtime::component::{Instance, InstancePre};

use crate::bindings::exports::cairn::policy::{authentication, authorization, validation};
use crate::cache::hex;
use crate::host::HostInner;
use crate::policy::MAX_DENY_REASON_BYTES;
use crate::state::{CallState, truncate_utf8};
use crate::{
    Access, AccessRequest, AuthOutcome, Credential, KeyReader, NoKeys, PluginError, PluginShared,
    Verdict, WriteRequest,
};

/// Longest plugin name (bytes).
const MAX_NAME_BYTES: usize = 128;
/// Longest principal an authenticator may return (bytes).
const MAX_PRINCIPAL_BYTES: usize = 256;
/// Config entries a plugin may be given, and their total size.
const MAX_CONFIG_ENTRIES: usize = 1024;
const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Per-plugin limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock budget of one call, instantiation included. The call is
    /// interrupted at the first epoch tick past it.
    pub deadline: Duration,
    /// Most linear memory the plugin's instance may have (bytes).
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(50),
            memory_bytes: 16 << 20,
        }
    }
}

/// Where the plugin's component comes from.
#[derive(Debug, Clone)]
pub enum WasmSource {
    Bytes(Arc<[u8]>),
    Path(PathBuf),
}

/// Everything needed to load one plugin.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// Names the plugin in logs, errors and client-facing denials: ASCII
    /// letters, digits, `-`, `_`, `.`; at most 128 bytes.
    pub name: String,
    pub source: WasmSource,
    pub limits: Limits,
    /// The operator's configuration, returned by `host.config()`.
    pub config: Vec<(String, String)>,
}

impl PluginSpec {
    /// A spec with default limits and no config.
    pub fn new(name: impl Into<String>, source: WasmSource) -> Self {
        PluginSpec {
            name: name.into(),
            source,
            limits: Limits::default(),
            config: Vec::new(),
        }
    }

    /// Adds one config entry.
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// A hook kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    Validator,
    Authenticator,
    Authorizer,
}

impl Hook {
    /// The WIT interface a component exports to implement this hook.
    pub fn interface(self) -> &'static str {
        match self {
            Hook::Validator => "cairn:policy/validation@0.1.0",
            Hook::Authenticator => "cairn:policy/authentication@0.1.0",
            Hook::Authorizer => "cairn:policy/authorization@0.1.0",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hook::Validator => "validator",
            Hook::Authenticator => "authenticator",
            Hook::Authorizer => "authorizer",
        })
    }
}

/// Which hooks a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hooks {
    pub validator: bool,
    pub authenticator: bool,
    pub authorizer: bool,
}

/// A plugin ready to be called. `Send + Sync`: share it behind the `Arc`
/// [`PluginHost::load`](crate::PluginHost::load) returns and call it from
/// any number of threads.
pub struct LoadedPlugin {
    shared: Arc<PluginShared>,
    digest: [u8; 32],
    pre: InstancePre<CallState>,
    validation: Option<validation::GuestIndices>,
    authentication: Option<authentication::GuestIndices>,
    authorization: Option<authorization::GuestIndices>,
    deadline_ticks: u64,
    host: Arc<HostInner>,
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name())
            .field("sha256", &self.sha256_hex())
            .field("hooks", &self.hooks())
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

/// The plugin's binary, within the host's size limit (a file's size is
/// checked before it is read).
fn read_wasm(host: &HostInner, name: &str, source: WasmSource) -> Result<Arc<[u8]>, PluginError> {
    let invalid = |detail: String| PluginError::InvalidSpec {
        plugin: name.to_owned(),
        detail,
    };
    let max = host.options.max_wasm_bytes;
    let bytes: Arc<[u8]> = match source {
        WasmSource::Bytes(bytes) => bytes,
        WasmSource::Path(path) => {
            let read = |source| PluginError::Read {
                plugin: name.to_owned(),
                path: path.clone(),
                source,
            };
            let len = std::fs::metadata(&path).map_err(read)?.len();
            if len > max as u64 {
                return Err(invalid(format!(
                    "{} is {len} bytes, over the limit of {max}",
                    path.display()
                )));
            }
            std::fs::read(&path).map_err(read)?.into()
        }
    };
    if bytes.len() > max {
        return Err(invalid(format!(
            "the binary is {} bytes, over the limit of {max}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

pub(crate) fn load(host: &Arc<HostInner>, spec: PluginSpec) -> Result<LoadedPlugin, PluginError> {
    let PluginSpec {
        name,
        source,
        limits,
        config,
    } = spec;
    check_spec(host, &name, &limits, &config)?;
    let bytes = read_wasm(host, &name, source)?;

    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    let component =
        host.cache
            .get_or_compile(&digest, &bytes)
            .map_err(|e| PluginError::Compile {
                plugin: name.clone(),
                detail: compile_detail(&bytes, &e),
            })?;

    let bad_interface = |detail: String| PluginError::BadInterface {
        plugin: name.clone(),
        detail,
    };
    let pre = host.linker.instantiate_pre(&component).map_err(|e| {
        bad_interface(format!(
            "it imports something Cairn does not provide (plugins get cairn:policy/host \
             and WASI's io, cli and random interfaces only: no files, sockets or clocks): {e:#}"
        ))
    })?;

    // Discover the hooks: an export with a hook's interface name means the
    // plugin implements it, and then it must have the right functions.
    let has = |hook: Hook| component.get_export_index(None, hook.interface()).is_some();
    let indices_err = |hook: Hook, e: wasmtime::Error| {
        bad_interface(format!(
            "its {} export is malformed: {e:#}",
            hook.interface()
        ))
    };
    let validation = match has(Hook::Validator) {
        true => {
            Some(validation::GuestIndices::new(&pre).map_err(|e| indices_err(Hook::Validator, e))?)
        }
        false => None,
    };
    let authentication = match has(Hook::Authenticator) {
        true => Some(
            authentication::GuestIndices::new(&pre)
                .map_err(|e| indices_err(Hook::Authenticator, e))?,
        ),
        false => None,
    };
    let authorization = match has(Hook::Authorizer) {
        true => Some(
            authorization::GuestIndices::new(&pre).map_err(|e| indices_err(Hook::Authorizer, e))?,
        ),
        false => None,
    };
    if validation.is_none() && authentication.is_none() && authorization.is_none() {
        let exports: Vec<String> = component
            .component_type()
            .exports(&host.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        return Err(bad_interface(format!(
            "it exports none of the hooks {}, {} or {} (its exports: {})",
            Hook::Validator.interface(),
            Hook::Authenticator.interface(),
            Hook::Authorizer.interface(),
            if exports.is_empty() {
                "none".to_owned()
            } else {
                exports.join(", ")
            }
        )));
    }

    let tick = host.options.epoch_tick;
    // One extra tick: the current tick is already partly over when the
    // deadline is set, so `n` ticks could be up to one tick short.
    let deadline_ticks =
        (limits.deadline.as_nanos().div_ceil(tick.as_nanos().max(1)) as u64).saturating_add(1);
    let plugin = LoadedPlugin {
        shared: Arc::new(PluginShared {
            name: name.as_str().into(),
            config: config.into(),
            limits,
        }),
        digest,
        pre,
        validation,
        authentication,
        authorization,
        deadline_ticks,
        host: Arc::clone(host),
    };
    plugin.probe()?;
    tracing::info!(
        target: "cairn_plugin",
        plugin = %name,
        sha256 = %plugin.sha256_hex(),
        hooks = ?plugin.hooks(),
        "plugin loaded"
    );
    Ok(plugin)
}

fn check_spec(
    host: &HostInner,
    name: &str,
    limits: &Limits,
    config: &[(String, String)],
) -> Result<(), PluginError> {
    let invalid = |detail: String| {
        Err(PluginError::InvalidSpec {
            plugin: name.to_owned(),
            detail,
        })
    };
    if name.is_empty()
        || name.len() > MAX_NAME_BYTES
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return invalid(format!(
            "the name must be 1 to {MAX_NAME_BYTES} ASCII letters, digits, '-', '_' or '.'"
        ));
    }
    let o = &host.options;
    if limits.deadline < o.epoch_tick || limits.deadline > o.max_deadline {
        return invalid(format!(
            "deadline {:?} is outside [{:?}, {:?}]",
            limits.deadline, o.epoch_tick, o.max_deadline
        ));
    }
    if limits.memory_bytes < 64 << 10 || limits.memory_bytes > o.max_memory_bytes {
        return invalid(format!(
            "memory limit {} bytes is outside [65536, {}]",
            limits.memory_bytes, o.max_memory_bytes
        ));
    }
    let config_bytes: usize = config.iter().map(|(k, v)| k.len() + v.len()).sum();
    if config.len() > MAX_CONFIG_ENTRIES || config_bytes > MAX_CONFIG_BYTES {
        return invalid(format!(
            "config too large ({} entries, {config_bytes} bytes; limits {MAX_CONFIG_ENTRIES} and {MAX_CONFIG_BYTES})",
            config.len()
        ));
    }
    Ok(())
}

/// Explains a compile error, with a hint for the most common mistake.
fn compile_detail(bytes: &[u8], err: &wasmtime::Error) -> String {
    // A core module has version 1, layer 0 in its header; a component has
    // layer 1.
    if bytes.starts_with(b"\0asm\x01\0\0\0") {
        return "this is a core WebAssembly module, not a component: build for \
                wasm32-wasip2 (or run `wasm-tools component new`)"
            .to_owned();
    }
    format!("{err:#}")
}

impl LoadedPlugin {
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// SHA-256 of the plugin's bytes.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.digest
    }

    pub fn sha256_hex(&self) -> String {
        hex(&self.digest)
    }

    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    pub fn config(&self) -> &[(String, String)] {
        &self.shared.config
    }

    pub fn hooks(&self) -> Hooks {
        Hooks {
            validator: self.validation.is_some(),
            authenticator: self.authentication.is_some(),
            authorizer: self.authorization.is_some(),
        }
    }

    /// Asks the validator about one write. `reader` serves `host.get` at the
    /// revision the write is judged at.
    pub fn validate(
        &self,
        request: &WriteRequest,
        reader: Arc<dyn KeyReader>,
    ) -> Result<Verdict, PluginError> {
        let indices = self
            .validation
            .as_ref()
            .ok_or_else(|| self.missing(Hook::Validator))?;
        let verdict = self.call(reader, |store, instance| {
            indices
                .load(&mut *store, instance)?
                .call_validate(&mut *store, request)
        })?;
        Ok(bounded_verdict(verdict))
    }

    /// Asks the authenticator about a credential.
    pub fn authenticate(
        &self,
        credential: &Credential,
        reader: Arc<dyn KeyReader>,
    ) -> Result<AuthOutcome, PluginError> {
        let indices = self
            .authentication
            .as_ref()
            .ok_or_else(|| self.missing(Hook::Authenticator))?;
        let outcome = self.call(reader, |store, instance| {
            indices
                .load(&mut *store, instance)?
                .call_authenticate(&mut *store, credential)
        })?;
        match outcome {
            AuthOutcome::Authenticated(principal)
                if principal.is_empty() || principal.len() > MAX_PRINCIPAL_BYTES =>
            {
                Err(PluginError::InvalidResult {
                    plugin: self.name().to_owned(),
                    detail: format!(
                        "a principal must be 1 to {MAX_PRINCIPAL_BYTES} bytes, got {}",
                        principal.len()
                    ),
                })
            }
            AuthOutcome::Refused(reason) => Ok(AuthOutcome::Refused(
                truncate_utf8(&reason, MAX_DENY_REASON_BYTES).to_owned(),
            )),
            outcome => Ok(outcome),
        }
    }

    /// Asks the authorizer whether `principal` (`None`: anonymous) may do
    /// `access` on [`key`, `range_end`) (`range_end` in etcd's encoding;
    /// `None` for the single key).
    pub fn authorize(
        &self,
        principal: Option<&str>,
        access: Access,
        key: &[u8],
        range_end: Option<&[u8]>,
        reader: Arc<dyn KeyReader>,
    ) -> Result<Verdict, PluginError> {
        let indices = self
            .authorization
            .as_ref()
            .ok_or_else(|| self.missing(Hook::Authorizer))?;
        let request = AccessRequest {
            principal: principal.map(str::to_owned),
            access,
            key: key.to_vec(),
            range_end: range_end.map(<[u8]>::to_vec),
        };
        let verdict = self.call(reader, |store, instance| {
            indices
                .load(&mut *store, instance)?
                .call_authorize(&mut *store, &request)
        })?;
        Ok(bounded_verdict(verdict))
    }

    fn missing(&self, hook: Hook) -> PluginError {
        PluginError::MissingHook {
            plugin: self.name().to_owned(),
            hook,
        }
    }

    /// Instantiates once at load time and type-checks every hook the plugin
    /// exports (`load` checks the function types), without calling any.
    fn probe(&self) -> Result<(), PluginError> {
        self.call(Arc::new(NoKeys), |store, instance| {
            if let Some(i) = &self.validation {
                i.load(&mut *store, instance)
                    .map_err(|e| Probe(Hook::Validator, e))?;
            }
            if let Some(i) = &self.authentication {
                i.load(&mut *store, instance)
                    .map_err(|e| Probe(Hook::Authenticator, e))?;
            }
            if let Some(i) = &self.authorization {
                i.load(&mut *store, instance)
                    .map_err(|e| Probe(Hook::Authorizer, e))?;
            }
            Ok(())
        })
    }

    /// One call: take an instance slot, build a fresh store with the limits,
    /// instantiate from the pre-linked template, run `f`, classify failures.
    fn call<R>(
        &self,
        reader: Arc<dyn KeyReader>,
        f: impl FnOnce(&mut Store<CallState>, &Instance) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let limits = self.shared.limits;
        let _slot = self
            .host
            .slots
            .acquire(limits.deadline)
            .ok_or_else(|| PluginError::Busy {
                plugin: self.name().to_owned(),
                waited: limits.deadline,
            })?;
        let mut store = Store::new(
            &self.host.engine,
            CallState::new(Arc::clone(&self.shared), reader),
        );
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(self.deadline_ticks);
        let result = match self.pre.instantiate(&mut store) {
            Ok(instance) => f(&mut store, &instance).map_err(|e| (e, false)),
            Err(e) => Err((e, true)),
        };
        store.data().finish();
        result.map_err(|(err, instantiating)| self.classify(err, instantiating, store.data()))
    }

    fn classify(
        &self,
        err: wasmtime::Error,
        instantiating: bool,
        state: &CallState,
    ) -> PluginError {
        let plugin = self.name().to_owned();
        let limits = self.shared.limits;
        let trap = err.downcast_ref::<Trap>().copied();
        if trap == Some(Trap::Interrupt) {
            return PluginError::Timeout {
                plugin,
                deadline: limits.deadline,
            };
        }
        if state.limiter.hit_memory_limit {
            return PluginError::OutOfMemory {
                plugin,
                limit: limits.memory_bytes,
            };
        }
        if let Some(Probe(hook, e)) = err.downcast_ref::<Probe>() {
            return PluginError::BadInterface {
                plugin,
                detail: format!("its {} export has the wrong type: {e:#}", hook.interface()),
            };
        }
        let mut message = match (trap, err.downcast_ref::<wasmtime_wasi::I32Exit>()) {
            (Some(trap), _) => trap.to_string(),
            (None, Some(exit)) => format!("the plugin called exit({})", exit.0),
            (None, None) if instantiating => {
                return PluginError::Instantiate {
                    plugin,
                    detail: format!("{err:#}"),
                };
            }
            (None, None) => format!("{err:#}"),
        };
        let stderr = state.stderr_text();
        if !stderr.is_empty() {
            message.push_str("; plugin stderr: ");
            message.push_str(&stderr);
        }
        PluginError::Trap { plugin, message }
    }
}

/// Carries a hook's type-check failure out of `probe` to `classify`.
#[derive(Debug)]
struct Probe(Hook, wasmtime::Error);

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} export: {:#}", self.0.interface(), self.1)
    }
}

impl std::error::Error for Probe {}

fn bounded_verdict(verdict: Verdict) -> Verdict {
    match verdict {
        Verdict::Deny(reason) if reason.len() > MAX_DENY_REASON_BYTES => {
            Verdict::Deny(truncate_utf8(&reason, MAX_DENY_REASON_BYTES).to_owned())
        }
        verdict => verdict,
    }
}
