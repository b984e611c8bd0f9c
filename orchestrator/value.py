"""Value classes: fields declared by annotations, as with dataclasses, for a fraction of the start-up.

Why not `dataclasses`: every command builds its config objects from ~15 such classes, and on the
2-core machines this tool is benchmarked on, importing `dataclasses` (it pulls in inspect, ast,
dis and tokenize) took ~15 ms and generating the methods of those classes (one `exec` per method
per class) another ~17 ms: a quarter of `validate`'s own time (bench/README.md). Here one
generic `__init__`, `__eq__`, `__hash__` and `__repr__` serve every class, so declaring a class
compiles nothing; building an instance costs a few microseconds more, which the few hundred
objects of a 64-instance config never notice.

    class Mount(Value):                 # frozen: assignment raises, instances hash by value
        source: str
        read_only: bool = False

    class Project(Value, frozen=False):  # mutable: assignment allowed, not hashable
        problems: list[Problem] = field(factory=list)

What it keeps of dataclasses: fields in annotation order (a base class's first), positional or
keyword arguments, defaults, `field(factory=...)` for mutable defaults, `field(hash=False)`, `field(repr=False)`,
`replace()`, equality between instances of the same class, a readable repr. What it leaves out, unused here:
ordering, `__post_init__`, slots, keyword-only fields.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
elif TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:  # Python 3.10: the declaration is for type checkers only
    def dataclass_transform(**kwargs: Any) -> Callable[[type], type]:
        return lambda cls: cls

_MISSING: Any = object()


class _Field:
    __slots__ = ("default", "factory", "hash", "repr")

    def __init__(self, default: Any, factory: Callable[[], Any] | None, hash: bool, repr: bool) -> None:
        self.default, self.factory, self.hash, self.repr = default, factory, hash, repr


def field(*, default: Any = _MISSING, factory: Callable[[], Any] | None = None, hash: bool = True,
          repr: bool = True) -> Any:
    """A field's default (`factory` is called for every instance), whether it counts in the hash,
    and whether repr() shows its value (not for secrets: a repr ends up in tracebacks and test logs)."""
    if default is not _MISSING and factory is not None:
        raise TypeError("field() takes a default or a factory, not both")
    return _Field(default, factory, hash, repr)


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen value."""


# Type checkers read a Value subclass as they read a dataclass: the generated __init__ takes the
# fields in order, field(default=..., factory=...) gives their defaults, frozen unless the class
# says `frozen=False` (PEP 681). Nothing of it runs: it only records these options on the class.
@dataclass_transform(field_specifiers=(field,), frozen_default=True)
class Value:
    """Base of the value classes; see the module docstring."""

    _fields: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}
    _factories: dict[str, Callable[[], Any]] = {}
    _field_names: frozenset[str] = frozenset()
    _hashed: tuple[str, ...] = ()
    _hidden: frozenset[str] = frozenset()
    _frozen: bool = True

    def __init_subclass__(cls, frozen: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields = list(cls._fields)
        defaults, factories = dict(cls._defaults), dict(cls._factories)
        hashed = list(cls._hashed)
        hidden = set(cls._hidden)
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():
            if str(annotation).startswith(("ClassVar", "typing.ClassVar")):
                continue
            declared = cls.__dict__.get(name, _MISSING)
            spec = declared if isinstance(declared, _Field) else _Field(declared, None, True, True)
            if isinstance(declared, _Field):
                if spec.default is _MISSING:
                    delattr(cls, name)  # no class attribute shadowing a missing value
                else:
                    setattr(cls, name, spec.default)
            if name not in fields:
                fields.append(name)
            defaults.pop(name, None)
            factories.pop(name, None)
            if spec.factory is not None:
                factories[name] = spec.factory
            elif spec.default is not _MISSING:
                if isinstance(spec.default, (list, dict, set)):
                    raise TypeError(f"{cls.__name__}.{name}: a mutable default is shared; use field(factory=...)")
                defaults[name] = spec.default
            elif any(f in defaults or f in factories for f in fields if f != name):
                raise TypeError(f"{cls.__name__}.{name}: a field without a default follows one with a default")
            if spec.repr:
                hidden.discard(name)
            else:
                hidden.add(name)
            if spec.hash and name not in hashed:
                hashed.append(name)
            elif not spec.hash and name in hashed:
                hashed.remove(name)
        cls._fields, cls._field_names = tuple(fields), frozenset(fields)
        cls._defaults, cls._factories, cls._hashed = defaults, factories, tuple(hashed)
        cls._hidden = frozenset(hidden)
        cls._frozen = frozen
        if not frozen:
            cls.__hash__ = None  # type: ignore[assignment]  # mutable and compared by value

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Dict operations in C do the work: this runs for every config object of every command.
        fields = self._fields
        values = self._defaults.copy()
        if args:
            if len(args) > len(fields):
                raise TypeError(f"{type(self).__name__}() takes {len(fields)} arguments, {len(args)} given")
            if kwargs and not kwargs.keys().isdisjoint(fields[:len(args)]):
                raise TypeError(f"{type(self).__name__}() got multiple values for one argument")
            values.update(zip(fields, args))
        if kwargs:
            unknown = kwargs.keys() - self._field_names
            if unknown:
                raise TypeError(f"{type(self).__name__}() has no field {sorted(unknown)[0]!r}")
            values.update(kwargs)
        if len(values) < len(fields):
            for name, factory in self._factories.items():
                if name not in values:
                    values[name] = factory()
            if len(values) < len(fields):
                missing = [name for name in fields if name not in values]
                raise TypeError(f"{type(self).__name__}() missing argument {missing[0]!r}")
        object.__setattr__(self, "__dict__", values)

    def __setattr__(self, name: str, value: Any) -> None:
        if self._frozen:
            raise FrozenInstanceError(f"cannot assign to field {name!r} of frozen {type(self).__name__}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if self._frozen:
            raise FrozenInstanceError(f"cannot delete field {name!r} of frozen {type(self).__name__}")
        object.__delattr__(self, name)

    def _values(self, names: tuple[str, ...]) -> tuple[Any, ...]:
        state = self.__dict__
        return tuple(state[name] for name in names)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values(self._fields) == other._values(self._fields)

    def __hash__(self) -> int:
        return hash((self.__class__, self._values(self._hashed)))

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}=<not shown>" if name in self._hidden else f"{name}={self.__dict__[name]!r}"
                          for name in self._fields)
        return f"{type(self).__name__}({inner})"

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed (dataclasses.replace)."""
        return type(self)(**{**self.__dict__, **changes})

    def as_dict(self) -> dict[str, Any]:
        """The fields, shallow: nested values stay as they are (unlike dataclasses.asdict)."""
        return {name: self.__dict__[name] for name in self._fields}
