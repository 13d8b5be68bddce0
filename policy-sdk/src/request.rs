//! The request and decision types of the policy world, with builders for native tests and
//! helpers that keep decisions well-formed.

use crate::bindings::portcullis::policy::types;

/// Who is asking: see [`Request::account`].
pub use types::Account;
/// The decision a policy returns: see [`Request::grant`] and [`Decision::deny`].
pub use types::Decision;
/// What the gateway looked up in the registry for a request: see [`Policy::needs`](crate::Policy::needs).
pub use types::Facts;
/// What a registry request operates on (gateway mode).
pub use types::Kind;
/// The facts and the clock a policy asks for: see [`Policy::needs`](crate::Policy::needs).
pub use types::Needs;
/// The concrete registry operation behind a scope (gateway mode).
pub use types::Operation;
/// How a manifest or blob is named in a request path: a tag or a digest.
pub use types::Reference;
/// Everything a policy may base its decision on.
pub use types::Request;
/// One resource and the actions asked on it, as in `repository:team/app:pull,push`.
pub use types::Scope;
/// The keys whose valid signature covers a manifest.
pub use types::Signatures;
/// What a tag names in the registry now.
pub use types::TagNow;

impl Request {
    /// An anonymous request for `scope` on the service `registry`, with no client address
    /// and no operation. Chain the other builders to fill in the rest.
    pub fn new(scope: Scope) -> Request {
        Request {
            account: Account::anonymous(),
            scope,
            service: "registry".to_string(),
            client_ip: None,
            operation: None,
            time: 0,
            facts: Facts::none(),
        }
    }

    /// Sets the time of the decision (seconds since the Unix epoch).
    pub fn time(mut self, time: u64) -> Request {
        self.time = time;
        self
    }

    /// Sets what the tag names now: `None` when the repository has no such tag.
    pub fn tag_digest(mut self, digest: Option<&str>) -> Request {
        self.facts.tag_digest = Some(match digest {
            Some(digest) => TagNow::At(digest.to_string()),
            None => TagNow::Absent,
        });
        self
    }

    /// Sets the digest of the manifest being pushed.
    pub fn pushed_digest(mut self, digest: &str) -> Request {
        self.facts.pushed_digest = Some(digest.to_string());
        self
    }

    /// Sets the tags that name the manifest being deleted by digest.
    pub fn digest_tags<I, S>(mut self, tags: I) -> Request
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.facts.digest_tags = Some(tags.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the keys whose valid signature covers the manifest `digest` being served.
    pub fn signatures<I, S>(mut self, digest: &str, keys: I) -> Request
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.facts.signatures = Some(Signatures {
            digest: digest.to_string(),
            keys: keys.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// Sets an authenticated htpasswd account with this name (keeping its groups).
    pub fn account(mut self, name: &str) -> Request {
        self.account.name = name.to_string();
        self.account.authenticated = true;
        if self.account.source.is_empty() {
            self.account.source = "htpasswd".to_string();
        }
        self
    }

    /// Sets where the account was found: `htpasswd`, or an OIDC issuer's URL.
    pub fn source(mut self, source: &str) -> Request {
        self.account.source = source.to_string();
        self
    }

    /// Adds a claim of the account's token (an object's member as `a/b`).
    pub fn claim(mut self, name: &str, value: &str) -> Request {
        self.account
            .claims
            .push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the account's groups.
    pub fn groups<I, S>(mut self, groups: I) -> Request
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.account.groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the service the token is for.
    pub fn service(mut self, service: &str) -> Request {
        self.service = service.to_string();
        self
    }

    /// Sets the client's address.
    pub fn client_ip(mut self, ip: &str) -> Request {
        self.client_ip = Some(ip.to_string());
        self
    }

    /// Sets the registry operation (gateway mode).
    pub fn operation(mut self, operation: Operation) -> Request {
        self.operation = Some(operation);
        self
    }

    /// Grants the requested actions that are also in `allowed`, in the order they were asked;
    /// `*` in `allowed` stands for every requested action. The result never holds an action
    /// that was not asked for.
    pub fn grant<'a, I>(&self, allowed: I) -> Decision
    where
        I: IntoIterator<Item = &'a str>,
    {
        let allowed: Vec<&str> = allowed.into_iter().collect();
        let granted = if allowed.contains(&"*") {
            self.scope.actions.clone()
        } else {
            self.scope
                .actions
                .iter()
                .filter(|asked| allowed.contains(&asked.as_str()))
                .cloned()
                .collect()
        };
        Decision {
            granted,
            reason: None,
            rule: None,
        }
    }
}

impl Facts {
    /// No facts: what a request carries when no policy needs any, in token-server mode,
    /// and for the operations a fact does not concern.
    pub fn none() -> Facts {
        Facts {
            tag_digest: None,
            pushed_digest: None,
            digest_tags: None,
            signatures: None,
        }
    }
}

impl Account {
    /// The account of an unauthenticated request: empty name, no groups, no source.
    pub fn anonymous() -> Account {
        Account {
            name: String::new(),
            authenticated: false,
            groups: Vec::new(),
            source: String::new(),
            claims: Vec::new(),
        }
    }

    /// The first value of the claim `name` of the account's token (`repository`,
    /// `kubernetes.io/namespace`), if it has one.
    pub fn claim(&self, name: &str) -> Option<&str> {
        self.claims
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of the claim `name` (a list claim has one per element).
    pub fn claims<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.claims
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// True for unauthenticated requests.
    pub fn is_anonymous(&self) -> bool {
        !self.authenticated
    }

    /// True when the account is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

impl Scope {
    /// A scope on a resource of any type.
    pub fn new<I, S>(resource_type: &str, name: &str, actions: I) -> Scope
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Scope {
            type_: resource_type.to_string(),
            class: None,
            name: name.to_string(),
            actions: actions.into_iter().map(Into::into).collect(),
        }
    }

    /// A scope on a repository, such as `repository:team/app:pull,push`.
    pub fn repository<I, S>(name: &str, actions: I) -> Scope
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Scope::new("repository", name, actions)
    }

    /// The catalog scope, `registry:catalog:*`.
    pub fn catalog() -> Scope {
        Scope::new("registry", "catalog", ["*"])
    }

    /// True for `repository` scopes.
    pub fn is_repository(&self) -> bool {
        self.type_ == "repository"
    }
}

impl Operation {
    /// An operation with no reference and no mount source.
    pub fn new(method: &str, kind: Kind) -> Operation {
        Operation {
            method: method.to_string(),
            kind,
            reference: None,
            mount_from: None,
        }
    }

    /// Names the manifest by tag.
    pub fn tag(mut self, tag: &str) -> Operation {
        self.reference = Some(Reference::Tag(tag.to_string()));
        self
    }

    /// Names the manifest or blob by digest.
    pub fn digest(mut self, digest: &str) -> Operation {
        self.reference = Some(Reference::Digest(digest.to_string()));
        self
    }

    /// Marks a cross-repository blob mount from `repository`.
    pub fn mount_from(mut self, repository: &str) -> Operation {
        self.mount_from = Some(repository.to_string());
        self
    }
}

impl Decision {
    /// Grants nothing, saying why.
    pub fn deny(reason: &str) -> Decision {
        Decision {
            granted: Vec::new(),
            reason: Some(reason.to_string()),
            rule: None,
        }
    }

    /// Attaches a reason for the decision log.
    pub fn because(mut self, reason: &str) -> Decision {
        self.reason = Some(reason.to_string());
        self
    }

    /// Names the rule that decided (as the policy numbers or names its rules).
    pub fn rule(mut self, rule: &str) -> Decision {
        self.rule = Some(rule.to_string());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_keeps_only_requested_actions_in_request_order() {
        let req = Request::new(Scope::repository("a/b", ["push", "pull"])).account("u");
        assert_eq!(
            req.grant(["pull", "push", "delete"]).granted,
            ["push", "pull"]
        );
        assert_eq!(req.grant(["delete"]).granted, Vec::<String>::new());
    }

    #[test]
    fn star_grants_everything_requested_and_nothing_more() {
        let req = Request::new(Scope::repository("a/b", ["pull"]));
        assert_eq!(req.grant(["*"]).granted, ["pull"]);
        let catalog = Request::new(Scope::catalog());
        assert_eq!(catalog.grant(["*"]).granted, ["*"]);
        assert!(catalog.grant(["pull"]).granted.is_empty());
    }

    #[test]
    fn operation_builders_name_the_reference_and_mount() {
        let op = Operation::new("PUT", Kind::Manifest).tag("v1");
        assert_eq!(op.reference, Some(Reference::Tag("v1".into())));
        let op = Operation::new("POST", Kind::Upload)
            .mount_from("base/img")
            .digest("sha256:ab");
        assert_eq!(op.mount_from.as_deref(), Some("base/img"));
        assert_eq!(op.reference, Some(Reference::Digest("sha256:ab".into())));
        let req = Request::new(Scope::repository("a", ["push"])).operation(op.clone());
        assert_eq!(req.operation, Some(op));
        assert_eq!(
            Decision::deny("no").because("why").reason.as_deref(),
            Some("why")
        );
    }

    #[test]
    fn fact_builders_fill_the_facts() {
        let req = Request::new(Scope::repository("a", ["push"]))
            .time(7)
            .tag_digest(None)
            .pushed_digest("sha256:ab")
            .digest_tags(["v1"])
            .signatures("sha256:ab", ["ci"]);
        assert_eq!(req.time, 7);
        assert_eq!(req.facts.tag_digest, Some(TagNow::Absent));
        assert_eq!(req.facts.pushed_digest.as_deref(), Some("sha256:ab"));
        assert_eq!(req.facts.digest_tags, Some(vec!["v1".to_string()]));
        assert_eq!(
            req.facts.signatures.map(|s| s.keys),
            Some(vec!["ci".to_string()])
        );
        assert_eq!(
            Request::new(Scope::catalog())
                .tag_digest(Some("sha256:cd"))
                .facts
                .tag_digest,
            Some(TagNow::At("sha256:cd".into()))
        );
        assert_eq!(Decision::deny("no").rule("3").rule.as_deref(), Some("3"));
    }

    #[test]
    fn builders_fill_the_account() {
        let req = Request::new(Scope::repository("x", ["pull"]));
        assert!(req.account.is_anonymous());
        let req = req
            .account("alice")
            .groups(["ci", "dev"])
            .client_ip("10.0.0.1");
        assert!(!req.account.is_anonymous());
        assert!(req.account.in_group("ci"));
        assert_eq!(req.client_ip.as_deref(), Some("10.0.0.1"));
    }
}
