//! The wasm host: one wasmtime engine (pooling allocator, epoch deadlines), each policy
//! compiled once and served by a pool of configured instances. Every fault denies and drops
//! the instance that faulted.

use super::clock::{Clock, TICK};
use super::compiled::CompiledStore;
use super::pulled::Pulled;
use super::world::{Bound, Pre};
use super::{Decision, Needs, Request};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

/// The largest memory cap a policy may have (each pool slot is sized for it).
pub const MAX_MEMORY_BYTES: usize = 1 << 30;
/// Component instance slots in the pool, shared by every policy and every version still
/// draining.
const POOL_INSTANCES: u32 = 1000;
/// Core instances and tables: a Rust policy is one or two core instances, a Python one
/// (componentize-py) about 37, so the pool has room for many of each.
const POOL_CORE_INSTANCES: u32 = 20_000;
/// Linear memories (each reserves address space for `MAX_MEMORY_BYTES`, nothing more).
const POOL_MEMORIES: u32 = 2000;
/// Configured instances kept idle per policy at most; more are made on demand under load.
const MAX_IDLE: usize = 64;
/// An instance is retired (dropped, and a fresh one made when needed) after this many
/// decisions, or once its memory grew while deciding past three quarters of its cap: a guest
/// whose heap keeps growing (SpiderMonkey's does) is renewed before it would hit the cap and
/// fault.
const RETIRE_AFTER: u64 = 100_000;
/// Compiled modules kept for reuse (a few MB each at most).
const COMPILED_CACHE: usize = 16;
/// `configure` may take longer than a decision (it compiles rules), but not forever.
const MIN_CONFIGURE_TIMEOUT: Duration = Duration::from_secs(1);

/// Per-policy resource limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// CPU time one call may take before it is interrupted.
    pub timeout: Duration,
    /// The most linear memory one instance may grow to.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            timeout: Duration::from_millis(50),
            memory_bytes: 16 << 20,
        }
    }
}

/// Where a policy's settings come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettingsSource {
    /// No settings: the policy gets `{}`.
    Empty,
    /// JSON given in the config itself.
    Inline(String),
    /// A JSON file, watched for changes.
    File(PathBuf),
}

/// Where a policy's module comes from.
#[derive(Clone, Debug)]
pub enum ModuleSource {
    /// A `.wasm` component file, watched for changes.
    File(PathBuf),
    /// An OCI artifact, pulled and verified by `crate::artifacts`.
    Pulled(Arc<Pulled>),
}

impl ModuleSource {
    /// The file, or the OCI reference, for messages and the status.
    pub fn shown(&self) -> PathBuf {
        match self {
            ModuleSource::File(path) => path.clone(),
            ModuleSource::Pulled(pulled) => PathBuf::from(pulled.reference()),
        }
    }
}

impl PartialEq for ModuleSource {
    fn eq(&self, other: &ModuleSource) -> bool {
        match (self, other) {
            (ModuleSource::File(a), ModuleSource::File(b)) => a == b,
            (ModuleSource::Pulled(a), ModuleSource::Pulled(b)) => a.reference() == b.reference(),
            _ => false,
        }
    }
}

impl Eq for ModuleSource {}

/// A configured policy: what to load and with which limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySpec {
    /// The name used in logs, errors and the decision log.
    pub name: String,
    /// The component.
    pub module: ModuleSource,
    /// Its settings.
    pub settings: SettingsSource,
    /// Its limits.
    pub limits: Limits,
}

/// The bytes of a policy as read from disk, with their digests.
pub struct PolicySource {
    module: Arc<Vec<u8>>,
    settings: String,
    /// `sha256:<hex>` of the module.
    pub digest: String,
    /// `sha256:<hex>` of the settings.
    pub settings_digest: String,
}

impl PolicySpec {
    /// Reads the module and the settings.
    pub fn read(&self) -> Result<PolicySource, LoadError> {
        let module = match &self.module {
            ModuleSource::File(path) => {
                Arc::new(std::fs::read(path).map_err(|e| self.error(read_problem(path, e)))?)
            }
            ModuleSource::Pulled(pulled) => pulled
                .verified()
                .ok_or_else(|| {
                    self.error(LoadProblem::Read {
                        path: self.module.shown(),
                        reason: pulled
                            .look()
                            .error
                            .unwrap_or_else(|| "no verified module pulled yet".to_string()),
                    })
                })?
                .bytes
                .clone(),
        };
        let settings = match &self.settings {
            SettingsSource::Empty => "{}".to_string(),
            SettingsSource::Inline(json) => json.clone(),
            SettingsSource::File(path) => {
                std::fs::read_to_string(path).map_err(|e| self.error(read_problem(path, e)))?
            }
        };
        Ok(PolicySource {
            digest: sha256(module.as_slice()),
            settings_digest: sha256(settings.as_bytes()),
            module,
            settings,
        })
    }

    /// The files this policy is read from (a pulled module is not one: the puller reloads).
    pub fn watched_files(&self) -> Vec<&Path> {
        let mut files = Vec::new();
        if let ModuleSource::File(path) = &self.module {
            files.push(path.as_path());
        }
        if let SettingsSource::File(path) = &self.settings {
            files.push(path);
        }
        files
    }

    fn error(&self, problem: LoadProblem) -> LoadError {
        LoadError {
            policy: self.name.clone(),
            problem,
        }
    }
}

fn read_problem(path: &Path, e: std::io::Error) -> LoadProblem {
    LoadProblem::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A policy that could not be loaded; the previous version, if any, keeps serving.
#[derive(Debug, Clone, thiserror::Error)]
#[error("policy `{policy}`: {problem}")]
pub struct LoadError {
    /// The policy's configured name.
    pub policy: String,
    /// What went wrong.
    pub problem: LoadProblem,
}

/// What went wrong loading a policy.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadProblem {
    /// A file could not be read.
    #[error("cannot read {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The module is not a valid WebAssembly component.
    #[error("{} is not a valid WebAssembly component (build it with `cargo policies`): {reason}", path.display())]
    Compile {
        /// The module.
        path: PathBuf,
        /// The compiler's message.
        reason: String,
    },
    /// The component does not implement the policy world.
    #[error("{} does not implement the portcullis:policy world: {reason}", path.display())]
    World {
        /// The module.
        path: PathBuf,
        /// The linker's message.
        reason: String,
    },
    /// The limits are out of range.
    #[error("{0}")]
    Limits(String),
    /// The policy's `configure` refused its settings.
    #[error("the policy rejected its settings: {0}")]
    Settings(String),
    /// The policy faulted while being configured.
    #[error("{0}")]
    Fault(Fault),
}

/// Why a policy denied without deciding: its instance is dropped, never reused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// The CPU deadline passed.
    #[error("exceeded its {0} ms deadline")]
    Deadline(u128),
    /// The memory cap was hit.
    #[error("exceeded its memory cap of {0} MiB")]
    Memory(usize),
    /// The wasm stack overflowed (deep recursion).
    #[error("overflowed its stack")]
    StackOverflow,
    /// A panic (an `unreachable` trap in wasm) or another trap.
    #[error("trapped: {0}")]
    Trap(String),
    /// The decision granted actions that were not asked for.
    #[error("granted {0:?}, which the request did not ask for")]
    Overgrant(Vec<String>),
    /// A fresh instance could not be made or configured.
    #[error("could not make an instance: {0}")]
    Instantiate(String),
}

impl Fault {
    /// A short name for metrics and logs: `deadline`, `memory`, `stack_overflow`, `trap`,
    /// `overgrant` or `instantiate`.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Deadline(_) => "deadline",
            Fault::Memory(_) => "memory",
            Fault::StackOverflow => "stack_overflow",
            Fault::Trap(_) => "trap",
            Fault::Overgrant(_) => "overgrant",
            Fault::Instantiate(_) => "instantiate",
        }
    }
}

/// Compiled modules by digest, least recently used first.
type CompiledCache = Vec<(String, Pre<StoreState>)>;

/// The wasm engine shared by every policy.
#[derive(Clone)]
pub struct Host {
    engine: Engine,
    clock: Arc<Clock>,
    linker: Arc<Linker<StoreState>>,
    /// Recently compiled modules by digest, least recently used first.
    cache: Arc<Mutex<CompiledCache>>,
    /// Compiled code kept on disk between starts, when there is a place for it.
    store: Option<Arc<CompiledStore>>,
}

impl Host {
    /// Creates the engine and starts the clock of every policy deadline (its thread stops
    /// when the host and every policy it loaded are dropped).
    pub fn new() -> Result<Host, wasmtime::Error> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_CORE_INSTANCES)
            .total_memories(POOL_MEMORIES)
            .total_tables(POOL_CORE_INSTANCES)
            .max_memory_size(MAX_MEMORY_BYTES);
        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            .wasm_component_model(true);
        let engine = Engine::new(&config)?;
        let clock = Clock::start(&engine).map_err(wasmtime::Error::from)?;
        let linker = Arc::new(Linker::new(&engine));
        Ok(Host {
            engine,
            clock,
            linker,
            cache: Arc::default(),
            store: None,
        })
    }

    /// The same host, keeping compiled code in `store` and taking it from there.
    pub fn with_store(self, store: CompiledStore) -> Host {
        Host {
            store: Some(Arc::new(store)),
            ..self
        }
    }

    /// Compiles and configures a policy; on success it is ready to decide.
    pub fn load(&self, spec: &PolicySpec, source: PolicySource) -> Result<LoadedPolicy, LoadError> {
        let pre = self.compiled(spec, &source)?;
        self.build(spec, source, pre)
    }

    /// The compiled module for these bytes: from the cache when the same bytes were compiled
    /// before (a settings edit, a rollback, two policies sharing a module), else compiled now.
    fn compiled(
        &self,
        spec: &PolicySpec,
        source: &PolicySource,
    ) -> Result<Pre<StoreState>, LoadError> {
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(i) = cache
                .iter()
                .position(|(digest, _)| *digest == source.digest)
            {
                let entry = cache.remove(i);
                let pre = entry.1.clone();
                cache.push(entry);
                return Ok(pre);
            }
        }
        let pre = self.compile(spec, source)?;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= COMPILED_CACHE {
            cache.remove(0);
        }
        cache.push((source.digest.clone(), pre.clone()));
        Ok(pre)
    }

    fn build(
        &self,
        spec: &PolicySpec,
        source: PolicySource,
        pre: Pre<StoreState>,
    ) -> Result<LoadedPolicy, LoadError> {
        let fail = |problem| spec.error(problem);
        if spec.limits.memory_bytes > MAX_MEMORY_BYTES {
            return Err(fail(LoadProblem::Limits(format!(
                "memory cap of {} MiB is above the maximum of {} MiB",
                spec.limits.memory_bytes >> 20,
                MAX_MEMORY_BYTES >> 20
            ))));
        }
        if spec.limits.timeout.is_zero() {
            return Err(fail(LoadProblem::Limits(
                "the timeout must be above 0 ms".into(),
            )));
        }
        let mut policy = LoadedPolicy {
            needs: Needs::empty(),
            name: spec.name.clone(),
            digest: source.digest,
            settings_digest: source.settings_digest,
            loaded_at: SystemTime::now(),
            settings: source.settings,
            limits: spec.limits,
            engine: self.engine.clone(),
            clock: self.clock.clone(),
            // A policy whose instances hold several memories keeps fewer idle, so that one
            // policy cannot take the pool's memories from the others.
            max_idle: (POOL_MEMORIES as usize / 16 / pre.memories().max(1)).clamp(2, MAX_IDLE),
            pre,
            idle: Mutex::new(Vec::new()),
        };
        let mut instance = policy.instantiate().map_err(|e| match e {
            ConfigureError::Refused(message) => fail(LoadProblem::Settings(message)),
            ConfigureError::Fault(fault) => fail(LoadProblem::Fault(fault)),
        })?;
        // Asked once: what a configured policy needs does not change while it serves.
        let asked = {
            let _ticking = policy.clock.ticking();
            instance
                .bindings
                .needs(&mut instance.store)
                .map_err(|e| fail(LoadProblem::Fault(classify(e, &policy.limits))))?
        };
        policy.needs = asked;
        policy.release(instance);
        Ok(policy)
    }

    fn compile(
        &self,
        spec: &PolicySpec,
        source: &PolicySource,
    ) -> Result<Pre<StoreState>, LoadError> {
        let kept = self
            .store
            .as_ref()
            .and_then(|store| store.load(&self.engine, &source.digest));
        let component = match kept {
            Some(component) => component,
            None => {
                let component =
                    Component::new(&self.engine, source.module.as_slice()).map_err(|e| {
                        spec.error(LoadProblem::Compile {
                            path: spec.module.shown(),
                            reason: format!("{e:#}"),
                        })
                    })?;
                if let Some(store) = &self.store {
                    store.keep(&self.engine, &source.digest, &component);
                }
                component
            }
        };
        let world = |e: wasmtime::Error| {
            spec.error(LoadProblem::World {
                path: spec.module.shown(),
                reason: format!("{e:#}"),
            })
        };
        let pre = self.linker.instantiate_pre(&component).map_err(world)?;
        Pre::new(pre).map_err(world)
    }
}

/// A compiled, configured policy. Decisions run on pooled instances: each concurrent caller
/// takes its own, and an instance that faulted is dropped instead of going back.
pub struct LoadedPolicy {
    /// The facts it asked for after `configure`.
    needs: Needs,
    name: String,
    digest: String,
    settings_digest: String,
    loaded_at: SystemTime,
    settings: String,
    limits: Limits,
    engine: Engine,
    clock: Arc<Clock>,
    pre: Pre<StoreState>,
    idle: Mutex<Vec<Instance>>,
    /// Idle instances kept at most.
    max_idle: usize,
}

struct Instance {
    store: Store<StoreState>,
    bindings: Bound,
    /// Decisions made on it.
    decisions: u64,
    /// Its memory once configured: what a runtime needs (a Python guest's is most of its
    /// cap) is no growth.
    settled: usize,
}

enum ConfigureError {
    Refused(String),
    Fault(Fault),
}

impl LoadedPolicy {
    /// The policy's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `sha256:<hex>` of the module.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// `sha256:<hex>` of the settings.
    pub fn settings_digest(&self) -> &str {
        &self.settings_digest
    }

    /// When this version was loaded.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// The facts the policy needs (nothing for a module of an older world).
    pub fn needs(&self) -> Needs {
        self.needs
    }

    /// The policy world the module was built against: `0.3.0`; `0.2.0` for a module whose
    /// requests carry no time and facts; `0.1.0` for one whose accounts carry no source and
    /// claims either.
    pub fn world(&self) -> &'static str {
        self.pre.version()
    }

    /// Decides one request. A fault (trap, deadline, memory cap, an action granted that was
    /// not asked for) is returned as an error: the caller must treat it as a denial.
    pub fn authorize(&self, request: &Request) -> Result<Decision, Fault> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut instance = match idle {
            Some(instance) => instance,
            None => self.instantiate().map_err(|e| match e {
                ConfigureError::Refused(message) => {
                    Fault::Instantiate(format!("configure refused the settings: {message}"))
                }
                ConfigureError::Fault(fault) => fault,
            })?,
        };
        instance
            .store
            .set_epoch_deadline(deadline_ticks(self.limits.timeout));
        let _ticking = self.clock.ticking();
        let decision = instance
            .bindings
            .authorize(&mut instance.store, request)
            .map_err(|e| classify(e, &self.limits))?;
        let unasked: Vec<String> = decision
            .granted
            .iter()
            .filter(|a| !request.scope.actions.contains(a))
            .cloned()
            .collect();
        if !unasked.is_empty() {
            return Err(Fault::Overgrant(unasked));
        }
        self.release(instance);
        Ok(decision)
    }

    fn instantiate(&self) -> Result<Instance, ConfigureError> {
        let mut store = Store::new(
            &self.engine,
            StoreState {
                memory_cap: self.limits.memory_bytes,
                grown: 0,
            },
        );
        store.limiter(|state| state);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks(
            (self.limits.timeout * 20).max(MIN_CONFIGURE_TIMEOUT),
        ));
        let fault = |e| ConfigureError::Fault(classify(e, &self.limits));
        let _ticking = self.clock.ticking();
        let bindings = self.pre.instantiate(&mut store).map_err(fault)?;
        bindings
            .configure(&mut store, &self.settings)
            .map_err(fault)?
            .map_err(ConfigureError::Refused)?;
        let settled = store.data().grown;
        Ok(Instance {
            store,
            bindings,
            decisions: 0,
            settled,
        })
    }

    /// Puts an instance back for the next decision, unless it is due for retirement.
    fn release(&self, mut instance: Instance) {
        instance.decisions += 1;
        let grown = instance.store.data().grown;
        let growing = grown > instance.settled && grown > self.limits.memory_bytes / 4 * 3;
        if growing || instance.decisions >= RETIRE_AFTER {
            tracing::debug!(policy = %self.name, decisions = instance.decisions, memory = grown,
                "instance retired");
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(instance);
        }
    }
}

/// Epochs to wait so that at least `timeout` passes: the current tick is already partly gone.
fn deadline_ticks(timeout: Duration) -> u64 {
    let ticks = timeout.as_nanos().div_ceil(TICK.as_nanos());
    u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1)
}

fn classify(error: wasmtime::Error, limits: &Limits) -> Fault {
    if error.downcast_ref::<MemoryCapExceeded>().is_some() {
        return Fault::Memory(limits.memory_bytes >> 20);
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Fault::Deadline(limits.timeout.as_millis()),
        Some(Trap::StackOverflow) => Fault::StackOverflow,
        Some(Trap::UnreachableCodeReached) => Fault::Trap("panicked (wasm `unreachable`)".into()),
        Some(trap) => Fault::Trap(trap.to_string()),
        None => Fault::Instantiate(format!("{error:#}")),
    }
}

/// What each store carries: the memory cap its limiter enforces.
pub struct StoreState {
    memory_cap: usize,
    /// The largest memory it grew to.
    grown: usize,
}

/// Raised by the limiter so that a memory-cap trap can be told from other traps.
#[derive(Debug, thiserror::Error)]
#[error("memory cap exceeded")]
struct MemoryCapExceeded;

impl wasmtime::ResourceLimiter for StoreState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            return Err(MemoryCapExceeded.into());
        }
        self.grown = self.grown.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
