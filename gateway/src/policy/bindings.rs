//! Host bindings generated from the policy worlds: the current one in `policy-sdk/wit` (the
//! single source of truth for the guest and the host), and 0.2.0 and 0.1.0, frozen in
//! `gateway/wit`, for modules built before requests carried the time and facts (and, for
//! 0.1.0, before accounts carried their source and claims).

/// `portcullis:policy@0.3.0`, the world the SDK builds.
pub mod current {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../policy-sdk/wit",
        additional_derives: [PartialEq, Eq],
    });
}

/// `portcullis:policy@0.2.0`: requests without the time and facts, decisions without a rule.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "wit/policy-0.2.0",
    });
}

/// `portcullis:policy@0.1.0`: accounts without source and claims.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "wit/policy-0.1.0",
    });
}
