//! The policy worlds a module may be built against, and one way for the host to call any of
//! them: the current one (`portcullis:policy@0.3.0`: the time, facts from the registry, the
//! facts a policy needs, the rule that decided), 0.2.0 (accounts with their source and
//! claims) and 0.1.0. Older modules are loaded unchanged and see the request without what
//! their world lacks.

use super::bindings::{current, v0_1, v0_2};
use super::{Decision, Kind, Needs, Operation, Reference, Request, Scope};
use wasmtime::component::InstancePre;
use wasmtime::{AsContextMut, Result};

/// A compiled module, ready to instantiate, in the world it was built against.
pub enum Pre<T: 'static> {
    /// `portcullis:policy@0.3.0`.
    Current(current::PolicyPre<T>),
    /// `portcullis:policy@0.2.0`.
    V0_2(v0_2::PolicyPre<T>),
    /// `portcullis:policy@0.1.0`.
    V0_1(v0_1::PolicyPre<T>),
}

impl<T: 'static> Clone for Pre<T> {
    fn clone(&self) -> Pre<T> {
        match self {
            Pre::Current(pre) => Pre::Current(pre.clone()),
            Pre::V0_2(pre) => Pre::V0_2(pre.clone()),
            Pre::V0_1(pre) => Pre::V0_1(pre.clone()),
        }
    }
}

/// An instance of a module, in its world.
pub enum Bound {
    /// `portcullis:policy@0.3.0`.
    Current(current::Policy),
    /// `portcullis:policy@0.2.0`.
    V0_2(v0_2::Policy),
    /// `portcullis:policy@0.1.0`.
    V0_1(v0_1::Policy),
}

impl<T: 'static> Pre<T> {
    /// The module's world: the newest whose exports it fits; an error (the current world's
    /// complaint) when none fits.
    pub fn new(pre: InstancePre<T>) -> Result<Pre<T>> {
        match current::PolicyPre::new(pre.clone()) {
            Ok(current) => Ok(Pre::Current(current)),
            Err(error) => {
                if let Ok(older) = v0_2::PolicyPre::new(pre.clone()) {
                    Ok(Pre::V0_2(older))
                } else if let Ok(oldest) = v0_1::PolicyPre::new(pre) {
                    Ok(Pre::V0_1(oldest))
                } else {
                    Err(error)
                }
            }
        }
    }

    /// `0.3.0`, `0.2.0` or `0.1.0`.
    pub fn version(&self) -> &'static str {
        match self {
            Pre::Current(_) => "0.3.0",
            Pre::V0_2(_) => "0.2.0",
            Pre::V0_1(_) => "0.1.0",
        }
    }

    /// The linear memories one instance holds (1 when the component does not say).
    pub fn memories(&self) -> usize {
        let component = match self {
            Pre::Current(pre) => pre.instance_pre().component(),
            Pre::V0_2(pre) => pre.instance_pre().component(),
            Pre::V0_1(pre) => pre.instance_pre().component(),
        };
        component
            .resources_required()
            .map_or(1, |required| required.num_memories as usize)
    }

    /// A fresh instance in `store`.
    pub fn instantiate(&self, store: impl AsContextMut<Data = T>) -> Result<Bound> {
        Ok(match self {
            Pre::Current(pre) => Bound::Current(pre.instantiate(store)?),
            Pre::V0_2(pre) => Bound::V0_2(pre.instantiate(store)?),
            Pre::V0_1(pre) => Bound::V0_1(pre.instantiate(store)?),
        })
    }
}

impl Bound {
    /// The module's `configure`.
    pub fn configure<T: 'static>(
        &self,
        store: impl AsContextMut<Data = T>,
        settings: &str,
    ) -> Result<std::result::Result<(), String>> {
        match self {
            Bound::Current(policy) => policy.call_configure(store, settings),
            Bound::V0_2(policy) => policy.call_configure(store, settings),
            Bound::V0_1(policy) => policy.call_configure(store, settings),
        }
    }

    /// The module's `needs`; a module of an older world needs nothing.
    pub fn needs<T: 'static>(&self, store: impl AsContextMut<Data = T>) -> Result<Needs> {
        match self {
            Bound::Current(policy) => policy.call_needs(store),
            Bound::V0_2(_) | Bound::V0_1(_) => Ok(Needs::empty()),
        }
    }

    /// The module's `authorize`; an older module is asked without what its world lacks.
    pub fn authorize<T: 'static>(
        &self,
        store: impl AsContextMut<Data = T>,
        request: &Request,
    ) -> Result<Decision> {
        match self {
            Bound::Current(policy) => policy.call_authorize(store, request),
            Bound::V0_2(policy) => {
                let decision = policy.call_authorize(store, &to_v0_2(request))?;
                Ok(Decision {
                    granted: decision.granted,
                    reason: decision.reason,
                    rule: None,
                })
            }
            Bound::V0_1(policy) => {
                let decision = policy.call_authorize(store, &to_v0_1(request))?;
                Ok(Decision {
                    granted: decision.granted,
                    reason: decision.reason,
                    rule: None,
                })
            }
        }
    }
}

/// Converts the parts every world shares, field by field: each world's bindings have types
/// of their own with the same shape.
macro_rules! shared_parts {
    ($old:ident, $request:expr) => {{
        let request: &Request = $request;
        let Scope {
            type_,
            class,
            name,
            actions,
        } = &request.scope;
        let scope = $old::Scope {
            type_: type_.clone(),
            class: class.clone(),
            name: name.clone(),
            actions: actions.clone(),
        };
        let operation = request.operation.as_ref().map(|op| {
            let Operation {
                method,
                kind,
                reference,
                mount_from,
            } = op;
            $old::Operation {
                method: method.clone(),
                kind: match kind {
                    Kind::Base => $old::Kind::Base,
                    Kind::Manifest => $old::Kind::Manifest,
                    Kind::Blob => $old::Kind::Blob,
                    Kind::Upload => $old::Kind::Upload,
                    Kind::Tags => $old::Kind::Tags,
                    Kind::Catalog => $old::Kind::Catalog,
                    Kind::Referrers => $old::Kind::Referrers,
                },
                reference: reference.as_ref().map(|r| match r {
                    Reference::Tag(tag) => $old::Reference::Tag(tag.clone()),
                    Reference::Digest(digest) => $old::Reference::Digest(digest.clone()),
                }),
                mount_from: mount_from.clone(),
            }
        });
        (scope, operation)
    }};
}

fn to_v0_2(request: &Request) -> v0_2::portcullis::policy::types::Request {
    use v0_2::portcullis::policy::types as old;
    let (scope, operation) = shared_parts!(old, request);
    let account = &request.account;
    old::Request {
        account: old::Account {
            name: account.name.clone(),
            authenticated: account.authenticated,
            groups: account.groups.clone(),
            source: account.source.clone(),
            claims: account.claims.clone(),
        },
        scope,
        service: request.service.clone(),
        client_ip: request.client_ip.clone(),
        operation,
    }
}

fn to_v0_1(request: &Request) -> v0_1::portcullis::policy::types::Request {
    use v0_1::portcullis::policy::types as old;
    let (scope, operation) = shared_parts!(old, request);
    old::Request {
        account: old::Account {
            name: request.account.name.clone(),
            authenticated: request.account.authenticated,
            groups: request.account.groups.clone(),
        },
        scope,
        service: request.service.clone(),
        client_ip: request.client_ip.clone(),
        operation,
    }
}
