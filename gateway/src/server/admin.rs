//! What operators ask: readiness, the status page, metrics, the JWKS, and `check`'s look at
//! every identity source.

use super::error::{full, json};
use super::{App, Body};
use crate::proxy::Upstream;
use crate::token::{Embed, SigningKey};

/// htpasswd users `check` asks the directory about, at most.
const SHADOWS_ASKED: usize = 1000;

/// Issuers whose tokens anyone can have minted for their own project: only `require` tells
/// this organisation's workloads from everyone else's.
const MULTI_TENANT: [&str; 2] = ["token.actions.githubusercontent.com", "gitlab.com"];
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use std::sync::PoisonError;

impl App {
    /// Asks every identity source that lives elsewhere (each OIDC issuer's keys), for
    /// `portcullis check`: each source's name and what it said.
    pub async fn check_sources(&self) -> Vec<(String, Result<String, String>)> {
        let mut said = Vec::new();
        for issuer in self.identity.issuers() {
            let result = issuer
                .check()
                .await
                .map(|keys| format!("{keys} signing key(s)"));
            said.push((format!("oidc issuer {}", issuer.issuer()), result));
        }
        if let Some(directory) = self.identity.directory() {
            let at = format!("ldap {}", directory.url());
            let checked = directory.check().await;
            let reached = checked.is_ok();
            said.push((at.clone(), checked));
            if reached {
                match directory.unseen_attributes().await {
                    Ok(unseen) if !unseen.is_empty() => said.push((
                        at.clone(),
                        Ok(format!(
                            "warning: no entry under user_base has {}: check the spelling in \
                             `attributes` (OpenLDAP's inetOrgPerson has departmentNumber, not \
                             department)",
                            unseen.join(", ")
                        )),
                    )),
                    Ok(_) => {}
                    Err(why) => said.push((at.clone(), Err(why))),
                }
                match self.identity.shadowed(SHADOWS_ASKED).await {
                    Ok(shadowed) if !shadowed.is_empty() => said.push((
                        at,
                        Ok(format!(
                            "warning: {} in the htpasswd and in the directory: the htpasswd is \
                             asked first, so their directory passwords are refused",
                            shadowed.join(", ")
                        )),
                    )),
                    Ok(_) => {}
                    Err(why) => said.push((at, Err(why.to_string()))),
                }
            }
        }
        // A registry store is read now, as a replica reads it at its start.
        self.poll_revocations().await;
        if let Some(personal) = self.identity.personal() {
            let revoked = personal.revoked();
            let file = personal.store();
            let result = match revoked.problems() {
                [] => Ok(format!("{} revoked personal token(s)", revoked.len())),
                problems => Err(problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")),
            };
            said.push((format!("revoked tokens {file}"), result));
        }
        for issuer in self.config.identity.oidc.iter() {
            if MULTI_TENANT.iter().any(|host| issuer.issuer.contains(host))
                && issuer.require.is_empty()
            {
                said.push((
                    format!("oidc issuer {}", issuer.issuer),
                    Ok(
                        "warning: every customer of this issuer can mint its tokens; without \
                        `require` (repository_owner, namespace_path, ...) any of them logs in"
                            .to_string(),
                    ),
                ));
            }
        }
        if self.keys.load().current.short_coordinate() && self.config.token.embed == Embed::Kid {
            said.push((
                "signing key".into(),
                Ok(
                    "warning: distribution 3.1 refuses every token of this EC key with \
                    embed = \"kid\" (its x or y starts with a zero byte, which 3.1 drops): \
                    make a new one with `portcullis keygen`"
                        .into(),
                ),
            ));
        }
        said
    }

    /// Ready to serve: everything loaded (or the process would not run), and in gateway mode
    /// the registry answering. The directory's last failure is shown, not waited for.
    pub(super) async fn readiness(&self) -> Response<Body> {
        let upstream = match &self.upstream {
            None => None,
            Some(upstream) => Some(upstream.probe().await),
        };
        // Until the revocations were read once, every personal token is refused: not ready.
        let unread = self
            .identity
            .personal()
            .is_some_and(|personal| personal.revoked().is_unread());
        let ready = upstream.as_ref().is_none_or(Result::is_ok) && !unread;
        let body = serde_json::json!({
            "ready": ready,
            "policies": self.policies.current().policies().len(),
            "revocations": if unread { "not read yet" } else { "read" },
            // Reported, never unready for it: the last verified module keeps serving.
            "policy_artifacts": self.policies.status().into_iter().filter_map(|p| {
                let error = p.pulled?.look().error?;
                Some(serde_json::json!({"policy": p.name, "error": error}))
            }).collect::<Vec<_>>(),
            "upstream": upstream.map(|probe| match probe {
                Ok(()) => "reachable".to_string(),
                Err(e) => e.to_string(),
            }),
            // Reported, not probed, and never unready for it: htpasswd users and remembered
            // logins are served while the directory is away.
            "ldap": self.identity.directory().map(|d| {
                d.last_error().unwrap_or_else(|| "no failure seen".into())
            }),
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json(status, &body)
    }

    /// What is serving: policies with their digests and reload errors, keys, users.
    pub(super) fn status(&self) -> serde_json::Value {
        let ring = self.keys.load();
        let described = |set: &crate::policy::Policies| -> Vec<serde_json::Value> {
            set.status()
                .into_iter()
                .map(|p| {
                    serde_json::json!({
                        "name": p.name,
                        "module": p.module.display().to_string(),
                        "digest": p.digest,
                        "settings_digest": p.settings_digest,
                        "loaded_at": humantime::format_rfc3339_seconds(p.loaded_at).to_string(),
                        "world": p.world,
                        "last_reload_error": p.last_error,
                        "oci": p.pulled.as_ref().map(|pulled| {
                            let module = pulled.verified();
                            let look = pulled.look();
                            serde_json::json!({
                                "reference": pulled.reference(),
                                "manifest": module.as_ref().map(|m| m.manifest.clone()),
                                "signed_by": module.as_ref().map(|m| m.key.clone()),
                                "from_cache": module.as_ref().is_some_and(|m| m.from_cache),
                                "looked_at": look.at.map(|at| humantime::format_rfc3339_seconds(at).to_string()),
                                "last_error": look.error,
                            })
                        }),
                    })
                })
                .collect()
        };
        let policies = described(&self.policies);
        let shadow = self.shadow.as_ref().map(|shadow| {
            let counts: serde_json::Map<String, serde_json::Value> = shadow
                .tally()
                .counts()
                .into_iter()
                .map(|(change, count)| (change.to_string(), count.into()))
                .collect();
            serde_json::json!({"policies": described(shadow.policies()), "decisions": counts})
        });
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "mode": if self.upstream.is_some() { "gateway" } else { "token-server" },
            "service": self.issuer.service,
            "issuer": self.issuer.issuer,
            "upstream": self.upstream.as_ref().map(Upstream::origin),
            "policies": policies,
            "shadow": shadow,
            "keys": {
                "current": ring.current.kid,
                "previous": ring.previous.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            },
            "users": self.identity.user_count(),
            "revoked_tokens": self.identity.personal().map(|p| {
                let revoked = p.revoked();
                serde_json::json!({
                    "ids": revoked.len(),
                    "problems": revoked.problems().iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
            }),
            "oidc": self.identity.issuers().iter().map(|issuer| {
                let (keys, error) = issuer.status().unwrap_or((None, Some("fetching".into())));
                serde_json::json!({"issuer": issuer.issuer(), "keys": keys, "last_error": error})
            }).collect::<Vec<_>>(),
            "ldap": self.identity.directory().map(|d| serde_json::json!({
                "url": d.url(), "last_error": d.last_error(),
            })),
            "config_reload_error": *self.config_error.lock().unwrap_or_else(PoisonError::into_inner),
        })
    }

    pub(super) fn metrics_page(&self) -> Response<Body> {
        let mut response = Response::new(full(self.metrics.encode()));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        );
        response
    }

    pub(super) fn jwks(&self) -> Response<Body> {
        let ring = self.keys.load();
        let keys: Vec<&serde_json::Value> = ring.all().into_iter().map(SigningKey::jwk).collect();
        json(StatusCode::OK, &serde_json::json!({ "keys": keys }))
    }
}
