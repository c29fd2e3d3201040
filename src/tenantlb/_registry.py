"""`Registry`: a table of named factories, one per extension point (as limits' ``STRATEGIES``);
`publish`: public names show the package users import them from.

Balancers (`tenantlb.balancing.BALANCERS`), rate-limit algorithms
(`tenantlb.ratelimit.ALGORITHMS`), tenant resolvers (`tenantlb.tenants.RESOLVERS`) and stores
(`tenantlb.ratelimit.STORES`) each have one, filled next to their classes with the built-in names;
a config file names an entry, and a user adds their own:

```python
@tlb.register_balancer("first")
class First(tlb.BalancerBase): ...
```

Like `_errors` and `_clock`, this module imports nothing of tenantlb.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, final, overload

__all__ = ["Registry", "publish"]

F = TypeVar("F", bound=Callable[..., Any])


@final
class Registry(Generic[F]):
    """Named factories of one kind (``"balancer"``, ``"algorithm"``, ...).

    A factory is anything callable with the keyword arguments a config table gives it: usually the
    class itself.

    Args:
        kind: What the entries make, for messages: ``"unknown balancer 'x'"``.
    """

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._entries: dict[str, F] = {}

    def __repr__(self) -> str:
        return f"<Registry of {self._kind}s: {', '.join(self.names())}>"

    @property
    def kind(self) -> str:
        """What the entries make (``"balancer"``)."""
        return self._kind

    @overload
    def register(self, name: str, factory: F, /, *, replace: bool = False) -> F: ...

    @overload
    def register(self, name: str, /, *, replace: bool = False) -> Callable[[F], F]: ...

    def register(
        self, name: str, factory: F | None = None, /, *, replace: bool = False
    ) -> F | Callable[[F], F]:
        """Add *factory* under *name*; without *factory*, a decorator that does.

        Args:
            name: The name a config file uses (``"round_robin"``): a non-empty str.
            factory: A callable taking keyword arguments (usually a class).
            replace: Allow replacing an existing entry (a built-in included).

        Returns:
            *factory*, unchanged (or the decorator).

        Raises:
            TypeError: *name* is not a str or *factory* is not callable.
            ValueError: *name* is empty, or already registered and *replace* is false.
        """
        if not isinstance(name, str):
            msg = f"{self._kind} name must be a str, got {type(name).__name__}"
            raise TypeError(msg)
        if not name:
            msg = f"{self._kind} name must be a non-empty str, got ''"
            raise ValueError(msg)

        def add(factory: F) -> F:
            if not callable(factory):
                msg = f"{self._kind} factory must be callable, got {type(factory).__name__}"
                raise TypeError(msg)
            if name in self._entries and not replace and self._entries[name] is not factory:
                msg = (
                    f"{self._kind} {name!r} is already registered"
                    f" ({_describe(self._entries[name])}); pass replace=True to replace it"
                )
                raise ValueError(msg)
            self._entries[name] = factory
            return factory

        return add if factory is None else add(factory)

    def unregister(self, name: str) -> None:
        """Remove *name* (no error if it is absent)."""
        self._entries.pop(name, None)

    def get(self, name: object) -> F:
        """The factory registered under *name*.

        Raises:
            TypeError: *name* is not a str.
            ValueError: No such name; the message lists the known ones.
        """
        if not isinstance(name, str):
            msg = f"{self._kind} must be a name (str), got {type(name).__name__}"
            raise TypeError(msg)
        try:
            return self._entries[name]
        except KeyError:
            msg = f"unknown {self._kind} {name!r}; known: {', '.join(self.names())}"
            raise ValueError(msg) from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def _describe(factory: object) -> str:
    module = getattr(factory, "__module__", None)
    qualname = getattr(factory, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else repr(factory)


def publish(namespace: dict[str, Any], names: list[str], module: str) -> None:
    """Set ``__module__`` of the classes and functions *names* in *namespace* to *module*.

    A package ``__init__`` calls it on its ``__all__``, so `tenantlb.Pool` says it lives where it
    is imported from; pickling and attrs reprs look the name up there, where it is re-exported.
    """
    for name in names:
        obj = namespace[name]
        if isinstance(obj, type) or inspect.isfunction(obj):
            obj.__module__ = module
