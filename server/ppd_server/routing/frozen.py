"""A faster ``__init__`` for the frozen, slotted dataclasses a policy builds on every decision.

A frozen dataclass's generated ``__init__`` stores each field through ``object.__setattr__``
(its own ``__setattr__`` refuses): a generic attribute lookup per field. With ``slots=True``
each field is a slot, and a slot is stored fastest by plain attribute assignment on a class
whose ``__setattr__`` is the default: :func:`fast_init` makes a *shadow* class with the very same
``__slots__`` (hence the same memory layout; Python checks it), and the new ``__init__`` turns the
instance into the shadow, assigns every field, and turns it back (``__class__`` assignment, which
Python allows between heap types of one layout). That is about four times as fast as the
generated ``__init__``; a ``WorkerView`` (20 fields) is built a few times per routed request in
the router and per simulated turn in ``ppd-sim``, and a few candidates and a decision per turn,
where that is a few percent of the run. A class whose layout the check refuses (e.g. a slotted
base class) stores each field through its slot's descriptor instead (about twice as fast).

:func:`fast_init` replaces the class's ``__init__`` with one of the same signature (the same
parameters, in the same order, with the same defaults and default factories) that stores each
field, in field order, and sets ``init=False`` fields to their defaults, as the generated one
does. Nothing else changes: the class stays frozen (assignment
still raises), equality, hashing, ``repr``, ``dataclasses.replace`` and pickling are the
dataclass's own. Only for classes without ``__post_init__``, keyword-only fields or InitVars
(checked: a TypeError at import otherwise).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class _Factory:
    """The default of a parameter whose field has a default factory (shown as dataclasses shows it)."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def fast_init(cls: type[T]) -> type[T]:
    """Class decorator, applied above ``@dataclass(frozen=True, slots=True)``."""
    params = dataclasses.fields(cls)  # type: ignore[arg-type]
    if not getattr(cls, "__dataclass_params__").frozen or "__slots__" not in cls.__dict__:  # noqa: B009
        raise TypeError(f"fast_init: {cls.__name__} is not a frozen slotted dataclass")
    if hasattr(cls, "__post_init__") or any(f.kw_only is True for f in params):
        raise TypeError(f"fast_init: {cls.__name__} has __post_init__ or keyword-only fields")
    ns: dict[str, Any] = {"_FACTORY": _FACTORY, "_set_class": object.__setattr__, "_cls": cls}
    shadow = _shadow(cls)
    ns["_shadow"] = shadow
    args: list[str] = []
    body: list[str] = []
    for f in params:
        ns[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        has_default = f.default is not dataclasses.MISSING
        has_factory = f.default_factory is not dataclasses.MISSING
        ns[f"_default_{f.name}"] = f.default
        ns[f"_factory_{f.name}"] = f.default_factory
        if not f.init:
            if has_factory:
                value = f"_factory_{f.name}()"
            elif has_default:
                value = f"_default_{f.name}"
            else:  # the generated __init__ leaves it unset too
                continue
        elif has_factory:
            args.append(f"{f.name}=_FACTORY")
            value = f"_factory_{f.name}() if {f.name} is _FACTORY else {f.name}"
        elif has_default:
            args.append(f"{f.name}=_default_{f.name}")
            value = f.name
        else:
            args.append(f.name)
            value = f.name
        body.append(f"    self.{f.name} = {value}" if shadow is not None else f"    _set_{f.name}(self, {value})")
    if shadow is not None and body:
        body = ["    _set_class(self, '__class__', _shadow)", *body, "    _set_class(self, '__class__', _cls)"]
    src = f"def __init__(self, {', '.join(args)}) -> None:\n" + ("\n".join(body) or "    pass") + "\n"
    exec(src, ns)  # generated from the class's own field list, as dataclasses does
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    setattr(cls, "__init__", init)  # noqa: B010
    if shadow is not None:
        # constructor(cls): the object is made as the shadow, so one class switch (not two) and no
        # type call; the same parameters and field stores as __init__
        ns["_new"] = object.__new__
        stores = body[1:-1]  # __init__'s field stores, without its two switches
        make_src = (
            f"def _make({', '.join(args)}):\n    self = _new(_shadow)\n"
            + "".join(line + "\n" for line in stores)
            + "    _set_class(self, '__class__', _cls)\n    return self\n"
        )
        exec(make_src, ns)
        make = ns["_make"]
        make.__qualname__ = f"{cls.__qualname__}._fast_new"
        make.__module__ = cls.__module__
        make.__doc__ = f"``{cls.__name__}(...)``, built faster (``routing.frozen.constructor``)."
        setattr(cls, "_fast_new", staticmethod(make))  # noqa: B010
    return cls


def constructor(cls: type[T]) -> Callable[..., T]:
    """A function that builds ``cls`` objects exactly as ``cls(...)`` does (same parameters,
    defaults and stored fields; a plain ``cls`` instance, frozen as ever), for the few hot paths
    that build one per worker or per decision. For a :func:`fast_init` class with a shadow, the
    object is allocated as the shadow and switched to ``cls`` once, where ``cls(...)`` goes
    through ``type.__call__`` and switches twice: about 40% less per object (a ``WorkerView``
    0.63 -> 0.36 us on the dev box). Any other class: ``cls`` itself."""
    make = cls.__dict__.get("_fast_new")
    return cls if make is None else make.__func__


def _shadow(cls: type) -> type | None:
    """A plain class with ``cls``'s exact slots (the same layout), or None when Python will not
    switch an instance of ``cls`` to it and back (``__class__`` assignment checks the layouts)."""
    shadow = type(f"_{cls.__name__}Init", (), {"__slots__": cls.__dict__["__slots__"], "__module__": cls.__module__})
    try:
        probe: object = object.__new__(cls)
        object.__setattr__(probe, "__class__", shadow)
        object.__setattr__(probe, "__class__", cls)
    except TypeError:
        return None
    return shadow
