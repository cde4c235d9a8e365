"""Finding verifiers: built-ins, the entry-point group `tether.verifiers`, or "module:function".

A plugin package declares, in its pyproject.toml,

    [project.entry-points."tether.verifiers"]
    has_citation = "mypkg.checks:has_citation"

and a config names it: `verifiers: [{fn: has_citation, weight: 0.2}]`."""
from __future__ import annotations

import functools
import importlib
import inspect
from importlib.metadata import entry_points
from typing import Callable

from verifiers.config import VerifierSpec
from verifiers.types import Verifier

ENTRY_POINT_GROUP = "tether.verifiers"
BUILT_INS = {
    "math": "verifiers.math_answers:math_answer",
    "code": "verifiers.code:code_tests",
    "format": "verifiers.format:tag_format",
    "facts": "verifiers.facts:fact_claims",
}


class VerifierNotFound(LookupError):
    """A verifier name that resolves to nothing; the message says where it was looked for."""


def resolve(name: str) -> Verifier:
    """The function a config's `fn` names."""
    return load_named(name, ENTRY_POINT_GROUP, BUILT_INS, "verifier", VerifierNotFound, "function")


def load_named(name: str, group: str, built_ins: dict[str, str], what: str, error: type[LookupError],
               kind: str) -> Callable:
    """The callable `name` names: a "module:attr" string, a built-in (name -> "module:attr"), or an entry point of
    `group`. Otherwise `error`, saying where it looked (`what`/`kind` word the message: "verifier", "function")."""
    target = name if ":" in name else built_ins.get(name)
    if target is None:
        found = entry_points(group=group).select(name=name)
        if found:
            return next(iter(found)).load()
        installed = sorted(ep.name for ep in entry_points(group=group))
        raise error(f"{what} '{name}': not a built-in ({', '.join(built_ins) or 'none'}), not an entry point in group "
                    f"'{group}' (installed: {', '.join(installed) or 'none'}), and not a 'module:function' string")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:      # a missing module, or one that fails as it loads (a syntax error, a raise)
        raise error(f"{what} '{name}': cannot import module '{module_name}': {type(e).__name__}: {e}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise error(f"{what} '{name}': module '{module_name}' has no {kind} '{attr}'")
    return fn


def bind(spec: VerifierSpec) -> Verifier:
    """The verifier with its options applied; options it does not take are an error here, not mid-run."""
    fn = resolve(spec.fn)
    try:
        inspect.signature(fn).bind(None, "", **spec.options)
    except TypeError as e:
        raise ValueError(f"verifier '{spec.label}': options {dict(spec.options)} do not fit "
                         f"{fn.__name__}{inspect.signature(fn)}: {e}") from None
    return functools.partial(fn, **spec.options) if spec.options else fn
