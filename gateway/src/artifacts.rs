//! Policies shipped as signed OCI artifacts (`[[policy]] oci`): the module is pulled from a
//! registry, and serves only once a cosign signature by a `signed_by` key verifies over the
//! artifact's manifest, which names the module's digest. The last verified module is kept in
//! `[cache] dir` with its evidence (manifest, payload, signature), verified again when read
//! back, so a start while the registry is away serves what served before. A followed tag is
//! looked at every `poll_seconds`, and at once on SIGHUP.

use crate::config;
use crate::oci::{self, Auth, Minter, Reference, Repository};
use crate::policy::pulled::{Module, Pulled};
use crate::policy::{ModuleSource, PolicySpec};
use crate::signatures::{self, Keys, Signer, Stored};
use hyper::body::Bytes;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The config media type of a WebAssembly component artifact (the CNCF `wkg` convention).
pub const CONFIG_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The media type of its one layer, the component.
pub const LAYER_TYPE: &str = "application/wasm";
/// Modules larger than this are refused (a Python policy is about 40 MB).
const MAX_MODULE: usize = 256 << 20;
/// How long a start waits for the registry before it serves the cached module.
const START_WAIT: Duration = Duration::from_secs(10);
/// How often the follower wakes to see which tag is due.
const TICK: Duration = Duration::from_millis(250);

/// The policies of one config whose modules come from registries.
pub struct Artifacts {
    list: Vec<Arc<Artifact>>,
    /// Wakes the follower (SIGHUP); dropping it stops the follower.
    wake: Mutex<Option<SyncSender<()>>>,
}

/// One policy's artifact: where it is, who must have signed it, and how to get in.
struct Artifact {
    policy: String,
    reference: Reference,
    signed_by: Vec<String>,
    poll: Duration,
    origin: String,
    ca: Option<PathBuf>,
    login: Login,
    cache: PathBuf,
    pulled: Arc<Pulled>,
}

/// How Portcullis gets into an artifact's registry.
enum Login {
    Anonymous,
    Minted(Minter),
    Password { username: String, file: PathBuf },
}

/// What a pull verified: the module and the evidence that it may serve.
struct Verified {
    manifest: Bytes,
    digest: String,
    stored: Stored,
    key: String,
    module: Bytes,
}

/// The registry a config forwards to or reads, with what lets Portcullis in there.
pub struct OwnRegistry {
    /// Its origin (`scheme://host:port`).
    pub origin: String,
    /// PEM certificates trusted for it.
    pub ca: Option<PathBuf>,
    /// A token Portcullis signs (token-server mode), or none (gateway mode).
    pub minter: Option<Minter>,
}

impl OwnRegistry {
    /// The registry a gateway-mode config forwards to: it trusts Portcullis.
    pub fn upstream(config: &config::Config) -> Option<OwnRegistry> {
        let upstream = config.upstream.as_ref()?;
        Some(OwnRegistry {
            origin: origin_of(&upstream.url)?,
            ca: upstream.ca.clone(),
            minter: None,
        })
    }

    /// The registry at `url` (token-server mode's `[console] registry_url`), which trusts
    /// the tokens `minter` signs.
    pub fn trusting(url: &str, ca: Option<PathBuf>, minter: Minter) -> Option<OwnRegistry> {
        Some(OwnRegistry {
            origin: origin_of(url)?,
            ca,
            minter: Some(minter),
        })
    }
}

/// `scheme://host:port` of a configured URL.
fn origin_of(url: &str) -> Option<String> {
    let uri = config::origin(url).ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
}

/// Pulls and verifies (or reads back from the cache) the artifacts of `specs` once, for the
/// tools that decide without serving (`policy test`, `policy replay`, `check`): the registry
/// a gateway-mode config forwards to is reached as the gateway reaches it, others as
/// `[registries]` says.
pub fn pull_once(config: &config::Config, specs: &[&PolicySpec]) -> Result<(), String> {
    let keys = Keys::load(&config.signatures.keys)?;
    let own: Vec<OwnRegistry> = OwnRegistry::upstream(config).into_iter().collect();
    Artifacts::start(config, specs, &own, &keys).map(drop)
}

impl Artifacts {
    /// The artifacts of `specs` (the `[[policy]]` and `[[shadow]]` blocks of `config`, in
    /// that order), each pulled and verified once, or read back from the cache when its
    /// registry cannot be reached: a policy with neither fails the start.
    pub fn start(
        config: &config::Config,
        specs: &[&PolicySpec],
        own: &[OwnRegistry],
        keys: &Keys,
    ) -> Result<Artifacts, String> {
        let blocks = config.policies.iter().chain(&config.shadows);
        let mut list = Vec::new();
        for (block, spec) in blocks.zip(specs) {
            let (ModuleSource::Pulled(pulled), Some(text)) = (&spec.module, &block.oci) else {
                continue;
            };
            let reference = Reference::parse(text)?;
            let own = own
                .iter()
                .find(|own| authority(&own.origin) == reference.registry);
            let (origin, ca, login) = match (own, config.registries.get(&reference.registry)) {
                (Some(own), _) => (
                    own.origin.clone(),
                    own.ca.clone(),
                    own.minter.clone().map_or(Login::Anonymous, Login::Minted),
                ),
                (None, Some(login)) => (
                    reference.origin(),
                    login.ca.clone(),
                    Login::Password {
                        username: login.username.clone(),
                        file: login.password_file.clone(),
                    },
                ),
                (None, None) => (reference.origin(), None, Login::Anonymous),
            };
            list.push(Arc::new(Artifact {
                policy: block.name.clone(),
                signed_by: block.signed_by.clone(),
                poll: Duration::from_secs(block.poll_seconds),
                origin,
                ca,
                login,
                cache: config.cache.dir.clone().unwrap_or_default(),
                pulled: pulled.clone(),
                reference,
            }));
        }
        let artifacts = Artifacts {
            list,
            wake: Mutex::new(None),
        };
        artifacts.first_pull(keys)?;
        Ok(artifacts)
    }

    /// Pulls every artifact on a thread of its own (a start runs outside any runtime, a
    /// reload may run inside one); one that cannot be pulled serves from the cache.
    fn first_pull(&self, keys: &Keys) -> Result<(), String> {
        if self.list.is_empty() {
            return Ok(());
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = runtime()?;
                    for artifact in &self.list {
                        let pulled = runtime.block_on(async {
                            tokio::time::timeout(START_WAIT, artifact.pull(keys)).await
                        });
                        let pulled = pulled.unwrap_or_else(|_| {
                            Err(format!("no answer within {}s", START_WAIT.as_secs()))
                        });
                        match pulled {
                            Ok(verified) => artifact.serve(verified, false),
                            Err(why) => {
                                let cached = artifact.cached(keys).map_err(|cache| {
                                    format!(
                                        "policy `{}`: cannot pull {}: {why}; and no verified \
                                         module in [cache] dir: {cache}",
                                        artifact.policy, artifact.reference
                                    )
                                })?;
                                tracing::warn!(policy = %artifact.policy, reference = %artifact.reference, error = %why,
                                    "cannot pull the policy; serving the verified module kept in the cache");
                                artifact.serve(cached, true);
                                artifact.pulled.looked(Some(format!(
                                    "serving the verified module from the cache: {why}"
                                )));
                            }
                        }
                    }
                    Ok(())
                })
                .join()
                .unwrap_or_else(|_| Err("the pulling thread failed".into()))
        })
    }

    /// Looks at followed tags (and at pinned ones still served from the cache) on a thread
    /// of its own, until these artifacts are dropped: a newly verified module is handed to
    /// its policy and `reload` is called. `keys` gives the keys to verify with, or None when
    /// the config they belong to is gone.
    pub fn follow(
        &self,
        keys: impl Fn() -> Option<Arc<Keys>> + Send + 'static,
        reload: impl Fn() + Send + 'static,
    ) -> std::io::Result<()> {
        if self.list.is_empty() {
            return Ok(());
        }
        let (wake, woken) = sync_channel(1);
        *self.wake.lock().unwrap_or_else(PoisonError::into_inner) = Some(wake);
        let list = self.list.clone();
        std::thread::Builder::new()
            .name("policy-artifacts".into())
            .spawn(move || follow(&list, &woken, keys, reload))
            .map(|_| ())
    }

    /// Looks at every artifact now (SIGHUP).
    pub fn wake(&self) {
        if let Some(wake) = &*self.wake.lock().unwrap_or_else(PoisonError::into_inner) {
            // A wake already waiting does the same.
            let _ = wake.try_send(());
        }
    }
}

fn follow(
    list: &[Arc<Artifact>],
    woken: &Receiver<()>,
    keys: impl Fn() -> Option<Arc<Keys>>,
    reload: impl Fn(),
) {
    let Ok(runtime) = runtime() else {
        tracing::error!("cannot start a runtime for the policy artifacts: tags are not followed");
        return;
    };
    let mut last: Vec<Instant> = vec![Instant::now(); list.len()];
    loop {
        let all = match woken.recv_timeout(TICK) {
            Ok(()) => true,
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let Some(keys) = keys() else {
            return;
        };
        let mut changed = false;
        for (artifact, last) in list.iter().zip(&mut last) {
            let due = last.elapsed() >= artifact.poll;
            let cached = artifact
                .pulled
                .verified()
                .is_some_and(|module| module.from_cache);
            if !(all || due && (artifact.reference.digest.is_none() || cached)) {
                continue;
            }
            *last = Instant::now();
            let pulled = runtime.block_on(async {
                tokio::time::timeout(artifact.poll, artifact.pull(&keys)).await
            });
            match pulled.unwrap_or_else(|_| Err("no answer within poll_seconds".into())) {
                Ok(verified) => {
                    let serving = artifact.pulled.verified();
                    let same = serving
                        .as_ref()
                        .is_some_and(|m| m.manifest == verified.digest && !m.from_cache);
                    if !same {
                        tracing::info!(policy = %artifact.policy, reference = %artifact.reference,
                            digest = %verified.digest, key = %verified.key, "a newly signed policy module verified");
                        artifact.serve(verified, false);
                        changed = true;
                    }
                    artifact.pulled.looked(None);
                }
                Err(why) => {
                    let why = if cached {
                        format!("serving the verified module from the cache: {why}")
                    } else {
                        why
                    };
                    if artifact.pulled.look().error.as_deref() != Some(&why) {
                        tracing::warn!(policy = %artifact.policy, reference = %artifact.reference, error = %why,
                            "the policy's artifact does not serve; the last verified module keeps serving");
                    }
                    artifact.pulled.looked(Some(why));
                }
            }
        }
        if changed {
            reload();
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
}

impl Artifact {
    /// The repository, with the credentials the config gives.
    fn repository(&self) -> Result<Repository, String> {
        let auth = match &self.login {
            Login::Anonymous => Auth::Anonymous,
            Login::Minted(minter) => Auth::Minted(minter.clone()),
            Login::Password { username, file } => Auth::Login {
                username: username.clone(),
                password: first_line(file)?,
            },
        };
        Repository::new(
            &self.origin,
            self.ca.clone(),
            &self.reference.repository,
            &["pull"],
            auth,
        )
    }

    /// Pulls the artifact and verifies it: its manifest, a signature by a `signed_by` key
    /// over that manifest, and the module against the digest the manifest names.
    async fn pull(&self, keys: &Keys) -> Result<Verified, String> {
        let repository = self.repository()?;
        let (digest, manifest) = repository.manifest(self.reference.point()).await?;
        if let Some(pinned) = &self.reference.digest
            && *pinned != digest
        {
            return Err(format!(
                "the registry served {digest}, not the pinned {pinned}"
            ));
        }
        let signature_manifest = signatures::manifest_of(&repository, repository.name(), &digest)
            .await?
            .ok_or_else(|| {
                format!(
                    "{digest} is not signed: no {}",
                    signatures::tag_of(&digest).unwrap_or_default()
                )
            })?;
        let stored =
            signatures::stored_in(&repository, repository.name(), &signature_manifest.1).await?;
        let (layer, key, stored) = self.check(&manifest, &digest, stored, keys)?;
        let module = repository.blob(&layer, MAX_MODULE).await?;
        Ok(Verified {
            manifest,
            digest,
            stored,
            key,
            module,
        })
    }

    /// Whether `manifest` (of `digest`) is a component artifact signed by a `signed_by` key
    /// in one of `stored`: the component's layer digest, the key and that signature.
    fn check(
        &self,
        manifest: &[u8],
        digest: &str,
        stored: Vec<Stored>,
        keys: &Keys,
    ) -> Result<(String, String, Stored), String> {
        let layer = component_layer(manifest)?;
        let repository = &self.reference.repository;
        let mut why = Vec::new();
        for signature in stored {
            if let Err(e) = signatures::payload_names(&signature.payload, digest, repository) {
                why.push(e);
                continue;
            }
            let signers = keys.signers(
                std::slice::from_ref(&signature),
                digest,
                repository,
                Some(&self.signed_by),
            );
            match signers.into_iter().next() {
                Some(key) => return Ok((layer, key, signature)),
                None => why.push(format!("not signed by {}", self.signed_by.join(" or "))),
            }
        }
        if why.is_empty() {
            why.push("no cosign signature layer".into());
        }
        Err(format!(
            "{digest} has no valid signature by {}: {}",
            self.signed_by.join(" or "),
            why.join("; ")
        ))
    }

    /// Hands `verified` to the policy and keeps it in the cache (a cache that cannot be
    /// written costs a start while the registry is away, not this module: logged).
    fn serve(&self, verified: Verified, from_cache: bool) {
        if !from_cache && let Err(e) = self.keep(&verified) {
            tracing::warn!(policy = %self.policy, error = %e, "cannot keep the verified module in [cache] dir");
        }
        self.pulled.set_verified(Module {
            bytes: Arc::new(verified.module.to_vec()),
            manifest: verified.digest,
            key: verified.key,
            from_cache,
        });
    }

    /// `<dir>/policies/<sha256 of the reference>.json` (the evidence) and
    /// `<dir>/modules/sha256-<hex>.wasm` (the module, by its digest).
    fn paths(&self, module_digest: &str) -> (PathBuf, PathBuf) {
        let reference = crate::console::manifest::digest_of(self.reference.to_string().as_bytes());
        let name = reference.trim_start_matches("sha256:");
        (
            self.cache.join("policies").join(format!("{name}.json")),
            self.cache
                .join("modules")
                .join(format!("{}.wasm", module_digest.replace(':', "-"))),
        )
    }

    fn keep(&self, verified: &Verified) -> Result<(), String> {
        let layer = component_layer(&verified.manifest)?;
        let (evidence, module) = self.paths(&layer);
        let b64 = |bytes: &[u8]| data_encoding::BASE64.encode(bytes);
        let kept = serde_json::json!({
            "reference": self.reference.to_string(),
            "manifest": b64(&verified.manifest),
            "payload": b64(&verified.stored.payload),
            "signature": b64(&verified.stored.signature),
        });
        write_whole(&module, &verified.module)?;
        write_whole(&evidence, kept.to_string().as_bytes())
    }

    /// The module kept in the cache, verified again as if it had just been pulled.
    fn cached(&self, keys: &Keys) -> Result<Verified, String> {
        let (evidence, _) = self.paths("");
        let text = std::fs::read(&evidence).map_err(|e| format!("{}: {e}", evidence.display()))?;
        #[derive(serde::Deserialize)]
        struct Kept {
            reference: String,
            manifest: String,
            payload: String,
            signature: String,
        }
        let kept: Kept =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", evidence.display()))?;
        if kept.reference != self.reference.to_string() {
            return Err(format!(
                "{} keeps {}, not {}",
                evidence.display(),
                kept.reference,
                self.reference
            ));
        }
        let b64 = |text: &str| {
            data_encoding::BASE64
                .decode(text.as_bytes())
                .map_err(|e| format!("{}: {e}", evidence.display()))
        };
        let manifest = Bytes::from(b64(&kept.manifest)?);
        let digest = crate::console::manifest::digest_of(&manifest);
        if let Some(pinned) = &self.reference.digest
            && *pinned != digest
        {
            return Err(format!(
                "{} keeps {digest}, not {pinned}",
                evidence.display()
            ));
        }
        let stored = Stored {
            payload: Bytes::from(b64(&kept.payload)?),
            signature: b64(&kept.signature)?,
        };
        let (layer, key, stored) = self.check(&manifest, &digest, vec![stored], keys)?;
        let (_, module_path) = self.paths(&layer);
        let module =
            std::fs::read(&module_path).map_err(|e| format!("{}: {e}", module_path.display()))?;
        if crate::console::manifest::digest_of(&module) != layer {
            return Err(format!(
                "{} is not the module the signed manifest names: it was changed",
                module_path.display()
            ));
        }
        Ok(Verified {
            manifest,
            digest,
            stored,
            key,
            module: Bytes::from(module),
        })
    }
}

/// The digest of the one `application/wasm` layer of a component artifact's manifest.
fn component_layer(manifest: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Descriptor {
        #[serde(rename = "mediaType")]
        media_type: String,
        digest: String,
        size: u64,
    }
    #[derive(serde::Deserialize)]
    struct Manifest {
        config: Descriptor,
        layers: Vec<Descriptor>,
    }
    let parsed: Manifest =
        serde_json::from_slice(manifest).map_err(|e| format!("not an OCI image manifest: {e}"))?;
    if parsed.config.media_type != CONFIG_TYPE {
        return Err(format!(
            "not a WebAssembly component artifact: its config is {:?}, not {CONFIG_TYPE:?}",
            parsed.config.media_type
        ));
    }
    match parsed.layers.as_slice() {
        [layer] if !oci::is_digest(&layer.digest) => Err(format!(
            "the module's digest {:?} is not sha256:<64 hex>",
            layer.digest
        )),
        [layer] if layer.media_type == LAYER_TYPE && layer.size <= MAX_MODULE as u64 => {
            Ok(layer.digest.clone())
        }
        [layer] if layer.media_type == LAYER_TYPE => Err(format!(
            "the module is {} bytes, more than {MAX_MODULE}",
            layer.size
        )),
        _ => Err(format!(
            "a component artifact has exactly one {LAYER_TYPE} layer"
        )),
    }
}

/// Writes `bytes` to `path` whole: beside it first, then renamed over it.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let beside = path.with_extension("partial");
    std::fs::write(&beside, bytes)
        .and_then(|()| std::fs::rename(&beside, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The first line of a secret file.
fn first_line(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// `host:port` of `scheme://host:port`.
fn authority(origin: &str) -> &str {
    origin.split_once("://").map_or(origin, |(_, rest)| rest)
}

/// Publishes `module` as a component artifact at `reference` (`portcullis policy push`),
/// signed by `signer` when given: returns the manifest's digest.
pub async fn push(
    module: Bytes,
    reference: &Reference,
    signer: Option<&Signer>,
    auth: Auth,
) -> Result<String, String> {
    let repository = Repository::new(
        &reference.origin(),
        None,
        &reference.repository,
        &["pull", "push"],
        auth,
    )?;
    let (config, manifest) = artifact(&module);
    repository.push_blob(config).await?;
    repository.push_blob(module).await?;
    let digest = crate::console::manifest::digest_of(&manifest);
    let point = reference.tag.as_deref().unwrap_or(&digest).to_string();
    repository
        .push_manifest(&point, manifest, oci::MANIFEST_TYPE)
        .await?;
    if let Some(signer) = signer {
        signatures::attach(&repository, signer, &reference.registry, &digest).await?;
    }
    Ok(digest)
}

/// The artifact's config and its manifest naming the config and the module.
fn artifact(module: &[u8]) -> (Bytes, Bytes) {
    let module_digest = crate::console::manifest::digest_of(module);
    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [module_digest],
    });
    let config = Bytes::from(config.to_string());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::MANIFEST_TYPE,
        "config": {
            "mediaType": CONFIG_TYPE,
            "digest": crate::console::manifest::digest_of(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": LAYER_TYPE,
            "digest": module_digest,
            "size": module.len(),
        }],
    });
    (config, Bytes::from(manifest.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_component_artifact_is_a_policy() {
        let (_, manifest) = artifact(b"\0asm component bytes");
        let layer = component_layer(&manifest).expect("ours is one");
        assert_eq!(
            layer,
            crate::console::manifest::digest_of(b"\0asm component bytes")
        );
        let text = String::from_utf8(manifest.to_vec()).expect("utf-8");
        let image = text.replace(CONFIG_TYPE, "application/vnd.oci.image.config.v1+json");
        assert!(
            component_layer(image.as_bytes())
                .expect_err("an image")
                .contains("not a WebAssembly component artifact")
        );
        let tar = text.replace(
            "\"application/wasm\"",
            "\"application/vnd.oci.image.layer.v1.tar\"",
        );
        assert!(
            component_layer(tar.as_bytes())
                .expect_err("a tar layer")
                .contains("exactly one application/wasm layer")
        );
        let huge = text.replace("\"size\":20", &format!("\"size\":{}", MAX_MODULE + 1));
        assert!(
            component_layer(huge.as_bytes())
                .expect_err("too big")
                .contains("more than")
        );
        assert!(component_layer(b"{").is_err());
        let layer = crate::console::manifest::digest_of(b"\0asm component bytes");
        let escaping = text.replace(&layer, "sha256:../../../etc/passwd");
        assert!(
            component_layer(escaping.as_bytes())
                .expect_err("a path")
                .contains("not sha256:<64 hex>")
        );
    }
}
