"""``routing.frozen.fast_init``: the views, candidates and decisions keep the dataclass
constructor's signature and build the very same objects, frozen as before."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from dataclasses import dataclass, field

import pytest

from ppd_sdk.wire import PRESETS
from ppd_server.routing import frozen as frozen_module
from ppd_server.routing import types
from ppd_server.routing.frozen import constructor, fast_init

CLASSES = [
    types.CostCoefficients,
    types.WorkerView,
    types.ClusterView,
    types.RequestView,
    types.SessionView,
    types.Candidate,
    types.Decision,
]


@dataclass(frozen=True, slots=True)
class _Plain:  # what the generated __init__ must reproduce
    a: int
    b: str = "x"
    c: list[int] = field(default_factory=lambda: [1])
    d: float | None = field(default=None, init=False, compare=False)


@fast_init
@dataclass(frozen=True, slots=True)
class _Fast:  # the same fields, with the fast __init__
    a: int
    b: str = "x"
    c: list[int] = field(default_factory=lambda: [1])
    d: float | None = field(default=None, init=False, compare=False)


@pytest.mark.parametrize("cls", CLASSES)
def test_signature_is_the_dataclass_one(cls):
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    fields = [f for f in dataclasses.fields(cls) if f.init]
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields, strict=True):
        if f.default is not dataclasses.MISSING:
            assert p.default is f.default
        elif f.default_factory is dataclasses.MISSING:
            assert p.default is inspect.Parameter.empty


def test_objects_equal_the_generated_constructor_ones():
    assert dataclasses.astuple(_Fast(3)) == dataclasses.astuple(_Plain(3)) == (3, "x", [1], None)
    assert dataclasses.astuple(_Fast(4, "y", [2])) == (4, "y", [2], None)
    assert _Fast(3).c is not _Fast(3).c  # the factory runs per object
    w = types.WorkerView("http://d0", "decode", running_reqs=3, inflight=2)
    assert (w.url, w.role, w.healthy, w.running_reqs, w.inflight, w.memo) == ("http://d0", "decode", True, 3, 2, None)
    assert w.coefficients == types.CostCoefficients() and w == types.WorkerView(
        "http://d0", "decode", True, running_reqs=3, inflight=2
    )
    r = types.RequestView("c", 2, 100)
    assert r.weights is PRESETS["balanced"] and r.max_new_tokens == 128
    assert dataclasses.replace(w, inflight=5).inflight == 5
    assert pickle.loads(pickle.dumps(w)) == w
    with pytest.raises(TypeError):
        types.Candidate("pd", "d", "p")  # ttft_ms, tpot_ms are required


def test_still_frozen():
    w = types.WorkerView("http://d0", "decode")
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.inflight = 3  # type: ignore[misc]


def test_refuses_what_it_cannot_reproduce():
    @dataclass(frozen=True, slots=True)
    class Post:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(slots=True)
    class Mutable:
        a: int

    for cls in (Post, Mutable):
        with pytest.raises(TypeError):
            fast_init(cls)


def test_objects_are_of_their_class_after_the_shadow_init():
    """The fast ``__init__`` assigns the fields on a shadow class of the same layout and turns the
    object back: it ends as its own class, frozen, hashable, equal to one built field by field."""
    for obj in (_Fast(1), types.WorkerView("u", "decode", inflight=1), types.Candidate("pd", "d", "p", 1.0, 2.0)):
        assert type(obj).__name__ in {"_Fast", "WorkerView", "Candidate"}
        assert type(obj).__init__.__qualname__ == f"{type(obj).__qualname__}.__init__"
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, dataclasses.fields(obj)[0].name, 1)
        if not isinstance(obj, _Fast):  # (its list field is unhashable)
            hash(obj)
    assert frozen_module._shadow(types.WorkerView) is not None
    assert "_set_class" in _Fast.__init__.__code__.co_names  # the shadow path, not the descriptors


def test_without_a_shadow_it_stores_through_the_slots(monkeypatch):
    """Where Python would refuse the ``__class__`` switch (``_shadow`` returns None) the ``__init__``
    stores each field through its slot descriptor, with the same result."""
    monkeypatch.setattr(frozen_module, "_shadow", lambda cls: None)

    @fast_init
    @dataclass(frozen=True, slots=True)
    class Slow:
        a: int
        b: str = "x"
        c: list[int] = field(default_factory=lambda: [1])
        d: float | None = field(default=None, init=False, compare=False)

    assert "_set_class" not in Slow.__init__.__code__.co_names
    assert dataclasses.astuple(Slow(3)) == dataclasses.astuple(_Plain(3))
    assert type(Slow(3)) is Slow
    with pytest.raises(dataclasses.FrozenInstanceError):
        Slow(3).a = 4  # type: ignore[misc]


@pytest.mark.parametrize("cls", CLASSES)
def test_constructor_has_the_constructor_signature(cls):
    make = constructor(cls)
    assert make is not cls  # every routing type has a shadow: the fast path
    assert list(inspect.signature(make).parameters) == list(inspect.signature(cls.__init__).parameters)[1:]


def test_constructor_builds_what_the_class_builds():
    """``constructor(cls)(...)`` is ``cls(...)``: same class, fields, defaults (a factory runs per
    object, an ``init=False`` field gets its default), frozen and hashable."""
    make = constructor(_Fast)
    for args, kwargs in (((3,), {}), ((4, "y", [2]), {}), ((5,), {"c": [7]})):
        a, b = make(*args, **kwargs), _Fast(*args, **kwargs)
        assert type(a) is _Fast and dataclasses.astuple(a) == dataclasses.astuple(b) == dataclasses.astuple(
            _Plain(*args, **kwargs)
        )
    assert make(3).c is not make(3).c
    w = constructor(types.WorkerView)("http://d0", "decode", running_reqs=3, inflight=2)
    assert type(w) is types.WorkerView and w == types.WorkerView("http://d0", "decode", running_reqs=3, inflight=2)
    assert w.memo is None and w.coefficients == types.CostCoefficients()
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.inflight = 3  # type: ignore[misc]
    hash(w)
    assert pickle.loads(pickle.dumps(w)) == w
    with pytest.raises(TypeError):
        constructor(types.Candidate)("pd", "d", "p")  # ttft_ms, tpot_ms are required


def test_constructor_of_other_classes_is_the_class(monkeypatch):
    """Without a shadow (or without fast_init) there is no faster way: the class itself."""
    monkeypatch.setattr(frozen_module, "_shadow", lambda cls: None)

    @fast_init
    @dataclass(frozen=True, slots=True)
    class Slow:
        a: int

    assert constructor(Slow) is Slow and constructor(_Plain) is _Plain
