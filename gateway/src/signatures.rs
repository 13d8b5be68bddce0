//! cosign's key-based image signatures (`[signatures] keys`): the public keys, and the check
//! that a signature (a layer of the `sha256-<hex>.sig` manifest beside the image) is valid:
//! made by one of the keys over the payload bytes exactly as stored, and a payload that
//! names exactly the manifest served, for the repository it is pulled from. What a
//! signature manifest was found to hold is remembered by its digest: content never changes,
//! and a new signature makes a new manifest.

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
