"""What Keras's ``initializers.get`` / ``regularizers.get`` / ``constraints.get`` do, shared by the three
kinds.

An identifier is ``None``, a name (case-sensitive, as Keras: ``"glorot_uniform"`` or ``"GlorotUniform"``),
a Keras config dict (``{"class_name": ..., "config": {...}}``, with or without Keras 3's ``module`` and
``registered_name``), one of our objects, a class (instantiated with its defaults), or any callable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..keras_names import snake_case as snake_case  # the kinds name their classes with it


class KerasObject:
    """Base of our Keras built-ins: a config round trip like Keras's ``get_config`` / ``from_config``."""

    #: Keras's ``module`` in a serialized config ("keras.initializers", ...).
    keras_module = "keras"

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]):
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, KerasObject)
            and type(self) is type(other)
            and self.get_config() == other.get_config()
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(sorted(self.get_config().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def lookup(
    identifier: Any,
    registry: Mapping[str, type[KerasObject] | Callable],
    *,
    kind: str,
    argument: str,
    base: type,
) -> Any:
    """Resolve ``identifier`` like Keras's ``<kind>s.get``; ``None`` stays ``None``.

    Errors name the argument, what is accepted and what was received.
    """
    if identifier is None:
        return None
    if isinstance(identifier, base):
        return identifier
    if isinstance(identifier, str):
        found = registry.get(identifier)
        if found is None:
            known = ", ".join(sorted(registry))
            raise ValueError(f"{argument}: unknown {kind} {identifier!r}; known names: {known}")
        return found() if isinstance(found, type) else found
    if isinstance(identifier, Mapping):
        return from_keras_config(identifier, registry, kind=kind, argument=argument)
    if isinstance(identifier, type):
        return identifier()
    if callable(identifier):
        return identifier
    raise TypeError(
        f"{argument} must be None, a {kind} name, a Keras config dict or a callable, "
        f"got {type(identifier).__name__} {identifier!r}"
    )


def from_keras_config(
    config: Mapping[str, Any],
    registry: Mapping[str, type[KerasObject] | Callable],
    *,
    kind: str,
    argument: str,
) -> Any:
    """A Keras serialized object ``{"class_name": ..., "config": {...}}`` -> our object."""
    if "class_name" not in config:
        raise ValueError(
            f"{argument}: a {kind} config dict needs 'class_name' (and 'config'), got keys {sorted(config)}"
        )
    class_name = config["class_name"]
    inner = config.get("config") or {}
    found = registry.get(class_name)
    if found is None and isinstance(config.get("registered_name"), str):
        found = registry.get(config["registered_name"])
    if found is None:
        known = ", ".join(sorted(k for k in registry if k[:1].isupper()))
        raise ValueError(
            f"{argument}: unknown {kind} class {class_name!r} (custom Keras objects are not available here; "
            f"pass a callable instead); known classes: {known}"
        )
    if not (isinstance(found, type) and issubclass(found, KerasObject)):
        return found  # a registered function, such as tf-keras's l1_l2
    if not isinstance(inner, Mapping):
        raise ValueError(f"{argument}: the 'config' of {class_name!r} must be a dict, got {inner!r}")
    try:
        return found.from_config(dict(inner))
    except TypeError as error:
        raise ValueError(
            f"{argument}: invalid config for {kind} {class_name!r}: {dict(inner)!r} ({error})"
        ) from None


def serialize(obj: Any, *, legacy: bool = False) -> Any:
    """Keras 3's serialized form of one of our objects (``legacy``: tf-keras's, which has no ``input_axes`` /
    ``output_axes`` in initializer configs); callables serialize as their ``__name__``; ``None`` stays
    ``None``."""
    if obj is None:
        return None
    if isinstance(obj, KerasObject):
        config = obj.get_config()
        if legacy:
            axes = ("input_axes", "output_axes")
            config = {k: v for k, v in config.items() if k not in axes or v is not None}
        return {
            "module": obj.keras_module,
            "class_name": type(obj).__name__,
            "config": config,
            "registered_name": None,
        }
    return getattr(obj, "__name__", repr(obj))
