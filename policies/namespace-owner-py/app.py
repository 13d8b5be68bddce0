"""The namespace-owner policy in Python, the twin of policies/namespace-owner (Rust): every
user owns `<account>/...` (pull, push, delete there), authenticated users pull everything
else, anonymous requests get nothing. Built with componentize-py (scripts/polyglot.sh)."""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import types


def grant(request: types.Request, allowed: list[str], reason: str) -> types.Decision:
    """The asked actions that are in `allowed`, in the order asked."""
    granted = [action for action in request.scope.actions if action in allowed]
    return types.Decision(granted=granted, reason=reason, rule=None)


class WitWorld(wit_world.WitWorld):
    def configure(self, settings: str) -> None:
        try:
            value = json.loads(settings)
        except ValueError as error:
            raise Err(f"the settings are not JSON: {error}")
        if value != {}:
            raise Err("namespace-owner takes no settings")

    def needs(self) -> types.Needs:
        return types.Needs(0)

    def authorize(self, request: types.Request) -> types.Decision:
        account = request.account
        if not account.authenticated:
            return grant(request, [], "anonymous requests get nothing")
        if request.scope.type != "repository":
            return grant(request, [], "only repositories are owned")
        if request.scope.name.startswith(account.name + "/"):
            return grant(request, ["pull", "push", "delete"], "own namespace")
        return grant(request, ["pull"], "authenticated users pull everything")
