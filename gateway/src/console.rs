//! The web console under `/ui/`: people sign in (a password, or SSO), browse what the
//! policies let them pull, ask why a request is denied, and make personal tokens. This
//! module owns what the console is made of: its sealed sessions and sign-in flows, the
//! cookies that carry them, and the pages; `server::console` routes requests to it.
//! Sessions are stateless: every replica opens what any other sealed, with the shared
//! session key, so the console scales out with the gateway.

pub mod manifest;
pub mod pages;

use crate::config;
use crate::identity::unix_now;
use crate::proxy::Upstream;
use crate::seal::{Purpose, SealKeys};
use arc_swap::{ArcSwap, ArcSwapOption};
use hyper::HeaderMap;
use hyper::header::{COOKIE, HeaderValue};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A sign-in form or an SSO round trip must finish within this time.
const FLOW_SECONDS: u64 = 10 * 60;
/// Browsers keep cookies up to about 4 KiB; a session that would not fit is refused with
/// a reason rather than silently dropped by the browser.
const MAX_COOKIE_BYTES: usize = 3800;

/// How long the registry's list of repositories is served before it is listed again (in the
/// background: pages keep showing the last list meanwhile). A listing walks the registry's
/// whole storage, page by page (a second for 10 000 repositories, registry 2.8), so it is
/// read once for everyone, never while someone waits, except for the very first.
pub const CATALOG_SECONDS: u64 = 10;

/// The console of one config.
pub struct Console {
    /// `[console]`.
    pub config: config::Console,
    /// Shared with the personal tokens.
    keys: Arc<ArcSwap<SealKeys>>,
    /// Cookies only over HTTPS: the listener has TLS, or `public_url` is https.
    secure: bool,
    /// Token-server mode: the registry at `registry_url` (gateway mode reads `[upstream]`).
    pub registry: Option<Upstream>,
    /// The registry's repositories as last listed.
    catalog: Arc<Catalog>,
    /// The `state`s of SSO answers already acted on (while their flow could live): each
    /// flow asks the provider's token endpoint once, however often its answer is replayed.
    spent: quick_cache::sync::Cache<String, Instant>,
}

/// SSO answers remembered as spent, at most.
const SPENT_FLOWS: usize = 10_000;

/// The registry's repositories as last listed, and the listing under way. An edited config
/// reading the same registry keeps it: a big registry takes long to list again.
struct Catalog {
    /// The registry it lists (`scheme://host`).
    registry: String,
    /// The last list, and when it was listed.
    listed: ArcSwapOption<(Instant, Arc<Vec<String>>)>,
    /// Why the last listing failed, while no list was ever made.
    failed: ArcSwapOption<String>,
    /// True while a listing runs: one at a time.
    listing: AtomicBool,
    /// Bumped when a listing ends: those waiting for the first list look again.
    ended: tokio::sync::watch::Sender<u64>,
}

/// A signed-in person, as their session cookie holds them (sealed: they can neither read
/// nor alter it). Short field names: it travels with every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The account name.
    #[serde(rename = "u")]
    pub user: String,
    /// Where the account comes from: `htpasswd`, `ldap`, or the SSO issuer.
    #[serde(rename = "s")]
    pub source: String,
    /// An SSO account's groups, as its ID token gave them (others are looked up again).
    #[serde(rename = "g", default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// An SSO account's claims, as its ID token gave them.
    #[serde(rename = "c", default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<(String, String)>,
    /// The credential a password sign-in matched (htpasswd entry, directory entry): the
    /// session ends when the account no longer holds it.
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// The token every form of this session carries (CSRF).
    #[serde(rename = "x")]
    pub csrf: String,
    /// Unix time the session ends.
    #[serde(rename = "e")]
    pub expires: u64,
    /// SSO sign-ins: the provider's refresh token, sealed, for personal tokens to ask the
    /// provider whether the person is still there.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub provider_refresh: Option<String>,
}

impl Session {
    /// True for a sign-in through the SSO provider.
    pub fn is_sso(&self) -> bool {
        self.credential.is_none()
    }
}

/// A sign-in in progress: the sign-in form's CSRF token and, for SSO, what the provider's
/// answer is checked against. Held in a cookie of its own for [`FLOW_SECONDS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// The token the sign-in form carries.
    #[serde(rename = "x")]
    pub csrf: String,
    /// Unix time the flow ends.
    #[serde(rename = "e")]
    pub expires: u64,
    /// SSO: the `state` sent to the provider.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// SSO: the `nonce` the ID token must carry.
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// SSO: the PKCE code verifier.
    #[serde(rename = "v", default, skip_serializing_if = "Option::is_none")]
    pub verifier: Option<String>,
}

/// The two cookies the console sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cookie {
    /// The session.
    Session,
    /// A sign-in in progress.
    Flow,
}

impl Console {
    /// The console as configured, with the keys of `[console] session_key`. `secure` when
    /// clients reach it over HTTPS; `registry` in token-server mode. `listed_at` is the
    /// registry the repository list comes from; `previous`, the console of the config
    /// before, whose list is kept if it comes from the same registry.
    pub fn new(
        config: &config::Console,
        keys: Arc<ArcSwap<SealKeys>>,
        secure: bool,
        registry: Option<Upstream>,
        listed_at: &str,
        previous: Option<&Console>,
    ) -> Console {
        let catalog = previous
            .map(|p| p.catalog.clone())
            .filter(|c| c.registry == listed_at)
            .unwrap_or_else(|| {
                Arc::new(Catalog {
                    registry: listed_at.to_string(),
                    listed: ArcSwapOption::empty(),
                    failed: ArcSwapOption::empty(),
                    listing: AtomicBool::new(false),
                    ended: tokio::sync::watch::Sender::new(0),
                })
            });
        Console {
            config: config.clone(),
            keys,
            secure,
            registry,
            catalog,
            spent: quick_cache::sync::Cache::new(SPENT_FLOWS),
        }
    }

    /// Marks the SSO answer of `state` as acted on: false when it already was (a replay).
    pub fn spend(&self, state: &str) -> bool {
        let fresh = self
            .spent
            .get(state)
            .is_none_or(|at| at.elapsed().as_secs() > FLOW_SECONDS);
        if fresh {
            self.spent.insert(state.to_string(), Instant::now());
        }
        fresh
    }

    /// The registry's repositories: the last list (listed again in the background by
    /// `list` when older than [`CATALOG_SECONDS`]), or, before the first list is made, the
    /// first once it is.
    pub async fn catalog<F>(self: &Arc<Self>, list: F) -> Result<Arc<Vec<String>>, String>
    where
        F: Future<Output = Result<Vec<String>, String>> + Send + 'static,
    {
        let mut ended = self.catalog.ended.subscribe();
        let listed = self.catalog.listed.load_full();
        self.list_in_background(list);
        if let Some(listed) = listed {
            return Ok(listed.1.clone());
        }
        loop {
            if let Some(listed) = self.catalog.listed.load_full() {
                return Ok(listed.1.clone());
            }
            if !self.catalog.listing.load(Ordering::Acquire)
                && let Some(why) = self.catalog.failed.load_full()
            {
                return Err(why.to_string());
            }
            if ended.changed().await.is_err() {
                return Err("the console is shutting down".into());
            }
        }
    }

    /// Starts `list` in the background when the last list is older than
    /// [`CATALOG_SECONDS`] (or there is none) and no listing runs already.
    pub fn list_in_background<F>(self: &Arc<Self>, list: F)
    where
        F: Future<Output = Result<Vec<String>, String>> + Send + 'static,
    {
        let fresh = self
            .catalog
            .listed
            .load()
            .as_ref()
            .is_some_and(|l| l.0.elapsed() < Duration::from_secs(CATALOG_SECONDS));
        if fresh || self.catalog.listing.swap(true, Ordering::AcqRel) {
            return;
        }
        let console = self.clone();
        tokio::spawn(async move {
            match list.await {
                Ok(names) => {
                    console
                        .catalog
                        .listed
                        .store(Some(Arc::new((Instant::now(), Arc::new(names)))));
                    console.catalog.failed.store(None);
                }
                Err(why) => {
                    tracing::warn!(error = %why, "the console could not list the registry");
                    console.catalog.failed.store(Some(Arc::new(why)));
                }
            }
            console.catalog.listing.store(false, Ordering::Release);
            console.catalog.ended.send_modify(|n| *n += 1);
        });
    }

    /// The session key file changed: what the new keys cannot open ends.
    pub fn set_keys(&self, keys: SealKeys) {
        self.keys.store(Arc::new(keys));
    }

    /// The keys sessions and personal tokens are sealed with (one swap reaches both).
    pub fn keys(&self) -> Arc<ArcSwap<SealKeys>> {
        self.keys.clone()
    }

    /// A new session for a person who just signed in.
    pub fn start_session(
        &self,
        user: &str,
        source: &str,
        credential: Option<String>,
    ) -> Result<Session, String> {
        Ok(Session {
            user: user.to_string(),
            source: source.to_string(),
            groups: Vec::new(),
            claims: Vec::new(),
            credential,
            csrf: random_token()?,
            expires: unix_now().saturating_add(self.config.session_minutes * 60),
            provider_refresh: None,
        })
    }

    /// A new sign-in flow.
    pub fn start_flow(&self) -> Result<Flow, String> {
        Ok(Flow {
            csrf: random_token()?,
            expires: unix_now().saturating_add(FLOW_SECONDS),
            state: None,
            nonce: None,
            verifier: None,
        })
    }

    /// The session the request's cookie holds, if it opens and has not ended.
    pub fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let value = cookie_value(headers, &self.cookie_name(Cookie::Session))?;
        let session: Session = self.keys.load().open(Purpose::Session, value)?;
        (session.expires > unix_now()).then_some(session)
    }

    /// The sign-in flow the request's cookie holds, if it opens and has not ended.
    pub fn flow(&self, headers: &HeaderMap) -> Option<Flow> {
        let value = cookie_value(headers, &self.cookie_name(Cookie::Flow))?;
        let flow: Flow = self.keys.load().open(Purpose::Flow, value)?;
        (flow.expires > unix_now()).then_some(flow)
    }

    /// The `Set-Cookie` value that carries `session`.
    pub fn session_cookie(&self, session: &Session) -> Result<HeaderValue, String> {
        let sealed = self.keys.load().seal(Purpose::Session, session)?;
        let max_age = session.expires.saturating_sub(unix_now());
        self.set_cookie(Cookie::Session, &sealed, max_age)
    }

    /// The `Set-Cookie` value that carries `flow`.
    pub fn flow_cookie(&self, flow: &Flow) -> Result<HeaderValue, String> {
        let sealed = self.keys.load().seal(Purpose::Flow, flow)?;
        self.set_cookie(Cookie::Flow, &sealed, FLOW_SECONDS)
    }

    /// The `Set-Cookie` value that ends a cookie.
    pub fn clear_cookie(&self, cookie: Cookie) -> HeaderValue {
        // An empty value with no age always fits.
        self.set_cookie(cookie, "", 0)
            .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    fn set_cookie(&self, cookie: Cookie, value: &str, max_age: u64) -> Result<HeaderValue, String> {
        if value.len() > MAX_COOKIE_BYTES {
            return Err(format!(
                "the session would take {} bytes, more than a browser keeps: the identity \
                 provider sends too many claims or groups",
                value.len()
            ));
        }
        // Lax, not Strict: the SSO provider sends the browser back with a top-level GET,
        // which must carry the flow cookie. Every state change is a POST with a CSRF token.
        // `__Host-` cookies must have Path=/ (and no Domain): the price of a name no
        // sibling subdomain can plant.
        let path = if self.secure { "/" } else { "/ui" };
        let mut text = format!(
            "{}={value}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={max_age}",
            self.cookie_name(cookie)
        );
        if self.secure {
            text.push_str("; Secure");
        }
        HeaderValue::from_str(&text).map_err(|e| format!("cannot set the cookie: {e}"))
    }

    /// A cookie's name: with the `__Host-` prefix over HTTPS, which browsers accept only from
    /// a secure origin and only for this host (no `Domain`), so neither a plain-HTTP
    /// neighbour nor a sibling subdomain can plant one (a planted session would sign a
    /// person in as someone else).
    fn cookie_name(&self, cookie: Cookie) -> String {
        let name = match cookie {
            Cookie::Session => "portcullis-session",
            Cookie::Flow => "portcullis-flow",
        };
        if self.secure {
            format!("__Host-{name}")
        } else {
            name.to_string()
        }
    }

    /// Whether `user`'s groups make them an admin.
    pub fn is_admin(&self, groups: &[String]) -> bool {
        groups.iter().any(|g| self.config.admins.contains(g))
    }
}

/// Whether a form's CSRF token is the one expected, compared in constant time.
pub fn same_token(expected: &str, given: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), given.as_bytes()).is_ok()
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// 128 random bits, base64url: CSRF tokens, SSO state and nonce.
pub fn random_token() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random source: {e}"))?;
    Ok(data_encoding::BASE64URL_NOPAD.encode(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(secure: bool) -> Console {
        let keys = SealKeys::from_secrets(&[vec![7; 32]]).expect("keys");
        Console::new(
            &config::Console::default(),
            Arc::new(ArcSwap::from_pointee(keys)),
            secure,
            None,
            "http://registry",
            None,
        )
    }

    /// The console of an edited config reading `registry`, after `previous`.
    fn successor(registry: &str, previous: &Console) -> Arc<Console> {
        Arc::new(Console::new(
            &config::Console::default(),
            previous.keys(),
            false,
            None,
            registry,
            Some(previous),
        ))
    }

    #[tokio::test]
    async fn an_edited_config_keeps_the_repository_list_of_the_same_registry() {
        let first = Arc::new(console(false));
        let listed = first.catalog(async { Ok(vec!["a".to_string()]) }).await;
        assert_eq!(
            listed.as_deref().map(Vec::as_slice),
            Ok(&["a".to_string()][..])
        );
        // The same registry: the list is kept, nothing is listed again.
        let same = successor("http://registry", &first);
        let kept = same
            .catalog(async { Err("listed again".to_string()) })
            .await;
        assert_eq!(
            kept.as_deref().map(Vec::as_slice),
            Ok(&["a".to_string()][..])
        );
        // Another registry: its own list.
        let other = successor("http://elsewhere", &first);
        let fresh = other.catalog(async { Ok(vec!["b".to_string()]) }).await;
        assert_eq!(
            fresh.as_deref().map(Vec::as_slice),
            Ok(&["b".to_string()][..])
        );
    }

    fn with_cookie(value: &HeaderValue) -> HeaderMap {
        let pair = value
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("name=value")
            .to_string();
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("other=1; {pair}")).expect("header"),
        );
        headers
    }

    #[test]
    fn a_session_comes_back_only_as_it_was_sealed_and_until_it_ends() {
        let console = console(false);
        let session = console
            .start_session("alice", "htpasswd", Some("cred".into()))
            .expect("session");
        let cookie = console.session_cookie(&session).expect("cookie");
        let text = cookie.to_str().expect("ascii");
        assert!(text.starts_with("portcullis-session="), "{text}");
        assert!(text.contains("HttpOnly") && text.contains("SameSite=Lax"));
        assert!(!text.contains("Secure") && !text.contains("alice"));
        assert_eq!(
            console.session(&with_cookie(&cookie)),
            Some(session.clone())
        );
        // A flow cookie is no session, and a session no flow.
        let flow = console
            .flow_cookie(&console.start_flow().expect("flow"))
            .expect("cookie");
        let renamed = HeaderValue::from_str(
            &flow
                .to_str()
                .expect("ascii")
                .replace("portcullis-flow", "portcullis-session"),
        )
        .expect("header");
        assert_eq!(console.session(&with_cookie(&renamed)), None);
        let ended = Session {
            expires: unix_now() - 1,
            ..session
        };
        let cookie = console.session_cookie(&ended).expect("cookie");
        assert_eq!(console.session(&with_cookie(&cookie)), None);
    }

    #[test]
    fn over_https_cookies_are_secure_and_prefixed() {
        let console = console(true);
        let session = console
            .start_session("a", "htpasswd", None)
            .expect("session");
        let cookie = console.session_cookie(&session).expect("cookie");
        let text = cookie.to_str().expect("ascii");
        assert!(text.starts_with("__Host-portcullis-session="), "{text}");
        assert!(
            text.contains("; Path=/;") && !text.contains("Domain"),
            "{text}"
        );
        assert!(text.ends_with("; Secure"));
        let cleared = console.clear_cookie(Cookie::Session);
        assert!(cleared.to_str().expect("ascii").contains("Max-Age=0"));
    }

    #[test]
    fn a_session_too_large_for_a_browser_is_refused_with_the_reason() {
        let console = console(false);
        let mut session = console
            .start_session("a", "https://sso", None)
            .expect("session");
        session.groups = (0..400).map(|i| format!("group-{i}")).collect();
        assert!(
            console
                .session_cookie(&session)
                .is_err_and(|e| e.contains("too many claims or groups"))
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("abc", ""));
    }
}
