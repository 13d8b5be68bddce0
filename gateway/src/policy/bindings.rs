//! Host bindings generated from the policy world in `policy-sdk/wit` (the single source of
//! truth for the guest and the host).

wasmtime::component::bindgen!({
    world: "policy",
    path: "../policy-sdk/wit",
});
