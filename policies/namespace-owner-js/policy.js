// The namespace-owner policy in JavaScript, the twin of policies/namespace-owner (Rust):
// every user owns `<account>/...` (pull, push, delete there), authenticated users pull
// everything else, anonymous requests get nothing. Built with componentize-qjs (QuickJS;
// scripts/polyglot.sh).

/** The asked actions that are in `allowed`, in the order asked. */
function grant(request, allowed, reason) {
  const granted = request.scope.actions.filter((action) => allowed.includes(action));
  return { granted, reason, rule: null };
}

export function configure(settings) {
  let value;
  try {
    value = JSON.parse(settings);
  } catch (error) {
    throw `the settings are not JSON: ${error}`;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value) || Object.keys(value).length > 0) {
    throw "namespace-owner takes no settings";
  }
}

export function needs() {
  return {};
}

export function authorize(request) {
  const account = request.account;
  if (!account.authenticated) {
    return grant(request, [], "anonymous requests get nothing");
  }
  if (request.scope.type !== "repository") {
    return grant(request, [], "only repositories are owned");
  }
  if (request.scope.name.startsWith(`${account.name}/`)) {
    return grant(request, ["pull", "push", "delete"], "own namespace");
  }
  return grant(request, ["pull"], "authenticated users pull everything");
}
