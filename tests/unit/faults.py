"""A registry that fails on purpose: wraps an ``InMemoryRegistry`` and makes its Nth call
about one model raise, once.

``after=False``: the call raises before it reaches the registry (nothing written).
``after=True``: the call is carried out, then raises (the write landed, the answer was lost:
what a server that dies mid-response leaves). Together they cover every point of every
multi-call action: before and after each of its registry calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from registry.memory import InMemoryRegistry


def _model_of(args: tuple[Any, ...]) -> str | None:
    if not args:
        return None
    first = args[0]
    if isinstance(first, str):
        return first
    return getattr(first, "model", None) or getattr(first, "name", None)  # a record, a NewVersion


class FaultyRegistry:
    def __init__(self, inner: InMemoryRegistry, *, model: str, fail_at: int | None = None,
                 error: Callable[[], Exception] | None = None, after: bool = False,
                 always: str | None = None) -> None:
        self.inner = inner
        self.always = always                # a method that fails on every call
        self.model = model
        self.fail_at = fail_at
        self.error = error
        self.after = after
        self.calls: list[str] = []          # the model's registry calls, in order
        self.fired: str | None = None       # the call that failed, once it did

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if _model_of(args) != self.model:
                return attr(*args, **kwargs)
            self.calls.append(name)
            hit = (self.fail_at is not None and len(self.calls) == self.fail_at) \
                or name == self.always
            if hit and not self.after:
                return self._fail(name)
            result = attr(*args, **kwargs)
            if hit:
                return self._fail(name)
            return result

        return call

    def _fail(self, name: str) -> Any:
        assert self.error is not None
        self.fired = f"call {self.fail_at} ({name}, {'after' if self.after else 'before'})"
        raise self.error()
