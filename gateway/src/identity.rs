//! Who is asking: the one place that answers "who is this, with which groups", for the token
//! endpoint and gateway mode alike. It owns the sources (the htpasswd with its groups file;
//! a directory, LDAP or Active Directory; OpenID issuers of workload tokens), the remembered
//! credentials and the login throttle; the server only routes. A password that is a JWT from
//! a configured issuer is an OIDC login, whatever the user name; a name the htpasswd lists
//! is checked there and never falls through to the directory; other names go to the
//! directory when one is configured. A name belongs to one source: the htpasswd's names
//! and the directory's are never handed out by an OpenID issuer or the SSO provider (unless
//! the provider is declared the directory's own), and that holds at every use of a session,
//! personal token or Bearer token, not only at sign-in.

mod cache;
mod groups;
mod htpasswd;
mod ldap;
mod oidc;
pub mod personal;
mod sso;
mod throttle;

pub use cache::CredentialCache;
pub use groups::Groups;
pub use htpasswd::{Htpasswd, MAX_BCRYPT_COST};
pub use ldap::Directory;
pub use oidc::{OidcIssuer, Requirement, Template};
pub use personal::{Limit, Personal, PersonalTokens, Revocation, RevocationStore, Revoked};
pub use sso::{SignedIn, Sso};
pub use throttle::Throttle;

use arc_swap::ArcSwap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A file that cannot be used, naming the file and the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", if *line > 0 { format!(":{line}") } else { String::new() })]
pub struct InvalidFile {
    /// The file, as configured.
    pub file: String,
    /// 1-based line number (0 when the file could not be read at all).
    pub line: usize,
    /// What is wrong and what to do.
    pub message: String,
}

fn read(path: &Path) -> Result<String, InvalidFile> {
    std::fs::read_to_string(path).map_err(|e| InvalidFile {
        file: path.display().to_string(),
        line: 0,
        message: format!("cannot read: {e}"),
    })
}

/// A user as the policies will see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The account name.
    pub name: String,
    /// Their groups, in file order (from the claims' templates for an OIDC login).
    pub groups: Vec<String>,
    /// Where they were found.
    pub origin: Origin,
    /// The claims of a workload's token, as (name, text) pairs: an object's members as
    /// `a/b`, a list's elements each on its own. Empty for htpasswd users.
    pub claims: Vec<(String, String)>,
}

/// Where a user comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The htpasswd file.
    Htpasswd,
    /// The directory (`[identity.ldap]`).
    Ldap,
    /// A workload token of this issuer.
    Oidc(String),
}

impl Origin {
    /// The origin [`Origin::name`] names.
    pub fn of(name: &str) -> Origin {
        match name {
            "htpasswd" => Origin::Htpasswd,
            "ldap" => Origin::Ldap,
            issuer => Origin::Oidc(issuer.to_string()),
        }
    }

    /// `htpasswd`, `ldap`, or the issuer.
    pub fn name(&self) -> &str {
        match self {
            Origin::Htpasswd => "htpasswd",
            Origin::Ldap => "ldap",
            Origin::Oidc(issuer) => issuer,
        }
    }
}

/// A login that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// Who logged in.
    pub principal: Principal,
    /// The id of the credential the password matched, what refresh tokens are bound to:
    /// None for a workload token, which no refresh token may outlive.
    pub credential: Option<String>,
    /// True when it came from the remembered credentials, without a bcrypt.
    pub remembered: bool,
    /// The personal token that logged in, if one did.
    pub narrowed: Option<Narrowed>,
}

/// A personal token in use: what it grants is also within `limit`, and it ends when `id` is
/// revoked (Bearer tokens minted with it carry both).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Narrowed {
    /// The personal token's id.
    #[serde(rename = "i")]
    pub id: String,
    /// Its narrowing.
    #[serde(rename = "l", default)]
    pub limit: Limit,
}

/// What a workload presents to `portcullis identity test`.
pub enum Presented {
    /// Its token, verified as at a login.
    Token(String),
    /// Claims, taken as given (no signature to check).
    Claims(serde_json::Map<String, serde_json::Value>),
}

/// What `portcullis identity test` found.
pub struct Assessment {
    /// The issuer whose rules were applied.
    pub issuer: String,
    /// Whether the claims came from a verified token.
    pub verified: bool,
    /// Each `require`, checked.
    pub requirements: Vec<Requirement>,
    /// The account the claims make, when the templates render.
    pub principal: Option<Principal>,
    /// Why a login with these claims is refused, if it is.
    pub refused: Option<String>,
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The user is unknown or the password wrong (which one is not said).
    #[error("invalid username or password")]
    Wrong,
    /// Too many failures from this client: wait this long.
    #[error("too many failed logins; retry in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    /// A workload token that does not verify or does not meet `require`: why.
    #[error("{0}")]
    Refused(String),
    /// The identity provider could not be asked (its keys never fetched): nobody is let in.
    #[error("{0}")]
    Unavailable(String),
    /// The check itself failed (a task that died): nobody is let in.
    #[error("the login check failed: {0}")]
    Failed(String),
}

/// The users, groups, remembered credentials and throttle of one config.
pub struct Identity {
    users: ArcSwap<Htpasswd>,
    groups: ArcSwap<Groups>,
    issuers: Vec<OidcIssuer>,
    directory: Option<Directory>,
    personal: Option<PersonalTokens>,
    sso: Option<Sso>,
    cache: Arc<CredentialCache>,
    throttle: Arc<Throttle>,
}

/// Where the users of one config come from.
#[derive(Default)]
pub struct Sources {
    /// The htpasswd.
    pub users: Htpasswd,
    /// The groups file.
    pub groups: Groups,
    /// Issuers of workload tokens.
    pub issuers: Vec<OidcIssuer>,
    /// The directory.
    pub directory: Option<Directory>,
    /// Personal tokens, when the console makes them.
    pub personal: Option<PersonalTokens>,
    /// The console's SSO provider.
    pub sso: Option<Sso>,
}

impl Identity {
    /// Users and groups as loaded; the remembered credentials and the throttle carry over
    /// from `previous` (a config edit), since they are keyed by what they were checked
    /// against.
    pub fn new(
        sources: Sources,
        previous: Option<&Identity>,
    ) -> Result<Identity, getrandom::Error> {
        let cache = match previous {
            Some(previous) => previous.cache.clone(),
            None => Arc::new(CredentialCache::new()?),
        };
        Ok(Identity {
            users: ArcSwap::from_pointee(sources.users),
            groups: ArcSwap::from_pointee(sources.groups),
            issuers: sources.issuers,
            directory: sources.directory,
            personal: sources.personal,
            sso: sources.sso,
            cache,
            throttle: previous.map(|p| p.throttle.clone()).unwrap_or_default(),
        })
    }

    /// The htpasswd changed: a removed user or a changed password stops working now, since
    /// remembered logins are tied to the entry they were checked against.
    pub fn set_users(&self, users: Htpasswd) {
        self.users.store(Arc::new(users));
    }

    /// The groups file changed.
    pub fn set_groups(&self, groups: Groups) {
        self.groups.store(Arc::new(groups));
    }

    /// Checks `password` for `user`. A JWT from a configured issuer is verified as a
    /// workload token (the user name is then ignored). Anything else is an htpasswd
    /// password: from the remembered credentials when they were verified before
    /// (microseconds, on the caller's thread), else with bcrypt on a blocking thread, behind
    /// the throttle.
    pub async fn login(
        self: &Arc<Self>,
        user: &str,
        password: String,
        client: IpAddr,
    ) -> Result<Login, LoginError> {
        if let Some(personal) = &self.personal
            && password.starts_with(personal::PREFIX)
        {
            let login = self
                .personal_login(personal, user, &password, client)
                .await?;
            self.name_belongs(&login.principal).await?;
            return Ok(login);
        }
        if self.issuer_of(&password).is_some() {
            return Ok(Login {
                principal: self.login_token(&password).await?,
                credential: None,
                remembered: false,
                narrowed: None,
            });
        }
        let users = self.users.load_full();
        if let Some(directory) = &self.directory
            && !users.contains(user)
        {
            let login = self
                .directory_login(directory, user, &password, client)
                .await?;
            self.name_belongs(&login.principal).await?;
            return Ok(login);
        }
        if self.cache.remembers(&users, user, &password) {
            return users
                .credential_id(user)
                .map(|credential| Login {
                    principal: self.principal(user),
                    credential: Some(credential),
                    remembered: true,
                    narrowed: None,
                })
                .ok_or(LoginError::Wrong);
        }
        let identity = self.clone();
        let user = user.to_string();
        tokio::task::spawn_blocking(move || identity.check_password(&user, &password, client))
            .await
            .map_err(|e| LoginError::Failed(e.to_string()))?
    }

    /// bcrypt with the throttle around it.
    fn check_password(
        &self,
        user: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<Login, LoginError> {
        // Checked before bcrypt: a throttled guesser costs us no CPU.
        let now = self.admit(client, user)?;
        let users = self.users.load_full();
        let credential = self
            .cache
            .verify(&users, user, password)
            .then(|| users.credential_id(user))
            .flatten();
        let login = match credential {
            Some(credential) => Ok(Login {
                principal: self.principal(user),
                credential: Some(credential),
                remembered: false,
                narrowed: None,
            }),
            None => Err(LoginError::Wrong),
        };
        self.settle(client, user, now, login)
    }

    /// Whether `client` may try `user` now (the throttle), and when it did.
    fn admit(&self, client: IpAddr, user: &str) -> Result<Instant, LoginError> {
        let now = Instant::now();
        self.throttle
            .check(client, user, now)
            .map_err(LoginError::Throttled)?;
        Ok(now)
    }

    /// Tells the throttle how a try that began at `now` ended: a wrong password counts
    /// against the client, a right one clears its count.
    fn settle(
        &self,
        client: IpAddr,
        user: &str,
        now: Instant,
        login: Result<Login, LoginError>,
    ) -> Result<Login, LoginError> {
        match &login {
            Ok(_) => self.throttle.succeeded(client, user),
            Err(LoginError::Wrong) => self.throttle.failed(client, user, now),
            Err(_) => {}
        }
        login
    }

    /// A directory login, behind the same throttle as passwords of the htpasswd (remembered
    /// logins skip it, as there).
    async fn directory_login(
        &self,
        directory: &Directory,
        user: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<Login, LoginError> {
        let now = self.admit(client, user)?;
        let login =
            directory
                .login(user, password)
                .await
                .map(|(principal, credential, remembered)| Login {
                    principal,
                    credential: Some(credential),
                    remembered,
                    narrowed: None,
                });
        self.settle(client, user, now, login)
    }

    /// A personal token: its owner, if the token is good and the owner still there, with
    /// the token's narrowing. Behind the throttle, like passwords.
    async fn personal_login(
        &self,
        tokens: &PersonalTokens,
        user: &str,
        token: &str,
        client: IpAddr,
    ) -> Result<Login, LoginError> {
        let now = self.admit(client, user)?;
        let opened = tokens.open(user, token).map_err(personal::refused);
        let login = match opened {
            Ok(personal) => self.owner(&personal).await.map(|principal| Login {
                principal,
                credential: None,
                remembered: true,
                narrowed: Some(Narrowed {
                    id: personal.id.clone(),
                    limit: personal.limit.clone(),
                }),
            }),
            Err(refused) => Err(refused),
        };
        self.settle(client, user, now, login)
    }

    /// The owner of a personal token as the policies see them now, if still there.
    async fn owner(&self, personal: &Personal) -> Result<Principal, LoginError> {
        let gone = || {
            LoginError::Refused(format!(
                "the owner of the personal token {:?}, {:?}, is no longer there",
                personal.name, personal.user
            ))
        };
        match (personal.source.as_str(), &personal.credential) {
            ("htpasswd", _) if self.exists(&personal.user) => Ok(self.principal(&personal.user)),
            ("htpasswd", _) => Err(gone()),
            ("ldap", Some(credential)) => match &self.directory {
                Some(directory) => directory.still_holds(&personal.user, credential).await,
                None => Err(gone()),
            },
            (issuer, _) => match (&self.sso, &personal.provider_refresh) {
                (Some(sso), Some(refresh)) if sso.issuer() == issuer => {
                    sso.still_there(&personal.id, refresh)
                        .await
                        .map_err(|e| match e {
                            LoginError::Refused(_) => gone(),
                            other => other,
                        })?;
                    Ok(personal.sso_principal())
                }
                _ => Err(gone()),
            },
        }
    }

    /// The console's SSO provider.
    pub fn sso(&self) -> Option<&Sso> {
        self.sso.as_ref()
    }

    /// Finishes an SSO sign-in: the person, whose account name must be no other source's;
    /// when the provider is declared the directory's own (`directory_users`), the
    /// directory's entry of that name, with its groups and attributes.
    pub async fn sso_sign_in(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        nonce: &str,
    ) -> Result<SignedIn, LoginError> {
        let Some(sso) = &self.sso else {
            return Err(LoginError::Refused("SSO is not configured".into()));
        };
        let mut signed_in = sso.finish(code, verifier, redirect_uri, nonce).await?;
        if sso.directory_users() {
            let name = &signed_in.principal.name;
            let Some(directory) = &self.directory else {
                return Err(LoginError::Refused(
                    "[console.sso] directory_users needs [identity.ldap]".into(),
                ));
            };
            let Some((principal, credential)) = directory.find(name).await? else {
                return Err(LoginError::Refused(format!(
                    "{name:?}, whom the SSO provider signed in, is not in the directory (or \
                     its user_filter leaves them out): ask an administrator"
                )));
            };
            signed_in.principal = principal;
            signed_in.credential = Some(credential);
        }
        self.name_belongs(&signed_in.principal).await?;
        Ok(signed_in)
    }

    /// Whether `principal`'s name is their source's own: an htpasswd name (in any case)
    /// comes from the htpasswd only, a directory name from the directory only (or from an
    /// SSO provider declared its own). Asked at every use of a credential another source
    /// could have come to share a name with since it was issued; a directory answer is
    /// remembered for its `cache_seconds`.
    pub async fn name_belongs(&self, principal: &Principal) -> Result<(), LoginError> {
        let name = &principal.name;
        let taken = |owner: &str, fix: &str| {
            Err(LoginError::Refused(format!(
                "the account {name:?} from {} is {owner}: a name belongs to one source. {fix}",
                principal.origin.name()
            )))
        };
        if principal.origin == Origin::Htpasswd {
            return Ok(());
        }
        if let Some(user) = self.users.load().holder_of(name) {
            return taken(
                &format!("an htpasswd user's ({user:?})"),
                "Rename one, or give the issuer's username template a prefix of its own (gha:...)",
            );
        }
        if let (Origin::Oidc(_), Some(directory)) = (&principal.origin, &self.directory)
            && directory.knows(name).await?
        {
            return taken(
                "a directory user's",
                "Give the issuer's username template a prefix of its own, or, if this SSO \
                 provider signs in the directory's own people, set [console.sso] \
                 directory_users = true",
            );
        }
        Ok(())
    }

    /// The personal tokens, when the console makes them.
    pub fn personal(&self) -> Option<&PersonalTokens> {
        self.personal.as_ref()
    }

    /// A workload token by itself (an RFC 8693 token exchange): who it logs in, if it comes
    /// from a configured issuer.
    pub async fn login_token(&self, token: &str) -> Result<Principal, LoginError> {
        let Some(issuer) = self.issuer_of(token) else {
            return Err(LoginError::Refused(
                "the token is not from a configured issuer ([[identity.oidc]])".into(),
            ));
        };
        let principal = issuer.login(token).await?;
        // A workload must not become another source's user by a claim's value.
        self.name_belongs(&principal).await?;
        Ok(principal)
    }

    /// The configured issuer a JWT claims to come from.
    fn issuer_of(&self, token: &str) -> Option<&OidcIssuer> {
        if self.issuers.is_empty() {
            return None;
        }
        let iss = oidc::claimed_issuer(token)?;
        self.issuers.iter().find(|issuer| issuer.issuer() == iss)
    }

    /// Which source a login with these credentials goes to: `personal`, `oidc`, `htpasswd`
    /// or `ldap`.
    pub fn source_of(&self, user: &str, password: &str) -> &'static str {
        if self.personal.is_some() && password.starts_with(personal::PREFIX) {
            "personal"
        } else if self.issuer_of(password).is_some() {
            "oidc"
        } else if self.directory.is_some() && !self.users.load().contains(user) {
            "ldap"
        } else {
            "htpasswd"
        }
    }

    /// The `sub` a workload token claims, unverified and bounded, for the log of a refusal;
    /// `?` when it claims none.
    pub fn claimed_subject(&self, token: &str) -> String {
        oidc::claimed(token, "sub")
            .map(|sub| sub.chars().take(256).collect())
            .unwrap_or_else(|| "?".into())
    }

    /// What a workload presents becomes, for `portcullis identity test`: its token verified
    /// (or claims taken as given), each `require` checked, the account, groups and claims
    /// it makes, and why it would be refused (a failed requirement, a template, a name
    /// another source holds). `issuer` picks the issuer when the claims name none.
    pub async fn assess(
        &self,
        presented: Presented,
        issuer: Option<&str>,
    ) -> Result<Assessment, String> {
        let (claims, verified) = match presented {
            Presented::Token(token) => {
                let claimed = oidc::claimed_issuer(&token)
                    .ok_or("the token is not a JWT with an `iss` claim")?;
                let issuer = self.find_issuer(&claimed)?;
                let claims = issuer
                    .verified_claims(&token)
                    .await
                    .map_err(|e| e.to_string())?;
                (claims, true)
            }
            Presented::Claims(claims) => (claims, false),
        };
        let named = issuer
            .map(str::to_string)
            .or_else(|| {
                claims
                    .get("iss")
                    .and_then(|i| i.as_str())
                    .map(str::to_string)
            })
            .ok_or("the claims name no `iss`: say which issuer with --issuer")?;
        let (requirements, principal) = self.find_issuer(&named)?.assess(&claims);
        let refused = match &principal {
            Ok(principal) => self
                .name_belongs(principal)
                .await
                .err()
                .map(|e| e.to_string()),
            Err(why) => Some(why.clone()),
        };
        Ok(Assessment {
            issuer: named,
            verified,
            requirements,
            principal: principal.ok(),
            refused,
        })
    }

    fn find_issuer(&self, issuer: &str) -> Result<&OidcIssuer, String> {
        self.issuers
            .iter()
            .find(|i| i.issuer() == issuer)
            .ok_or_else(|| format!("{issuer:?} is not a configured [[identity.oidc]] issuer"))
    }

    /// The configured issuers.
    pub fn issuers(&self) -> &[OidcIssuer] {
        &self.issuers
    }

    /// The configured directory.
    pub fn directory(&self) -> Option<&Directory> {
        self.directory.as_ref()
    }

    /// An htpasswd user with the groups the groups file gives them now.
    pub fn principal(&self, name: &str) -> Principal {
        Principal {
            name: name.to_string(),
            groups: self.groups.load().of(name).to_vec(),
            origin: Origin::Htpasswd,
            claims: Vec::new(),
        }
    }

    /// Who `user` is now, if they still hold `credential` (a refresh token's binding): an
    /// htpasswd user with the groups of now, a directory user as the directory has them
    /// (looked up again at most once per cache period).
    pub async fn still_holds(&self, user: &str, credential: &str) -> Result<Principal, LoginError> {
        if let (Some(directory), true) = (&self.directory, credential.starts_with("ldap:")) {
            let principal = directory.still_holds(user, credential).await?;
            self.name_belongs(&principal).await?;
            return Ok(principal);
        }
        match self.users.load().credential_id(user) {
            None => Err(LoginError::Refused(format!(
                "account {user:?} no longer exists"
            ))),
            Some(now) if now != credential => Err(LoginError::Refused(format!(
                "the password of {user:?} changed since this refresh token was issued: log in again"
            ))),
            Some(_) => Ok(self.principal(user)),
        }
    }

    /// Who `user` is, without their password: an htpasswd user, else the directory's (an
    /// admin asking the console how the policies would answer someone). None when neither
    /// knows them.
    pub async fn look_up(&self, user: &str) -> Result<Option<Principal>, LoginError> {
        if self.exists(user) {
            return Ok(Some(self.principal(user)));
        }
        match &self.directory {
            Some(directory) => Ok(directory.find(user).await?.map(|(principal, _)| principal)),
            None => Ok(None),
        }
    }

    /// True while `user` is listed (a Bearer token's user must still be).
    pub fn exists(&self, user: &str) -> bool {
        self.users.load().contains(user)
    }

    /// The htpasswd users the directory also has (at most `limit` asked): the directory's
    /// password is refused for them, since the htpasswd is asked first.
    pub async fn shadowed(&self, limit: usize) -> Result<Vec<String>, LoginError> {
        let Some(directory) = &self.directory else {
            return Ok(Vec::new());
        };
        let names: Vec<String> = self
            .users
            .load()
            .names()
            .take(limit)
            .map(str::to_string)
            .collect();
        let mut shadowed = Vec::new();
        for name in names {
            if directory.knows(&name).await? {
                shadowed.push(name);
            }
        }
        shadowed.sort();
        Ok(shadowed)
    }

    /// True when `user` is the htpasswd's and the directory's too (asked on a refused
    /// password, so that the log can say why the directory's password did not work).
    pub async fn shadows_directory(&self, user: &str) -> bool {
        match &self.directory {
            Some(directory) if self.exists(user) => directory.knows(user).await.unwrap_or(false),
            _ => false,
        }
    }

    /// How many users there are.
    pub fn user_count(&self) -> usize {
        self.users.load().len()
    }
}

/// A name as sources compare names: without case and with runs of spaces as one, as LDAP's
/// `caseIgnoreMatch` does; the throttle counts accounts by it.
pub(crate) fn fold(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Seconds since the epoch, as tokens, sessions and their expiries count time.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests;
