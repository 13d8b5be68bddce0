//! What the console shows of an image: a manifest or index as the registry serves it, the
//! image's config (created, platform, labels), and the referrers (signatures, SBOMs) of a
//! digest, read from the OCI and Docker JSON formats into plain values for the pages.
//! Registries are trusted for nothing here: every field is optional, every size bounded.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The manifest types asked for, most specific first: with this, the registry answers with
/// what was pushed instead of converting it.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
                          application/vnd.oci.image.manifest.v1+json, \
                          application/vnd.docker.distribution.manifest.list.v2+json, \
                          application/vnd.docker.distribution.manifest.v2+json";
/// Manifests are a few KiB; OCI caps them at 4 MiB.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Image configs are a few KiB; history-heavy ones tens.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// A manifest or an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `sha256:...` of the bytes served.
    pub digest: String,
    /// Its media type, as served (or as the document says).
    pub media_type: String,
    /// Its size in bytes.
    pub size: usize,
    /// An artifact's type (`artifactType`), for signatures, SBOMs and the like.
    pub artifact_type: Option<String>,
    /// The digest of the manifest this one refers to (`subject`), for a referrer.
    pub subject: Option<String>,
    /// What it holds.
    pub kind: Kind,
}

/// What a manifest holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An index (a multi-platform image): one manifest per platform.
    Index(Vec<Child>),
    /// An image: its config and layers.
    Image {
        /// The config blob.
        config: Descriptor,
        /// The layers, in order.
        layers: Vec<Descriptor>,
    },
    /// Something else (schema 1, an unknown type): shown by type and size only.
    Other,
}

/// A blob or manifest a manifest points at.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    /// `mediaType`.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `digest`.
    #[serde(default)]
    pub digest: String,
    /// `size`.
    #[serde(default)]
    pub size: u64,
}

/// One manifest of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// Where it is.
    pub descriptor: Descriptor,
    /// `os/architecture[/variant]`, when the index says.
    pub platform: Option<String>,
}

/// What the console shows of an image's config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `created`, as written.
    pub created: Option<String>,
    /// `os/architecture[/variant]`.
    pub platform: Option<String>,
    /// `config.Labels`.
    pub labels: BTreeMap<String, String>,
}

/// A manifest that refers to another (a signature, an SBOM), from the referrers API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    /// Where it is.
    pub descriptor: Descriptor,
    /// Its `artifactType`.
    pub artifact_type: Option<String>,
}

#[derive(Deserialize)]
struct Document {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    manifests: Option<Vec<Entry>>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(flatten)]
    descriptor: Descriptor,
    platform: Option<Platform>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    fn text(&self) -> Option<String> {
        if self.os.is_empty() && self.architecture.is_empty() {
            return None;
        }
        Some(match &self.variant {
            Some(variant) => format!("{}/{}/{variant}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        })
    }
}

/// The digest of what was served: the registry's word is not needed for it.
pub fn digest_of(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

/// Reads a manifest or index the registry served with `content_type`.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Manifest, String> {
    let document: Document =
        serde_json::from_slice(body).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    let media_type = content_type
        .map(|t| t.split(';').next().unwrap_or(t).trim().to_string())
        .filter(|t| !t.is_empty() && t != "application/json")
        .or(document.media_type)
        .unwrap_or_else(|| "unknown".into());
    let kind = match (document.manifests, document.config) {
        (Some(entries), _) => Kind::Index(
            entries
                .into_iter()
                .map(|entry| Child {
                    platform: entry.platform.as_ref().and_then(Platform::text),
                    descriptor: entry.descriptor,
                })
                .collect(),
        ),
        (None, Some(config)) => Kind::Image {
            config,
            layers: document.layers.unwrap_or_default(),
        },
        (None, None) => Kind::Other,
    };
    Ok(Manifest {
        digest: digest_of(body),
        media_type,
        size: body.len(),
        artifact_type: document.artifact_type,
        subject: document.subject.map(|s| s.digest),
        kind,
    })
}

/// Reads an image's config blob.
pub fn parse_config(body: &[u8]) -> Result<ImageConfig, String> {
    #[derive(Deserialize)]
    struct Config {
        created: Option<String>,
        #[serde(default)]
        os: String,
        #[serde(default)]
        architecture: String,
        variant: Option<String>,
        config: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(rename = "Labels")]
        labels: Option<BTreeMap<String, String>>,
    }
    let config: Config =
        serde_json::from_slice(body).map_err(|e| format!("the image config is not JSON: {e}"))?;
    let platform = Platform {
        os: config.os,
        architecture: config.architecture,
        variant: config.variant,
    };
    Ok(ImageConfig {
        created: config.created,
        platform: platform.text(),
        labels: config.config.and_then(|c| c.labels).unwrap_or_default(),
    })
}

/// Reads the referrers API's answer (an index of the manifests that refer to a digest).
pub fn parse_referrers(body: &[u8]) -> Result<Vec<Referrer>, String> {
    let document: Document =
        serde_json::from_slice(body).map_err(|e| format!("the referrers are not JSON: {e}"))?;
    Ok(document
        .manifests
        .unwrap_or_default()
        .into_iter()
        .map(|entry| Referrer {
            descriptor: entry.descriptor,
            artifact_type: entry.artifact_type,
        })
        .collect())
}

/// `1.5 MB`, `820 B`: sizes as people read them (decimal units, as registries show).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_lists_its_platforms() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
          "manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":10,
             "platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bb","size":11,
             "platform":{"os":"linux","architecture":"amd64"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:cc","size":12}]}"#;
        let manifest =
            parse(body, Some("application/vnd.oci.image.index.v1+json")).expect("parses");
        assert_eq!(manifest.size, body.len());
        assert_eq!(manifest.digest, digest_of(body));
        let Kind::Index(children) = manifest.kind else {
            panic!("an index")
        };
        let platforms: Vec<_> = children.iter().map(|c| c.platform.clone()).collect();
        assert_eq!(
            platforms,
            [
                Some("linux/arm64/v8".into()),
                Some("linux/amd64".into()),
                None
            ]
        );
    }

    #[test]
    fn an_image_has_its_config_and_layers_and_a_referrer_its_subject() {
        let body = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":5},
          "layers":[{"mediaType":"x","digest":"sha256:l","size":7}],
          "artifactType":"application/vnd.dev.sigstore.bundle+json","subject":{"digest":"sha256:s","size":1,"mediaType":"m"}}"#;
        let manifest = parse(
            body,
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
        )
        .expect("parses");
        assert_eq!(
            manifest.media_type,
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(manifest.subject.as_deref(), Some("sha256:s"));
        assert!(matches!(manifest.kind, Kind::Image { ref layers, .. } if layers.len() == 1));
        let config = parse_config(
            br#"{"created":"2026-01-01T00:00:00Z","os":"linux","architecture":"amd64",
                "config":{"Labels":{"org.opencontainers.image.source":"https://x"}}}"#,
        )
        .expect("parses");
        assert_eq!(config.platform.as_deref(), Some("linux/amd64"));
        assert_eq!(config.labels.len(), 1);
        assert_eq!(
            parse_config(b"{}").expect("empty is fine"),
            ImageConfig::default()
        );
    }

    #[test]
    fn junk_is_an_error_not_a_panic() {
        for junk in [
            &b""[..],
            b"[]",
            b"{\"manifests\": 3}",
            b"\xff",
            b"{\"manifests\": [1]}",
        ] {
            assert!(parse(junk, None).is_err(), "{junk:?}");
        }
        assert!(parse_referrers(b"nope").is_err());
        assert_eq!(parse_referrers(b"{}").expect("empty"), []);
    }

    #[test]
    fn sizes_read_like_a_person_would() {
        assert_eq!(human_size(820), "820 B");
        assert_eq!(human_size(1_500_000), "1.5 MB");
        assert_eq!(human_size(u64::MAX), "18446744.1 TB");
    }
}
