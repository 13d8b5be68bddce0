//! cosign's key-based image signatures (`[signatures] keys`): the public keys, and the check
//! that a signature (a layer of the `sha256-<hex>.sig` manifest beside the image) is valid:
//! made by one of the keys over the payload bytes exactly as stored, and a payload that
//! names exactly the manifest served, for the repository it is pulled from. What a
//! signature manifest was found to hold is remembered by its digest: content never changes,
//! and a new signature makes a new manifest.

use hyper::StatusCode;
use hyper::body::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use x509_parser::prelude::FromDer;

/// The media type of a signature layer (its blob is the payload).
pub const LAYER_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation that holds the signature, base64.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Payloads are a few hundred bytes; a signature manifest rarely has more than a few layers.
pub const MAX_PAYLOAD: usize = 64 << 10;
/// Signature layers looked at, at most, per manifest.
pub const MAX_LAYERS: usize = 32;
/// Signature manifests whose verdict is remembered.
const REMEMBERED: usize = 16_384;

/// The configured public keys, by name, and what they verified.
pub struct Keys {
    keys: Vec<(String, Key)>,
    files: Vec<PathBuf>,
    /// (signature manifest digest, repository@digest) -> the keys that signed it.
    found: quick_cache::sync::Cache<(String, String), Vec<String>>,
}

/// One public key.
struct Key {
    algorithm: &'static dyn aws_lc_rs::signature::VerificationAlgorithm,
    bytes: Vec<u8>,
}

impl Keys {
    /// No keys: every image is unsigned.
    pub fn none() -> Keys {
        Keys {
            keys: Vec::new(),
            files: Vec::new(),
            found: quick_cache::sync::Cache::new(1),
        }
    }

    /// Reads each PEM public key (`-----BEGIN PUBLIC KEY-----`: ECDSA P-256, RSA or
    /// Ed25519, as cosign and skopeo write them).
    pub fn load(files: &BTreeMap<String, PathBuf>) -> Result<Keys, String> {
        let mut keys = Vec::new();
        for (name, path) in files {
            let key = Key::read(path)
                .map_err(|e| format!("[signatures] keys.{name} = {}: {e}", path.display()))?;
            keys.push((name.clone(), key));
        }
        Ok(Keys {
            keys,
            files: files.values().cloned().collect(),
            found: quick_cache::sync::Cache::new(REMEMBERED),
        })
    }

    /// The key files, to watch.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The key names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(name, _)| name.as_str())
    }

    /// Whether `signature` (as cosign stores it, base64-decoded: DER for ECDSA) by the key
    /// `name` is valid over `payload`.
    pub fn verifies(&self, name: &str, payload: &[u8], signature: &[u8]) -> bool {
        self.keys
            .iter()
            .find(|(n, _)| n == name)
            .is_some_and(|(_, key)| {
                aws_lc_rs::signature::UnparsedPublicKey::new(key.algorithm, &key.bytes)
                    .verify(payload, signature)
                    .is_ok()
            })
    }

    /// What a signature manifest was found to hold before: the keys with a valid signature
    /// over `digest` in `repository`, by the manifest's own digest (a new signature makes a
    /// new manifest).
    pub fn remembered(
        &self,
        manifest: &str,
        digest: &str,
        repository: &str,
    ) -> Option<Vec<String>> {
        self.found
            .get(&(manifest.to_string(), format!("{repository}@{digest}")))
    }

    /// Remembers what [`Keys::remembered`] gives back.
    pub fn remember(&self, manifest: &str, digest: &str, repository: &str, keys: Vec<String>) {
        self.found.insert(
            (manifest.to_string(), format!("{repository}@{digest}")),
            keys,
        );
    }
}

/// One signature as a `.sig` manifest stores it: the payload's bytes (checked against the
/// digest the manifest names for them) and the signature over them.
pub struct Stored {
    /// The simple-signing payload, exactly as stored.
    pub payload: Bytes,
    /// The signature, base64-decoded.
    pub signature: Vec<u8>,
}

/// Where signatures are read from: a registry, asked by Portcullis itself.
pub trait Reader {
    /// A GET of `path` that accepts OCI image manifests: the status and at most `limit`
    /// bytes of the body.
    fn get(
        &self,
        path: &str,
        limit: usize,
    ) -> impl Future<Output = Result<(StatusCode, Bytes), String>> + Send;
}

/// The `.sig` manifest of `digest` in `repository`: its own digest and its bytes, or None
/// when there is none. A lookup that fails is an error: an unreadable signature is not an
/// absent one.
pub async fn manifest_of(
    get: &impl Reader,
    repository: &str,
    digest: &str,
) -> Result<Option<(String, Bytes)>, String> {
    let Some(tag) = tag_of(digest) else {
        return Ok(None);
    };
    let (status, body) = get
        .get(&format!("/v2/{repository}/manifests/{tag}"), MAX_MANIFEST)
        .await?;
    match status {
        StatusCode::OK => Ok(Some((crate::console::manifest::digest_of(&body), body))),
        StatusCode::NOT_FOUND => Ok(None),
        status => Err(format!("{tag}: the registry answered {status}")),
    }
}

/// The signatures a `.sig` manifest (`manifest`, its bytes) holds, their payloads read
/// with `get`; a layer whose blob is not what it names signs nothing.
pub async fn stored_in(
    get: &impl Reader,
    repository: &str,
    manifest: &[u8],
) -> Result<Vec<Stored>, String> {
    #[derive(serde::Deserialize)]
    struct Layer {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        digest: String,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    #[derive(serde::Deserialize)]
    struct SignatureManifest {
        #[serde(default)]
        layers: Vec<Layer>,
    }
    let parsed: SignatureManifest = serde_json::from_slice(manifest)
        .map_err(|e| format!("the signature manifest is not an image manifest: {e}"))?;
    let mut stored = Vec::new();
    let layers = parsed
        .layers
        .iter()
        // A digest of another form names no blob we would ask for.
        .filter(|layer| layer.media_type == LAYER_TYPE && crate::oci::is_digest(&layer.digest))
        .take(MAX_LAYERS);
    for layer in layers {
        let Some(signature) = layer
            .annotations
            .get(SIGNATURE_ANNOTATION)
            .and_then(|b64| data_encoding::BASE64.decode(b64.trim().as_bytes()).ok())
        else {
            continue;
        };
        let (status, payload) = get
            .get(
                &format!("/v2/{repository}/blobs/{}", layer.digest),
                MAX_PAYLOAD,
            )
            .await?;
        if status != StatusCode::OK {
            return Err(format!("the payload {} answered {status}", layer.digest));
        }
        if crate::console::manifest::digest_of(&payload) == layer.digest {
            stored.push(Stored { payload, signature });
        }
    }
    Ok(stored)
}

/// A private key that signs in cosign's format: an ECDSA P-256 key, from cosign's encrypted
/// PEM (`ENCRYPTED SIGSTORE PRIVATE KEY`, or `COSIGN` before cosign 2) or plain PKCS#8.
pub struct Signer {
    pair: aws_lc_rs::signature::EcdsaKeyPair,
}

impl Signer {
    /// Reads `path`; an encrypted key is opened with `passphrase` (cosign's
    /// `COSIGN_PASSWORD`).
    pub fn read(path: &Path, passphrase: Option<&str>) -> Result<Signer, String> {
        let at = |e: String| format!("{}: {e}", path.display());
        let text = std::fs::read(path).map_err(|e| at(e.to_string()))?;
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(&text).map_err(|e| at(format!("not PEM: {e}")))?;
        let pkcs8 = match pem.label.as_str() {
            "PRIVATE KEY" => pem.contents.clone(),
            "ENCRYPTED SIGSTORE PRIVATE KEY" | "ENCRYPTED COSIGN PRIVATE KEY" => {
                let passphrase = passphrase.ok_or_else(|| {
                    at(
                        "an encrypted cosign key: give its passphrase (COSIGN_PASSWORD or \
                        --passphrase-file)"
                            .into(),
                    )
                })?;
                open_envelope(&pem.contents, passphrase).map_err(at)?
            }
            other => {
                return Err(at(format!(
                    "a PEM block {other:?}: give a cosign private key or a PKCS#8 \
                     \"PRIVATE KEY\""
                )));
            }
        };
        let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &pkcs8,
        )
        .map_err(|e| at(format!("not an ECDSA P-256 key: {e}")))?;
        Ok(Signer { pair })
    }

    /// The payload naming `digest` in `repository` (as cosign writes it: the repository,
    /// no tag), and its signature, DER.
    fn sign(&self, repository: &str, digest: &str) -> Result<(Bytes, Vec<u8>), String> {
        let payload = serde_json::json!({
            "critical": {
                "identity": {"docker-reference": repository},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": null,
        });
        let payload = Bytes::from(payload.to_string());
        let signature = self
            .pair
            .sign(&aws_lc_rs::rand::SystemRandom::new(), &payload)
            .map_err(|e| format!("cannot sign: {e}"))?;
        Ok((payload, signature.as_ref().to_vec()))
    }
}

/// The PKCS#8 key inside cosign's envelope: JSON with scrypt parameters and a NaCl
/// secretbox, as cosign and containers/image write it.
fn open_envelope(envelope: &[u8], passphrase: &str) -> Result<Vec<u8>, String> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    #[derive(serde::Deserialize)]
    struct Params {
        #[serde(rename = "N")]
        n: u64,
        r: u32,
        p: u32,
    }
    #[derive(serde::Deserialize)]
    struct Kdf {
        params: Params,
        salt: String,
    }
    #[derive(serde::Deserialize)]
    struct Cipher {
        nonce: String,
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        kdf: Kdf,
        cipher: Cipher,
        ciphertext: String,
    }
    let envelope: Envelope =
        serde_json::from_slice(envelope).map_err(|e| format!("not cosign's key envelope: {e}"))?;
    let b64 = |text: &str| {
        data_encoding::BASE64
            .decode(text.as_bytes())
            .map_err(|e| format!("cosign's key envelope: {e}"))
    };
    let params = &envelope.kdf.params;
    if !params.n.is_power_of_two() || params.n < 2 {
        return Err("cosign's key envelope: scrypt N is not a power of two".into());
    }
    let params = scrypt::Params::new(params.n.ilog2() as u8, params.r, params.p, 32)
        .map_err(|e| format!("cosign's key envelope: {e}"))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(
        passphrase.as_bytes(),
        &b64(&envelope.kdf.salt)?,
        &params,
        &mut key,
    )
    .map_err(|e| format!("cosign's key envelope: {e}"))?;
    let nonce: [u8; 24] = b64(&envelope.cipher.nonce)?
        .try_into()
        .map_err(|_| "cosign's key envelope: the nonce is not 24 bytes")?;
    crypto_secretbox::XSalsa20Poly1305::new(&key.into())
        .decrypt(&nonce.into(), b64(&envelope.ciphertext)?.as_slice())
        .map_err(|_| "cannot open the key: wrong passphrase?".to_string())
}

/// Signs `digest` in `repository` (at `registry`) and adds the signature to its `.sig`
/// manifest (created, or one layer appended, as cosign does).
pub async fn attach(
    repository: &crate::oci::Repository,
    signer: &Signer,
    registry: &str,
    digest: &str,
) -> Result<(), String> {
    let tag = tag_of(digest).ok_or_else(|| format!("{digest} is not a digest"))?;
    let (payload, signature) = signer.sign(&format!("{registry}/{}", repository.name()), digest)?;
    let mut layers = match manifest_of(repository, repository.name(), digest).await? {
        Some((_, body)) => serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|m| m.get("layers").cloned())
            .and_then(|l| l.as_array().cloned())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let payload_digest = repository.push_blob(payload.clone()).await?;
    layers.push(serde_json::json!({
        "mediaType": LAYER_TYPE,
        "digest": payload_digest,
        "size": payload.len(),
        "annotations": {SIGNATURE_ANNOTATION: data_encoding::BASE64.encode(&signature)},
    }));
    let diff_ids: Vec<&serde_json::Value> = layers
        .iter()
        .filter_map(|layer| layer.get("digest"))
        .collect();
    let config = Bytes::from(
        serde_json::json!({
            "architecture": "", "os": "", "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        .to_string(),
    );
    let config_size = config.len();
    let config_digest = repository.push_blob(config).await?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::oci::MANIFEST_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": layers,
    });
    repository
        .push_manifest(
            &tag,
            Bytes::from(manifest.to_string()),
            crate::oci::MANIFEST_TYPE,
        )
        .await?;
    Ok(())
}

/// Signature manifests are small: a layer per signature.
const MAX_MANIFEST: usize = 1 << 20;

impl Keys {
    /// The names of the keys, among `allowed` (every key when None), with a valid signature
    /// in `stored` over `digest` in `repository`, in key order.
    pub fn signers(
        &self,
        stored: &[Stored],
        digest: &str,
        repository: &str,
        allowed: Option<&[String]>,
    ) -> Vec<String> {
        let counted: Vec<&Stored> = stored
            .iter()
            .filter(|s| payload_names(&s.payload, digest, repository).is_ok())
            .collect();
        self.names()
            .filter(|name| allowed.is_none_or(|allowed| allowed.iter().any(|a| a == name)))
            .filter(|name| {
                counted
                    .iter()
                    .any(|s| self.verifies(name, &s.payload, &s.signature))
            })
            .map(str::to_string)
            .collect()
    }
}

impl Key {
    fn read(path: &Path) -> Result<Key, String> {
        let text = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(&text)
            .map_err(|e| format!("not a PEM public key: {e}"))?;
        if pem.label != "PUBLIC KEY" {
            return Err(format!(
                "a PEM block {:?}, not \"PUBLIC KEY\" (give the public key, cosign.pub)",
                pem.label
            ));
        }
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&pem.contents)
            .map_err(|e| format!("not a public key: {e}"))?;
        let oid = spki.algorithm.algorithm.to_id_string();
        let bytes = spki.subject_public_key.data.to_vec();
        let algorithm: &'static dyn aws_lc_rs::signature::VerificationAlgorithm = match oid.as_str()
        {
            "1.2.840.10045.2.1" => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string());
                if curve.as_deref() != Some("1.2.840.10045.3.1.7") {
                    return Err(
                        "an EC key on a curve other than P-256 (cosign signs with P-256)".into(),
                    );
                }
                &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1
            }
            "1.2.840.113549.1.1.1" => &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            "1.3.101.112" => &aws_lc_rs::signature::ED25519,
            other => {
                return Err(format!(
                    "a key of algorithm {other}: ECDSA P-256, RSA or Ed25519 are verified"
                ));
            }
        };
        Ok(Key { algorithm, bytes })
    }
}

/// Why a signature that verified does not count for `digest` in `repository`, if it does
/// not: the payload is read strictly, as containers/image reads it.
pub fn payload_names(payload: &[u8], digest: &str, repository: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("the payload is not JSON: {e}"))?;
    let top = value.as_object().ok_or("the payload is not an object")?;
    if top.len() != 2 || !top.contains_key("critical") || !top.contains_key("optional") {
        return Err("the payload must hold exactly `critical` and `optional`".into());
    }
    let optional = &top["optional"];
    if !(optional.is_null() || optional.is_object()) {
        return Err("`optional` is neither an object nor null".into());
    }
    if let Some(timestamp) = optional.get("timestamp")
        && !timestamp.is_i64()
    {
        return Err("`optional.timestamp` is not an integer".into());
    }
    let critical = top["critical"]
        .as_object()
        .ok_or("`critical` is not an object")?;
    if critical.len() != 3 {
        return Err("`critical` must hold exactly `type`, `image` and `identity`".into());
    }
    if critical.get("type").and_then(|t| t.as_str()) != Some("cosign container image signature") {
        return Err("`critical.type` is not a cosign container image signature".into());
    }
    let signed = critical
        .get("image")
        .and_then(|i| i.get("docker-manifest-digest"))
        .and_then(|d| d.as_str())
        .ok_or("`critical.image.docker-manifest-digest` is missing")?;
    if signed != digest {
        return Err(format!("it signs {signed}, not {digest}"));
    }
    let reference = critical
        .get("identity")
        .and_then(|i| i.get("docker-reference"))
        .and_then(|r| r.as_str())
        .ok_or("`critical.identity.docker-reference` is missing")?;
    let signed_repository = repository_of(reference);
    if signed_repository != repository {
        return Err(format!(
            "it was made for the repository {signed_repository:?}, not {repository:?}"
        ));
    }
    Ok(())
}

/// The repository path of a docker reference: without the registry host (signers push
/// through the gateway or straight to the registry), the tag and the digest.
fn repository_of(reference: &str) -> &str {
    let name = reference.split('@').next().unwrap_or(reference);
    // A `:` after the last `/` starts the tag; one before it is a port.
    let name = match (name.rfind(':'), name.rfind('/')) {
        (Some(colon), Some(slash)) if colon > slash => &name[..colon],
        (Some(colon), None) => &name[..colon],
        _ => name,
    };
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            rest
        }
        _ => name,
    }
}

/// The tag that holds the signatures of `digest`: `sha256-<hex>.sig`.
pub fn tag_of(digest: &str) -> Option<String> {
    let (algorithm, hex) = digest.split_once(':')?;
    Some(format!("{algorithm}-{hex}.sig"))
}

#[cfg(test)]
mod tests;
