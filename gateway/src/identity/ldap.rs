//! A directory as a source of users: LDAP or Active Directory. A service account finds the
//! user by a filter (the name escaped per RFC 4515), Portcullis then binds as the entry found
//! with the password given, and reads the user's groups (an attribute such as `memberOf`,
//! and/or a group search, groups of groups followed a bounded number of rounds) and the
//! attributes the policies get. The account name is always the entry's (the attribute the
//! user filter matches, or `username_attribute`), never what was typed: a directory matches
//! names without case, and `Mallory` must not pass the rules about `mallory`. A verified
//! login is remembered for `cache_seconds`, since a
//! directory cannot be watched; failures never are. A directory that is down, slow or
//! refuses TLS fails the login closed, as "unavailable", never as a wrong password.

use super::{LoginError, Origin, Principal};
use crate::config;
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, ldap_escape};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rounds of "groups of these groups" followed: deeper nesting than this is a loop or a
/// mistake, and each round is a search.
const NESTING: usize = 8;
/// Groups one user may be found in, at most.
const MAX_GROUPS: usize = 512;
/// Directory connections open at once: a burst of new logins waits its turn.
const MAX_CONNECTIONS: usize = 8;
/// Verified logins remembered at most.
const REMEMBERED: usize = 10_000;
/// `invalidCredentials`: a wrong password, an unknown or disabled account (AD).
const INVALID_CREDENTIALS: u32 = 49;

/// The directory and what it is asked.
pub struct Directory {
    config: config::Ldap,
    bind_password: String,
    tls: Arc<rustls::ClientConfig>,
    connections: Arc<tokio::sync::Semaphore>,
    salt: [u8; 32],
    remembered: quick_cache::sync::Cache<[u8; 32], (Arc<Entry>, Instant)>,
    /// Entries found by a refresh token's check, by DN digest, with when.
    still_there: quick_cache::sync::Cache<String, (Principal, Instant)>,
    /// Whether a name is the directory's, by folded name, with when it was asked.
    known: quick_cache::sync::Cache<String, (bool, Instant)>,
    /// The attribute that holds the account name.
    naming: String,
    last_error: std::sync::Mutex<Option<String>>,
}

/// A user as the directory has them.
#[derive(Debug)]
struct Entry {
    dn: String,
    principal: Principal,
}

/// What went wrong, before it is told to a client.
enum Failure {
    /// Unknown user, wrong password, disabled account: which one is not said.
    Wrong,
    /// The directory could not be asked.
    Unavailable(String),
}

impl From<ldap3::LdapError> for Failure {
    fn from(error: ldap3::LdapError) -> Failure {
        Failure::Unavailable(explain(&error))
    }
}

/// A directory error with its causes and what it most likely means (a StartTLS the server
/// does not offer, a CA nobody named): what an operator reads at 3 a.m.
fn explain(error: &ldap3::LdapError) -> String {
    let text = crate::client::describe(error, "[identity.ldap] ca");
    let lower = text.to_ascii_lowercase();
    if lower.contains("unsupported extended operation")
        || (lower.contains("starttls") && lower.contains("protocolerror"))
    {
        format!(
            "{text} (the directory does not offer StartTLS: use ldaps:// and its port, usually \
             636, with starttls = false, or turn TLS on at the directory)"
        )
    } else {
        text
    }
}

impl Directory {
    /// The directory as configured; nothing is contacted until a login (or a check).
    pub fn new(config: &config::Ldap) -> Result<Directory, String> {
        let bind_password = std::fs::read_to_string(&config.bind_password_file)
            .map_err(|e| {
                format!(
                    "[identity.ldap] bind_password_file {}: {e}",
                    config.bind_password_file.display()
                )
            })?
            .trim_end_matches(['\n', '\r'])
            .to_string();
        let mut salt = [0u8; 32];
        getrandom::fill(&mut salt).map_err(|e| format!("no random source: {e}"))?;
        Ok(Directory {
            naming: naming_attribute(config)?,
            known: quick_cache::sync::Cache::new(REMEMBERED),
            tls: Arc::new(crate::client::tls_config(
                config.ca.as_deref(),
                "[identity.ldap] ca",
            )?),
            connections: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
            salt,
            remembered: quick_cache::sync::Cache::new(REMEMBERED),
            still_there: quick_cache::sync::Cache::new(REMEMBERED),
            last_error: std::sync::Mutex::new(None),
            bind_password,
            config: config.clone(),
        })
    }

    /// The directory's URL.
    pub fn url(&self) -> &str {
        &self.config.url
    }

    /// The last failure to reach the directory, while it lasts.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Logs `user` in with `password`: the principal, and the id of the credential that
    /// refresh tokens are bound to (a digest of the user's DN). `remembered` says whether it
    /// came from memory.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
    ) -> Result<(Principal, String, bool), LoginError> {
        // An LDAP simple bind with a DN and no password succeeds as an anonymous bind on
        // many servers: the classic bypass. Refused before anything is sent.
        if password.is_empty() {
            return Err(LoginError::Wrong);
        }
        let key = self.key(user, password);
        if let Some((entry, at)) = self.remembered.get(&key)
            && at.elapsed() < self.cache_period()
        {
            return Ok((entry.principal.clone(), credential_id(&entry.dn), true));
        }
        match self.verify(user, password).await {
            Ok(entry) => {
                let entry = Arc::new(entry);
                self.remembered.insert(key, (entry.clone(), Instant::now()));
                Ok((entry.principal.clone(), credential_id(&entry.dn), false))
            }
            Err(Failure::Wrong) => Err(LoginError::Wrong),
            Err(Failure::Unavailable(why)) => Err(self.unavailable(why)),
        }
    }

    /// The user as the directory has them now (groups and attributes included), if their
    /// entry is still there under the DN `credential` was made from: asked at most once per
    /// cache period per user (refresh tokens).
    pub async fn still_holds(&self, user: &str, credential: &str) -> Result<Principal, LoginError> {
        if let Some((principal, at)) = self.still_there.get(credential)
            && at.elapsed() < self.cache_period()
        {
            return Ok(principal);
        }
        match self.entry(user).await {
            Ok(entry) if credential_id(&entry.dn) == credential => {
                self.still_there.insert(
                    credential.to_string(),
                    (entry.principal.clone(), Instant::now()),
                );
                Ok(entry.principal)
            }
            Ok(_) | Err(Failure::Wrong) => Err(LoginError::Refused(format!(
                "account {user:?} is no longer in the directory: log in again"
            ))),
            Err(Failure::Unavailable(why)) => Err(self.unavailable(why)),
        }
    }

    /// The user as the directory has them (no password: the service account looks), with
    /// the credential id of their entry; None when not found. For an admin asking the
    /// console how the policies would answer someone, and an SSO sign-in of the directory's
    /// people.
    pub async fn find(&self, user: &str) -> Result<Option<(Principal, String)>, LoginError> {
        match self.entry(user).await {
            Ok(entry) => {
                let credential = credential_id(&entry.dn);
                Ok(Some((entry.principal, credential)))
            }
            Err(Failure::Wrong) => Ok(None),
            Err(Failure::Unavailable(why)) => Err(self.unavailable(why)),
        }
    }

    /// Whether the directory has a user of this name (so no other source may hand it out).
    /// Answers, yes or no, are remembered for `cache_seconds`; a directory that cannot be
    /// asked is an error, never a no.
    pub async fn knows(&self, name: &str) -> Result<bool, LoginError> {
        let key = super::fold(name);
        if let Some((known, at)) = self.known.get(&key)
            && at.elapsed() < self.cache_period()
        {
            return Ok(known);
        }
        let known = self.find(name).await?.is_some();
        self.known.insert(key, (known, Instant::now()));
        Ok(known)
    }

    /// Binds the service account and searches the user base: `portcullis check`.
    pub async fn check(&self) -> Result<String, String> {
        let mut ldap = self.service_connection().await.map_err(|f| match f {
            Failure::Wrong => {
                "the service account's bind was refused (bind_dn, bind_password_file)".into()
            }
            Failure::Unavailable(why) => why,
        })?;
        let search = ldap
            .with_timeout(self.timeout())
            .search(
                &self.config.user_base,
                Scope::Base,
                "(objectClass=*)",
                vec!["1.1"],
            )
            .await
            .and_then(|r| r.success());
        let _ = ldap.unbind().await;
        search
            .map(|_| format!("bound as {}, user_base readable", self.config.bind_dn))
            .map_err(|e| format!("user_base {:?}: {e}", self.config.user_base))
    }

    /// The configured `attributes` that no entry under `user_base` has (a name the schema
    /// spells otherwise, `department` for OpenLDAP's `departmentNumber`): `portcullis check`.
    pub async fn unseen_attributes(&self) -> Result<Vec<String>, String> {
        let mut ldap = self.service_connection().await.map_err(|f| match f {
            Failure::Wrong => "the service account's bind was refused".to_string(),
            Failure::Unavailable(why) => why,
        })?;
        let mut unseen = Vec::new();
        for attribute in &self.config.attributes {
            let found = ldap
                .with_timeout(self.timeout())
                .search(
                    &self.config.user_base,
                    Scope::Subtree,
                    &format!("({}=*)", ldap_escape(attribute.as_str())),
                    vec!["1.1"],
                )
                .await
                .map(|result| !result.0.is_empty());
            if !found.unwrap_or(true) {
                unseen.push(attribute.clone());
            }
        }
        let _ = ldap.unbind().await;
        Ok(unseen)
    }

    /// The user's entry as the service account finds it.
    async fn entry(&self, user: &str) -> Result<Entry, Failure> {
        let mut ldap = self.service_connection().await?;
        let entry = self.find_user(&mut ldap, user).await;
        let _ = ldap.unbind().await;
        entry
    }

    async fn verify(&self, user: &str, password: &str) -> Result<Entry, Failure> {
        let entry = self.entry(user).await?;
        // The user's own bind, on a connection of its own: a bind changes who a connection is.
        let mut own = self.connect().await?;
        let bound = own
            .with_timeout(self.timeout())
            .simple_bind(&entry.dn, password)
            .await?;
        let _ = own.unbind().await;
        match bound.rc {
            0 => Ok(entry),
            INVALID_CREDENTIALS => Err(Failure::Wrong),
            _ => Err(Failure::Unavailable(format!(
                "the bind as the user's entry answered {bound}"
            ))),
        }
    }

    /// The user's entry, groups and attributes, found by the service account.
    async fn find_user(&self, ldap: &mut ldap3::Ldap, user: &str) -> Result<Entry, Failure> {
        let filter = self
            .config
            .user_filter
            .replace("{username}", &ldap_escape(user));
        let mut wanted: Vec<&str> = self.config.attributes.iter().map(String::as_str).collect();
        wanted.push(&self.naming);
        if !self.config.member_of_attribute.is_empty() {
            wanted.push(&self.config.member_of_attribute);
        }
        if wanted.is_empty() {
            wanted.push("1.1");
        }
        let (found, _) = ldap
            .with_timeout(self.timeout())
            .search(&self.config.user_base, Scope::Subtree, &filter, wanted)
            .await?
            .success()?;
        let [found] = &found[..] else {
            // None, or several for one name: no one logs in as an ambiguous entry.
            return Err(Failure::Wrong);
        };
        let entry = SearchEntry::construct(found.clone());
        let values = |attribute: &str| -> Vec<String> {
            entry
                .attrs
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(attribute))
                .map(|(_, values)| values.clone())
                .unwrap_or_default()
        };
        // The entry's own spelling: of several values (`uid: alice`, `uid: a.smith`), the
        // one the directory matched, else the first. An entry without one has no name.
        let names = values(&self.naming);
        let typed = super::fold(user);
        let Some(name) = names
            .iter()
            .find(|n| super::fold(n) == typed)
            .or(names.first())
            .cloned()
        else {
            return Err(Failure::Unavailable(format!(
                "the entry {} has no {} to name the account by: set username_attribute",
                entry.dn, self.naming
            )));
        };
        let mut group_dns: BTreeSet<String> = BTreeSet::new();
        let mut groups: BTreeSet<String> = BTreeSet::new();
        if !self.config.member_of_attribute.is_empty() {
            for dn in values(&self.config.member_of_attribute) {
                if let Some(group) = first_value(&dn) {
                    groups.insert(group);
                }
                group_dns.insert(dn);
            }
        }
        if let Some(base) = &self.config.group_base {
            self.walk_groups(ldap, base, &entry.dn, &name, &mut group_dns, &mut groups)
                .await?;
        }
        let claims = self
            .config
            .attributes
            .iter()
            .flat_map(|attribute| {
                values(attribute)
                    .into_iter()
                    .map(move |value| (attribute.clone(), value))
            })
            .collect();
        Ok(Entry {
            principal: Principal {
                name,
                groups: groups.into_iter().collect(),
                origin: Origin::Ldap,
                claims,
            },
            dn: entry.dn,
        })
    }

    /// The groups whose members include `dn`, then the groups of those, for a bounded
    /// number of rounds (groups of groups: nesting), each group once.
    async fn walk_groups(
        &self,
        ldap: &mut ldap3::Ldap,
        base: &str,
        dn: &str,
        user: &str,
        group_dns: &mut BTreeSet<String>,
        groups: &mut BTreeSet<String>,
    ) -> Result<(), Failure> {
        let mut members: Vec<String> = vec![dn.to_string()];
        members.extend(group_dns.iter().cloned());
        for _ in 0..NESTING {
            let mut found = Vec::new();
            for member in &members {
                let filter = self
                    .config
                    .group_filter
                    .replace("{dn}", &ldap_escape(member.as_str()))
                    .replace("{username}", &ldap_escape(user));
                let (entries, _) = ldap
                    .with_timeout(self.timeout())
                    .search(
                        base,
                        Scope::Subtree,
                        &filter,
                        vec![self.config.group_name_attribute.as_str()],
                    )
                    .await?
                    .success()?;
                for entry in entries {
                    let entry = SearchEntry::construct(entry);
                    if group_dns.insert(entry.dn.clone()) {
                        let name = entry
                            .attrs
                            .iter()
                            .find(|(n, _)| {
                                n.eq_ignore_ascii_case(&self.config.group_name_attribute)
                            })
                            .and_then(|(_, v)| v.first().cloned())
                            .or_else(|| first_value(&entry.dn));
                        groups.extend(name);
                        found.push(entry.dn);
                    }
                }
                if group_dns.len() > MAX_GROUPS {
                    return Err(Failure::Unavailable(format!(
                        "{user:?} is in more than {MAX_GROUPS} groups: check group_filter"
                    )));
                }
            }
            if found.is_empty() {
                break;
            }
            members = found;
        }
        Ok(())
    }

    /// A connection bound as the service account.
    async fn service_connection(&self) -> Result<ldap3::Ldap, Failure> {
        let mut ldap = self.connect().await?;
        let bound = ldap
            .with_timeout(self.timeout())
            .simple_bind(&self.config.bind_dn, &self.bind_password)
            .await?;
        if bound.rc != 0 {
            let _ = ldap.unbind().await;
            return Err(Failure::Unavailable(format!(
                "the service account's bind ({}) was refused: {bound}",
                self.config.bind_dn
            )));
        }
        Ok(ldap)
    }

    /// A new connection, TLS as configured, at most [`MAX_CONNECTIONS`] at once.
    async fn connect(&self) -> Result<ldap3::Ldap, Failure> {
        let permit = self
            .connections
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Failure::Unavailable(e.to_string()))?;
        let settings = LdapConnSettings::new()
            .set_conn_timeout(self.timeout())
            .set_starttls(self.config.starttls)
            .set_config(self.tls.clone());
        let (connection, ldap) = LdapConnAsync::with_settings(settings, &self.config.url).await?;
        tokio::spawn(async move {
            // The connection's place is freed when it ends.
            let _permit = permit;
            if let Err(e) = connection.drive().await {
                tracing::debug!(error = %e, "LDAP connection ended");
            }
        });
        Ok(ldap)
    }

    fn unavailable(&self, why: String) -> LoginError {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why.clone());
        LoginError::Unavailable(format!(
            "the directory at {} failed: {why}",
            self.config.url
        ))
    }

    fn key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update((user.len() as u64).to_le_bytes());
        hasher.update(user.as_bytes());
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeout_seconds)
    }

    fn cache_period(&self) -> Duration {
        Duration::from_secs(self.config.cache_seconds)
    }
}

/// The attribute the account name is read from: `username_attribute`, else the one the
/// user filter compares `{username}` with (`uid` of `(uid={username})`).
fn naming_attribute(config: &config::Ldap) -> Result<String, String> {
    if let Some(attribute) = &config.username_attribute {
        return Ok(attribute.clone());
    }
    let filter = &config.user_filter;
    let attribute = filter
        .find("={username})")
        .and_then(|end| filter[..end].rsplit('(').next())
        .filter(|a| {
            !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b';' || b == b'.')
        });
    attribute.map(str::to_string).ok_or_else(|| {
        format!(
            "[identity.ldap] user_filter {filter:?} has no `(attribute={{username}})` to take \
             the account name from: set username_attribute (uid, sAMAccountName)"
        )
    })
}

/// The id refresh tokens of a directory user are bound to: their entry's DN, digested.
fn credential_id(dn: &str) -> String {
    let digest = Sha256::digest(format!("portcullis ldap\0{dn}").as_bytes());
    format!(
        "ldap:{}",
        data_encoding::BASE64URL_NOPAD.encode(&digest[..16])
    )
}

/// The value of a DN's first component: `cn=devs,ou=groups,...` is `devs`.
fn first_value(dn: &str) -> Option<String> {
    let (_, rest) = dn.split_once('=')?;
    let mut value = String::new();
    let mut escaped = false;
    for c in rest.chars() {
        match (escaped, c) {
            (true, c) => {
                value.push(c);
                escaped = false;
            }
            (false, '\\') => escaped = true,
            (false, ',' | '+') => break,
            (false, c) => value.push(c),
        }
    }
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_named_by_its_dns_first_value() {
        assert_eq!(
            first_value("cn=devs,ou=groups,dc=example,dc=org").as_deref(),
            Some("devs")
        );
        assert_eq!(
            first_value("CN=Domain Admins,CN=Users,DC=x").as_deref(),
            Some("Domain Admins")
        );
        assert_eq!(first_value(r"cn=a\,b,ou=g").as_deref(), Some("a,b"));
        assert_eq!(first_value("nothing"), None);
    }

    #[test]
    fn the_account_name_comes_from_the_attribute_the_filter_matches() {
        let with = |filter: &str, attribute: Option<&str>| {
            let mut config: config::Ldap = toml::from_str(&format!(
                "url = \"ldap://x.invalid\"\nbind_dn = \"cn=a\"\nbind_password_file = \"p\"\n\
                 user_base = \"dc=x\"\nuser_filter = {filter:?}"
            ))
            .expect("a config");
            config.username_attribute = attribute.map(str::to_string);
            naming_attribute(&config)
        };
        assert_eq!(with("(uid={username})", None).as_deref(), Ok("uid"));
        assert_eq!(
            with("(&(objectClass=user)(sAMAccountName={username}))", None).as_deref(),
            Ok("sAMAccountName")
        );
        assert_eq!(
            with("(|(mail={username})(uid={username}))", None).as_deref(),
            Ok("mail")
        );
        assert_eq!(with("(cn~={username})", Some("uid")).as_deref(), Ok("uid"));
        assert!(with("(cn~={username})", None).is_err_and(|e| e.contains("username_attribute")));
    }

    #[test]
    fn directory_errors_say_what_to_change() {
        let starttls = ldap3::LdapError::LdapResult {
            result: ldap3::LdapResult {
                rc: 2,
                matched: String::new(),
                text: "unsupported extended operation".into(),
                refs: Vec::new(),
                ctrls: Vec::new(),
            },
        };
        assert!(
            explain(&starttls).contains("does not offer StartTLS"),
            "{}",
            explain(&starttls)
        );
        let tls = ldap3::LdapError::Io {
            source: std::io::Error::other("invalid peer certificate: UnknownIssuer"),
        };
        assert!(
            explain(&tls).contains("[identity.ldap] ca"),
            "{}",
            explain(&tls)
        );
    }

    #[test]
    fn filter_metacharacters_in_names_are_escaped() {
        assert_eq!(ldap_escape("*)(uid=*"), r"\2a\29\28uid=\2a");
        assert_eq!(ldap_escape("a\\b\0"), r"a\5cb\00");
    }
}
