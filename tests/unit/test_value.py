"""The value classes behave as the frozen dataclasses they replace, where the code relies on it."""

from __future__ import annotations

import pytest

from orchestrator.value import FrozenInstanceError, Value, field


class Point(Value):
    x: int
    y: int = 0
    tags: list[str] = field(factory=list, hash=False)


class Counter(Value, frozen=False):
    n: int = 0
    seen: list[int] = field(factory=list)


def test_fields_by_position_or_keyword_with_defaults_and_fresh_factories():
    p, q = Point(1), Point(x=1)
    assert (p.x, p.y, p.tags) == (1, 0, []) and p == q
    p.tags.append("a")
    assert q.tags == []  # a factory default is never shared
    assert Point(1, 2, ["t"]).as_dict() == {"x": 1, "y": 2, "tags": ["t"]}
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags=[])"


def test_wrong_arguments_are_refused_as_a_function_call_would_be():
    with pytest.raises(TypeError, match="missing argument 'x'"):
        Point()
    with pytest.raises(TypeError, match="has no field 'z'"):
        Point(1, z=2)
    with pytest.raises(TypeError, match="multiple values"):
        Point(1, x=2)
    with pytest.raises(TypeError, match="takes 3 arguments"):
        Point(1, 2, [], 4)


def test_frozen_values_hash_by_value_and_refuse_assignment():
    assert hash(Point(1, 2, ["a"])) == hash(Point(1, 2, ["b"]))  # tags: hash=False
    assert Point(1, 2, ["a"]) != Point(1, 2, ["b"])               # but still compared
    assert len({Point(1), Point(1), Point(2)}) == 2
    with pytest.raises(FrozenInstanceError):
        Point(1).x = 3
    with pytest.raises(AttributeError):
        del Point(1).x
    moved = Point(1, 2).replace(y=5)
    assert (moved.x, moved.y) == (1, 5)


def test_a_field_can_be_kept_out_of_the_repr_but_not_out_of_equality():
    class Login(Value):
        user: str
        token: str = field(default="", repr=False)

    assert repr(Login("me", "t0k3n")) == "Login(user='me', token=<not shown>)"
    assert Login("me", "a") != Login("me", "b")


def test_mutable_values_allow_assignment_and_are_not_hashable():
    c = Counter()
    c.n += 1
    assert c == Counter(1) and c != Point(1)
    with pytest.raises(TypeError):
        hash(c)


def test_class_definitions_that_would_share_state_or_misorder_fields_are_refused():
    with pytest.raises(TypeError, match="mutable default"):
        class Shared(Value):  # noqa: F811
            items: list[int] = []
    with pytest.raises(TypeError, match="without a default follows"):
        class Misordered(Value):
            a: int = 0
            b: int
