//! Registry bearer tokens: the signing key and its certificate, access tokens the registry
//! accepts (ES256/RS256, `kid` in libtrust form and `x5c`), refresh tokens, JWKS, and keygen.

use crate::identity::Narrowed;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use data_encoding::{BASE32_NOPAD, BASE64, BASE64URL_NOPAD};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use x509_parser::public_key::PublicKey;

/// Refresh tokens carry this prefix before the service in `aud`, so a registry never accepts
/// one as an access token, and an access token is never accepted as a refresh token.
const REFRESH_AUDIENCE_PREFIX: &str = "portcullis-refresh:";

/// A key or certificate that cannot be used, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The contents are not what is needed.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Generating a new key failed.
    #[error("cannot generate a key: {0}")]
    Generate(String),
}

/// A token that failed to sign or verify.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(String);

/// How a token names the key that signed it (`[token] embed`). No one header serves every
/// registry: distribution 3.x verifies a token carrying `x5c` against its `rootcertbundle`
/// only, and 2.8 finds a bare `kid` only in its libtrust form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Embed {
    /// The certificate chain (`x5c`) and the libtrust `kid`: registry 2.x, and 3.x with
    /// `rootcertbundle`.
    #[default]
    X5c,
    /// Only a `kid`, the key's RFC 7638 thumbprint, as in the JWKS: registry 3.x with `jwks`
    /// (or with `rootcertbundle`, from 3.1.0, which looks bundle keys up by thumbprint).
    Kid,
}

/// The signing key with everything derived from it.
pub struct SigningKey {
    algorithm: Algorithm,
    signer: Signer,
    /// The JWT header, base64url: the same for every token this key signs.
    encoded_header: String,
    decoding: DecodingKey,
    /// The key ID tokens and the JWKS carry: libtrust form (what distribution 2.8 computes)
    /// with `x5c`, the RFC 7638 thumbprint with a bare `kid`.
    pub kid: String,
    /// Both IDs of this key, libtrust and thumbprint: a token names it by either, whichever
    /// `embed` was set when it was signed.
    ids: [String; 2],
    jwk: serde_json::Value,
}

impl SigningKey {
    /// Loads a PKCS#8 private key (EC P-256 or RSA) and its certificate chain (leaf first),
    /// checking that the certificate is for this key; its tokens name it as `embed` says.
    pub fn load(key_path: &Path, cert_path: &Path, embed: Embed) -> Result<SigningKey, KeyError> {
        let key_pem = read(key_path)?;
        let cert_pem = read(cert_path)?;
        let invalid = |path: &Path, reason: String| KeyError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let key_pair = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| {
            invalid(
                key_path,
                format!(
                    "not a PKCS#8 EC P-256 or RSA private key ({e}); `portcullis keygen` writes \
                     one, and `openssl pkcs8 -topk8 -nocrypt` converts others"
                ),
            )
        })?;
        let algorithm = if key_pair.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 {
            Algorithm::ES256
        } else if key_pair.algorithm() == &rcgen::PKCS_RSA_SHA256 {
            Algorithm::RS256
        } else {
            return Err(invalid(key_path, "only EC P-256 (ES256) and RSA (RS256) keys are accepted: registry 2.8 verifies nothing else".into()));
        };
        let chain: Vec<Vec<u8>> = pem_blocks(&cert_pem, "CERTIFICATE");
        let leaf = chain
            .first()
            .ok_or_else(|| invalid(cert_path, "no `BEGIN CERTIFICATE` block".into()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| invalid(cert_path, format!("not a valid X.509 certificate: {e}")))?;
        let spki = cert.tbs_certificate.subject_pki.raw;
        let key_spki = rcgen::PublicKeyData::subject_public_key_info(&key_pair);
        if spki != key_spki.as_slice() {
            return Err(invalid(
                cert_path,
                format!(
                    "the certificate is not for the key in {}",
                    key_path.display()
                ),
            ));
        }
        let jwk = jwk(&cert, algorithm).map_err(|reason| invalid(cert_path, reason))?;
        let public_pem = key_pair.public_key_pem();
        let pkcs8 = key_pair.serialized_der();
        let (signer, decoding) = match algorithm {
            Algorithm::ES256 => (
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                    .map(Signer::Ec)
                    .map_err(|e| e.to_string()),
                DecodingKey::from_ec_pem(public_pem.as_bytes()),
            ),
            _ => (
                RsaKeyPair::from_pkcs8(pkcs8)
                    .map(Signer::Rsa)
                    .map_err(|e| e.to_string()),
                DecodingKey::from_rsa_pem(public_pem.as_bytes()),
            ),
        };
        let ids = [libtrust_kid(spki), jwk_thumbprint(&jwk)];
        let kid = match embed {
            Embed::X5c => ids[0].clone(),
            Embed::Kid => ids[1].clone(),
        };
        let mut jwk = jwk;
        jwk["kid"] = serde_json::Value::String(kid.clone());
        let mut header = Header::new(algorithm);
        header.typ = Some("JWT".into());
        header.kid = Some(kid.clone());
        if embed == Embed::X5c {
            // The certificate chain, standard base64 DER, leaf first.
            header.x5c = Some(chain.iter().map(|der| BASE64.encode(der)).collect());
        }
        let header = serde_json::to_vec(&header).map_err(|e| invalid(key_path, e.to_string()))?;
        Ok(SigningKey {
            algorithm,
            signer: signer.map_err(|reason| invalid(key_path, reason))?,
            encoded_header: BASE64URL_NOPAD.encode(&header),
            decoding: decoding.map_err(|e| invalid(key_path, e.to_string()))?,
            kid,
            ids,
            jwk,
        })
    }

    /// Whether this is the same key as `other`, whatever each names itself.
    pub fn same_key(&self, other: &SigningKey) -> bool {
        self.ids == other.ids
    }

    /// The algorithm tokens are signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// True for an EC key that distribution 3.1 refuses with `embed = "kid"` (see
    /// [`has_short_coordinate`]).
    pub fn short_coordinate(&self) -> bool {
        let coordinate = |name: &str| {
            self.jwk
                .get(name)
                .and_then(serde_json::Value::as_str)
                .and_then(|text| BASE64URL_NOPAD.decode(text.as_bytes()).ok())
        };
        match (coordinate("x"), coordinate("y")) {
            (Some(x), Some(y)) => x.first() == Some(&0) || y.first() == Some(&0),
            _ => false,
        }
    }

    /// Whether a signature costs less than handing it to another thread: a P-256 one takes
    /// about 15 µs, an RSA-2048 one about 0.7 ms, too long to hold an async worker.
    pub fn signs_quickly(&self) -> bool {
        matches!(self.signer, Signer::Ec(_))
    }

    /// The public key as a JWK (for `/.well-known/jwks.json`).
    pub fn jwk(&self) -> &serde_json::Value {
        &self.jwk
    }

    /// A JWT of `claims` signed with this key. The key pair is parsed once, at load:
    /// jsonwebtoken's `encode` parses and validates it again for every token, which doubled
    /// the cost of an ES256 token (perf).
    fn sign(&self, claims: &impl Serialize) -> Result<String, TokenError> {
        let payload = serde_json::to_vec(claims)
            .map_err(|e| TokenError(format!("cannot encode the claims: {e}")))?;
        let message = format!(
            "{}.{}",
            self.encoded_header,
            BASE64URL_NOPAD.encode(&payload)
        );
        let failed = |e: aws_lc_rs::error::Unspecified| TokenError(format!("cannot sign: {e}"));
        let rng = SystemRandom::new();
        let signature = match &self.signer {
            Signer::Ec(key) => key
                .sign(&rng, message.as_bytes())
                .map_err(failed)?
                .as_ref()
                .to_vec(),
            Signer::Rsa(key) => {
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &rng, message.as_bytes(), &mut signature)
                    .map_err(failed)?;
                signature
            }
        };
        Ok(format!("{message}.{}", BASE64URL_NOPAD.encode(&signature)))
    }
}

/// A parsed private key, ready to sign.
enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|e| KeyError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The DER contents of every `-----BEGIN <label>-----` block.
fn pem_blocks(text: &str, label: &str) -> Vec<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let body = &rest[start + begin.len()..];
        let Some(stop) = body.find(&end) else { break };
        let b64: String = body[..stop].split_whitespace().collect();
        if let Ok(der) = BASE64.decode(b64.as_bytes()) {
            blocks.push(der);
        }
        rest = &body[stop + end.len()..];
    }
    blocks
}

/// The RFC 7638 thumbprint of a public JWK: SHA-256 of its required members, in
/// lexicographic order without whitespace, base64url.
pub fn jwk_thumbprint(jwk: &serde_json::Value) -> String {
    let members: &[&str] = if jwk["kty"] == "RSA" {
        &["e", "kty", "n"]
    } else {
        &["crv", "kty", "x", "y"]
    };
    // serde_json writes a string member exactly as RFC 7638 asks (no whitespace).
    let canonical = members
        .iter()
        .map(|name| format!("\"{name}\":{}", jwk[name]))
        .collect::<Vec<_>>()
        .join(",");
    BASE64URL_NOPAD.encode(&Sha256::digest(format!("{{{canonical}}}").as_bytes()))
}

/// The key ID distribution 2.8 computes (libtrust): SHA-256 of the DER SubjectPublicKeyInfo,
/// first 30 bytes, base32 without padding, in groups of four joined by `:`.
pub fn libtrust_kid(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    let encoded = BASE32_NOPAD.encode(&digest[..30]);
    encoded
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

fn jwk(
    cert: &x509_parser::certificate::X509Certificate,
    algorithm: Algorithm,
) -> Result<serde_json::Value, String> {
    let public = cert
        .public_key()
        .parsed()
        .map_err(|e| format!("cannot read the certificate's public key: {e}"))?;
    let trim = |bytes: &[u8]| -> String {
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        BASE64URL_NOPAD.encode(&bytes[start..])
    };
    match (public, algorithm) {
        (PublicKey::EC(point), Algorithm::ES256) => {
            let data = point.data();
            if data.len() != 65 || data[0] != 4 {
                return Err("the EC public key is not an uncompressed P-256 point".into());
            }
            Ok(serde_json::json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
                "x": BASE64URL_NOPAD.encode(&data[1..33]),
                "y": BASE64URL_NOPAD.encode(&data[33..]),
            }))
        }
        (PublicKey::RSA(rsa), Algorithm::RS256) => Ok(serde_json::json!({
            "kty": "RSA", "alg": "RS256", "use": "sig",
            "n": trim(rsa.modulus), "e": trim(rsa.exponent),
        })),
        _ => Err("the certificate's key type does not match the private key".into()),
    }
}

/// One entry of a token's `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The scope's class (`repository(plugin):...`), kept as asked; the registry ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// The resource name.
    pub name: String,
    /// The granted actions (possibly none).
    pub actions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access: Option<Vec<Access>>,
    /// Refresh tokens: the credential they were issued against (see
    /// [`Htpasswd::credential_id`](crate::identity::Htpasswd::credential_id)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cred: Option<String>,
    /// Access tokens of users that are not in the htpasswd: where they came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    src: Option<String>,
    /// With `src`: the groups the policies saw when the token was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grp: Option<Vec<String>>,
    /// With `src`: the claims the policies saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    clm: Option<Vec<(String, String)>>,
    /// Access tokens minted with a personal token: its id and narrowing, so that gateway
    /// mode ends them with it and keeps them within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pat: Option<Narrowed>,
}

/// An access token's account when it is not an htpasswd user (a directory user, a
/// workload of an OIDC issuer): gateway mode does not look it up again, so the token carries
/// what the policies saw, for as long as it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Where the account came from: `ldap`, or the issuer of the workload's token.
    pub source: String,
    /// The account's groups.
    pub groups: Vec<String>,
    /// The claims of its token, as the policies saw them.
    pub claims: Vec<(String, String)>,
}

/// What a verified refresh token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refresh {
    /// The account it was issued to.
    pub subject: String,
    /// The credential it was issued against; the holder must still have it.
    pub credential: String,
}

/// What a verified access token says.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The account (`""` for anonymous).
    pub subject: String,
    /// What it grants.
    pub access: Vec<Access>,
    /// When it stops being valid.
    pub expires_at: SystemTime,
    /// Set for an account that is not an htpasswd user.
    pub principal: Option<Principal>,
    /// The personal token it was minted with.
    pub narrowed: Option<Narrowed>,
}

impl Verified {
    /// True when the token grants `action` (or `*`) on the resource.
    pub fn allows(&self, resource_type: &str, name: &str, action: &str) -> bool {
        self.access.iter().any(|a| {
            a.resource_type == resource_type
                && a.name == name
                && a.actions
                    .iter()
                    .any(|granted| granted == action || granted == "*")
        })
    }
}

/// A signed access token and when it was issued.
pub struct Issued {
    /// The JWT.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// Issue time.
    pub issued_at: SystemTime,
}

/// Signs and verifies tokens for one issuer and service.
pub struct Issuer {
    /// The registry's `auth.token.issuer`.
    pub issuer: String,
    /// The registry's `auth.token.service`.
    pub service: String,
    ttl: Duration,
    refresh_ttl: Duration,
}

impl Issuer {
    /// An issuer whose access tokens live `ttl` and refresh tokens `refresh_ttl`.
    pub fn new(issuer: &str, service: &str, ttl: Duration, refresh_ttl: Duration) -> Issuer {
        Issuer {
            issuer: issuer.to_string(),
            service: service.to_string(),
            ttl,
            refresh_ttl,
        }
    }

    /// True when refresh tokens are enabled.
    pub fn refresh_enabled(&self) -> bool {
        !self.refresh_ttl.is_zero()
    }

    /// An access token for `account` ("" = anonymous) holding exactly `access`;
    /// `principal` for an account that is not an htpasswd user, `narrowed` for a login with
    /// a personal token.
    pub fn access_token(
        &self,
        key: &SigningKey,
        account: &str,
        access: Vec<Access>,
        principal: Option<&Principal>,
        narrowed: Option<&Narrowed>,
    ) -> Result<Issued, TokenError> {
        let now = SystemTime::now();
        let mut claims = self.claims(now, account, self.service.clone(), self.ttl)?;
        claims.access = Some(access);
        claims.pat = narrowed.cloned();
        if let Some(principal) = principal {
            claims.src = Some(principal.source.clone());
            claims.grp = Some(principal.groups.clone());
            claims.clm = Some(principal.claims.clone());
        }
        let token = key.sign(&claims)?;
        Ok(Issued {
            token,
            expires_in: self.ttl.as_secs(),
            issued_at: now,
        })
    }

    /// A long-lived refresh token bound to `account`, this service and the `credential` the
    /// account logged in with: a password change ends it.
    pub fn refresh_token(
        &self,
        key: &SigningKey,
        account: &str,
        credential: &str,
    ) -> Result<String, TokenError> {
        let audience = format!("{REFRESH_AUDIENCE_PREFIX}{}", self.service);
        let mut claims = self.claims(SystemTime::now(), account, audience, self.refresh_ttl)?;
        claims.cred = Some(credential.to_string());
        key.sign(&claims)
    }

    /// What a refresh token says, if it verifies against one of `keys` (the current key and
    /// those rotated out while their tokens may still live) and is younger than the refresh
    /// lifetime configured now, whatever its own `exp` says.
    pub fn verify_refresh(&self, keys: &[&SigningKey], token: &str) -> Result<Refresh, TokenError> {
        let audience = format!("{REFRESH_AUDIENCE_PREFIX}{}", self.service);
        let claims = self.verify(keys, token, &audience, "refresh token")?;
        self.check_age(&claims, self.refresh_ttl, "refresh token")?;
        if claims.sub.is_empty() {
            return Err(TokenError("the refresh token names no account".into()));
        }
        let credential = claims.cred.ok_or_else(|| {
            TokenError("the refresh token is bound to no credential: log in again".into())
        })?;
        Ok(Refresh {
            subject: claims.sub,
            credential,
        })
    }

    /// What an access token this issuer signed grants, if it verifies against one of `keys`
    /// for this service (gateway mode checks the tokens its clients present). It expires at
    /// its `exp` or `iat` plus the configured lifetime, whichever comes first.
    pub fn verify_access(&self, keys: &[&SigningKey], token: &str) -> Result<Verified, TokenError> {
        let claims = self.verify(keys, token, &self.service, "token")?;
        self.check_age(&claims, self.ttl, "token")?;
        let expires = claims
            .exp
            .min(claims.iat.saturating_add(self.ttl.as_secs()));
        Ok(Verified {
            subject: claims.sub,
            access: claims.access.unwrap_or_default(),
            expires_at: UNIX_EPOCH + Duration::from_secs(expires),
            principal: claims.src.map(|source| Principal {
                source,
                groups: claims.grp.unwrap_or_default(),
                claims: claims.clm.unwrap_or_default(),
            }),
            narrowed: claims.pat,
        })
    }

    /// Refuses a token issued longer than `lifetime` ago: a lowered lifetime applies to the
    /// tokens already out, and a token with a far `exp` (made with a leaked key) lives no
    /// longer than ours do.
    fn check_age(&self, claims: &Claims, lifetime: Duration, what: &str) -> Result<(), TokenError> {
        let now = unix_seconds(SystemTime::now());
        if claims.iat.saturating_add(lifetime.as_secs()) <= now {
            return Err(TokenError(format!(
                "the {what} was issued more than {} s ago",
                lifetime.as_secs()
            )));
        }
        Ok(())
    }

    fn verify(
        &self,
        keys: &[&SigningKey],
        token: &str,
        audience: &str,
        what: &str,
    ) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| TokenError(format!("unreadable {what}: {e}")))?;
        // The key is chosen by `kid` and must sign with the algorithm it was made for: a
        // token naming another algorithm (`none`, HS256 with our public key) never verifies.
        let key = keys
            .iter()
            .find(|k| {
                header
                    .kid
                    .as_deref()
                    .is_some_and(|kid| k.ids.iter().any(|id| id == kid))
                    && header.alg == k.algorithm
            })
            .ok_or_else(|| TokenError(format!("the {what} was not signed by a known key")))?;
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError(format!("invalid {what}: {e}")))
    }

    fn claims(
        &self,
        now: SystemTime,
        account: &str,
        aud: String,
        ttl: Duration,
    ) -> Result<Claims, TokenError> {
        let secs = unix_seconds(now);
        // JWT readers hold times as i64: an `exp` beyond that is refused, never wrapped.
        let exp = secs
            .checked_add(ttl.as_secs())
            .filter(|exp| i64::try_from(*exp).is_ok())
            .ok_or_else(|| TokenError(format!("a lifetime of {} s is too long", ttl.as_secs())))?;
        Ok(Claims {
            iss: self.issuer.clone(),
            sub: account.to_string(),
            aud,
            exp,
            // Registry clocks may lag ours a little; it allows 60 s of leeway on its own.
            nbf: secs.saturating_sub(10),
            iat: secs,
            jti: random_id(),
            access: None,
            cred: None,
            src: None,
            grp: None,
            clm: None,
            pat: None,
        })
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // getrandom only fails where the OS has no entropy source at all; a timestamp-based id
    // is then still unique enough for `jti`, which nothing verifies.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = nanos.to_le_bytes();
    }
    hex::encode(bytes)
}

/// Writes `token.key` (PKCS#8) and a self-signed `token.crt` into `dir`: EC P-256 by default,
/// RSA 2048 with `rsa`. The certificate is the registry's `auth.token.rootcertbundle`.
pub fn generate(
    dir: &Path,
    rsa: bool,
) -> Result<(std::path::PathBuf, std::path::PathBuf), KeyError> {
    let generate = |e: &dyn std::fmt::Display| KeyError::Generate(e.to_string());
    let key_pair = if rsa {
        use rsa::pkcs8::EncodePrivateKey;
        let key =
            rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(|e| generate(&e))?;
        let pem = key
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .map_err(|e| generate(&e))?;
        rcgen::KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256)
            .map_err(|e| generate(&e))?
    } else {
        // distribution 3.1 computes an EC key's thumbprint without padding the coordinates:
        // a key whose x or y starts with a zero byte (about one in 128) would be refused for
        // every token there. Drawn again until neither does.
        loop {
            let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| generate(&e))?;
            if !has_short_coordinate(key_pair.public_key_raw()) {
                break key_pair;
            }
        }
    };
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "portcullis token signer");
    let cert = params.self_signed(&key_pair).map_err(|e| generate(&e))?;
    std::fs::create_dir_all(dir).map_err(|e| generate(&format!("{}: {e}", dir.display())))?;
    let key_path = dir.join("token.key");
    let cert_path = dir.join("token.crt");
    write_private(&key_path, key_pair.serialize_pem())
        .map_err(|e| generate(&format!("{}: {e}", key_path.display())))?;
    std::fs::write(&cert_path, cert.pem())
        .map_err(|e| generate(&format!("{}: {e}", cert_path.display())))?;
    Ok((key_path, cert_path))
}

/// True for an uncompressed P-256 point (`04 || x || y`) whose x or y starts with a zero
/// byte: distribution 3.1 mis-computes the thumbprint of such a key (see [`generate`]).
pub fn has_short_coordinate(point: &[u8]) -> bool {
    point.len() == 65 && point[0] == 4 && (point[1] == 0 || point[33] == 0)
}

/// Writes a file only its owner can read.
pub(crate) fn write_private(path: &Path, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_ref())
}

#[cfg(test)]
pub(crate) mod tests;
