//! The engine, the linker and the epoch ticker shared by all plugins.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::random::WasiRandom;

use crate::cache::ComponentCache;
use crate::plugin::{self, LoadedPlugin, PluginSpec};
use crate::state::CallState;
use crate::{PluginError, bindings};

/// Sizing of a [`PluginHost`]. Every number bounds something; the defaults
/// suit a server that runs a handful of plugins.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Plugin calls that may run at the same time, over all plugins. Each
    /// running call holds one instance slot of the pooling allocator; a call
    /// that finds no free slot waits (at most its plugin's deadline) and then
    /// fails with [`PluginError::Busy`].
    pub max_concurrent_calls: u32,
    /// Ceiling for any plugin's memory limit, and the size of the pooling
    /// allocator's memory slots.
    pub max_memory_bytes: usize,
    /// Ceiling for any plugin's call deadline.
    pub max_deadline: Duration,
    /// Largest plugin binary accepted.
    pub max_wasm_bytes: usize,
    /// How often the ticker thread advances the engine's epoch; the
    /// granularity of deadlines.
    pub epoch_tick: Duration,
    /// Wasm stack a call may use.
    pub max_wasm_stack: usize,
    /// Compiled components kept in memory (keyed by SHA-256 of the bytes), so
    /// reloading the same binary does not compile it again.
    pub max_cached_components: usize,
    /// Optional directory for compiled code, so a restart does not recompile.
    /// Must be private to this server (see `cache.rs`): whoever can write
    /// there can run native code in this process.
    pub cache_dir: Option<PathBuf>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            max_concurrent_calls: 64,
            max_memory_bytes: 64 << 20,
            max_deadline: Duration::from_secs(10),
            max_wasm_bytes: 32 << 20,
            epoch_tick: Duration::from_millis(1),
            max_wasm_stack: 512 << 10,
            max_cached_components: 64,
            cache_dir: None,
        }
    }
}

/// The host could not be created.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("invalid plugin host options: {0}")]
    InvalidOptions(String),
    #[error("cannot create the plugin engine: {0}")]
    Engine(String),
    #[error("cannot start the plugin epoch ticker: {0}")]
    Ticker(std::io::Error),
}

/// Loads plugins. Cheap to share (`Clone` is an `Arc` clone).
///
/// The epoch ticker runs while the host or any plugin it loaded is alive:
/// a [`LoadedPlugin`] keeps what it needs (including the ticker, so its
/// deadlines keep working) even after the `PluginHost` is dropped.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<HostInner>,
}

pub(crate) struct HostInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<CallState>,
    pub(crate) slots: Slots,
    pub(crate) options: HostOptions,
    pub(crate) cache: ComponentCache,
    // Dropped last of all: stops and joins the ticker thread.
    _ticker: Ticker,
}

/// Core instances, memories and tables one component may use. Rust plugins
/// need about four core instances (program, shims, fixups); the rest is
/// headroom for other toolchains.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MAX_MEMORIES_PER_COMPONENT: u32 = 2;
const MAX_TABLES_PER_COMPONENT: u32 = 8;
/// Dirtied bytes of a memory (a table) reset with `memset` when its slot is
/// freed, instead of `madvise`: a call dirties a few pages (its stack, a
/// little heap), and `madvise` on every call costs a TLB shootdown on every
/// core and page faults on the next use — measured at a third of a
/// 64-client put workload's throughput. Kept resident per used slot.
const MEMORY_KEEP_RESIDENT: usize = 1 << 20;
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

impl PluginHost {
    /// Creates the engine (pooling allocator sized from `options`, epoch
    /// interruption) and starts the epoch ticker.
    pub fn new(options: HostOptions) -> Result<Self, HostError> {
        validate_options(&options)?;
        let engine =
            Engine::new(&engine_config(&options)).map_err(|e| HostError::Engine(e.to_string()))?;
        let linker = make_linker(&engine).map_err(|e| HostError::Engine(e.to_string()))?;
        let ticker = Ticker::start(&engine, options.epoch_tick).map_err(HostError::Ticker)?;
        let cache = ComponentCache::new(
            &engine,
            options.max_cached_components,
            options.cache_dir.clone(),
        );
        Ok(PluginHost {
            inner: Arc::new(HostInner {
                slots: Slots::new(options.max_concurrent_calls),
                engine,
                linker,
                options,
                cache,
                _ticker: ticker,
            }),
        })
    }

    /// Compiles (or finds in the cache), links and checks a plugin. Fails
    /// with an error naming the plugin if the component is not a Cairn
    /// plugin, imports anything the host does not provide, or cannot be
    /// instantiated within its limits.
    pub fn load(&self, spec: PluginSpec) -> Result<Arc<LoadedPlugin>, PluginError> {
        plugin::load(&self.inner, spec).map(Arc::new)
    }

    /// The options the host was created with.
    pub fn options(&self) -> &HostOptions {
        &self.inner.options
    }
}

fn validate_options(o: &HostOptions) -> Result<(), HostError> {
    let bad = |what: &str| Err(HostError::InvalidOptions(what.to_owned()));
    if o.max_concurrent_calls == 0 || o.max_concurrent_calls > 10_000 {
        return bad("max_concurrent_calls must be in 1..=10000");
    }
    if o.max_memory_bytes < 64 << 10 || o.max_memory_bytes > 4 << 30 {
        return bad("max_memory_bytes must be between 64 KiB and 4 GiB");
    }
    if o.epoch_tick.is_zero() || o.epoch_tick > Duration::from_secs(1) {
        return bad("epoch_tick must be in (0, 1s]");
    }
    if o.max_deadline < o.epoch_tick {
        return bad("max_deadline must be at least one epoch tick");
    }
    if o.max_wasm_bytes == 0 || o.max_cached_components == 0 || o.max_wasm_stack < 64 << 10 {
        return bad(
            "max_wasm_bytes and max_cached_components must be positive, max_wasm_stack >= 64 KiB",
        );
    }
    Ok(())
}

fn engine_config(o: &HostOptions) -> Config {
    let calls = o.max_concurrent_calls;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(calls)
        .total_core_instances(calls.saturating_mul(MAX_CORE_INSTANCES_PER_COMPONENT))
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .total_memories(calls.saturating_mul(MAX_MEMORIES_PER_COMPONENT))
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .total_tables(calls.saturating_mul(MAX_TABLES_PER_COMPONENT))
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .max_memory_size(o.max_memory_bytes)
        .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        // Linux >= 6.7: find the pages a call dirtied and reset only those.
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .wasm_component_model(true)
        // Component-model async (WASI p3) is not part of the contract; turning
        // it off keeps per-store setup and host→guest calls cheaper.
        .concurrency_support(false)
        .epoch_interruption(true)
        .max_wasm_stack(o.max_wasm_stack)
        .cranelift_opt_level(OptLevel::Speed)
        // Same answer on every machine for the same input: canonical NaNs.
        .cranelift_nan_canonicalization(true);
    config
}

/// Links the host interface and the capability-free part of WASI. Left out
/// on purpose: `wasi:filesystem`, `wasi:sockets` and `wasi:clocks` — a plugin
/// importing them is refused at load. (Clocks are left out rather than
/// frozen because `monotonic-clock.subscribe-duration` would let a plugin
/// sleep inside the host, where epochs cannot interrupt it.)
fn make_linker(engine: &Engine) -> wasmtime::Result<Linker<CallState>> {
    use wasmtime_wasi::p2::bindings::{cli, random, sync};

    let mut linker = Linker::new(engine);
    let l = &mut linker;
    bindings::Policy::add_to_linker::<CallState, HasSelf<CallState>>(l, |s| s)?;

    sync::io::error::add_to_linker::<CallState, HasTable>(l, |s| s.ctx().table)?;
    sync::io::poll::add_to_linker::<CallState, HasTable>(l, |s| s.ctx().table)?;
    sync::io::streams::add_to_linker::<CallState, HasTable>(l, |s| s.ctx().table)?;
    cli::exit::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::environment::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::stdin::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::stdout::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::stderr::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_input::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_output::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_stdin::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_stdout::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_stderr::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    random::random::add_to_linker::<CallState, WasiRandom>(l, |s| s.ctx().ctx.random())?;
    random::insecure::add_to_linker::<CallState, WasiRandom>(l, |s| s.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<CallState, WasiRandom>(l, |s| s.ctx().ctx.random())?;
    Ok(linker)
}

/// `wasi:io` works on the store's resource table only.
struct HasTable;

impl wasmtime::component::HasData for HasTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// A counting semaphore over the pooling allocator's instance slots, so that
/// a burst of calls waits for a slot instead of failing inside wasmtime.
pub(crate) struct Slots {
    state: Mutex<SlotState>,
    freed: Condvar,
}

struct SlotState {
    free: u32,
    /// Callers blocked in `acquire`. A release wakes one only when there is
    /// one: `Condvar::notify_one` is a futex syscall even with no waiter,
    /// a measurable share of a microseconds-long call.
    waiting: u32,
}

pub(crate) struct SlotGuard<'a>(&'a Slots);

impl Slots {
    fn new(n: u32) -> Self {
        Slots {
            state: Mutex::new(SlotState {
                free: n,
                waiting: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// Takes a slot, waiting at most `wait`.
    pub(crate) fn acquire(&self, wait: Duration) -> Option<SlotGuard<'_>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.free == 0 {
            let deadline = Instant::now() + wait;
            state.waiting += 1;
            while state.free == 0 {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    state.waiting -= 1;
                    return None;
                };
                state = self
                    .freed
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            state.waiting -= 1;
        }
        state.free -= 1;
        Some(SlotGuard(self))
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.free += 1;
        if state.waiting > 0 {
            self.0.freed.notify_one();
        }
    }
}

/// The thread that advances the engine's epoch every tick, which is what
/// makes deadlines fire. Stops (and is joined) when dropped.
struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: &Engine, tick: Duration) -> std::io::Result<Ticker> {
        // A weak handle: the ticker must not keep the engine alive.
        let engine = engine.weak();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("cairn-plugin-epoch".into())
            .spawn(move || {
                // `recv_timeout` doubles as the sleep; a message or a dropped
                // sender both mean "stop".
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })?;
        Ok(Ticker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread only sleeps and bumps a counter; it cannot panic in
            // a way worth reporting.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_time_out_and_hand_over_to_a_waiter() {
        let slots = Arc::new(Slots::new(1));
        let held = slots.acquire(Duration::ZERO).expect("a free slot");
        assert!(slots.acquire(Duration::from_millis(20)).is_none());
        assert_eq!(
            slots.state.lock().unwrap().waiting,
            0,
            "a timed-out waiter leaves"
        );

        let waiter = {
            let slots = Arc::clone(&slots);
            std::thread::spawn(move || slots.acquire(Duration::from_secs(10)).is_some())
        };
        while slots.state.lock().unwrap().waiting == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(held);
        assert!(waiter.join().unwrap(), "the release woke the waiter");
        let state = slots.state.lock().unwrap();
        assert_eq!((state.free, state.waiting), (1, 0));
    }
}
