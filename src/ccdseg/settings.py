"""Configuration files and options: TOML reading, ``key=value`` overrides, typed coercion and rule tables.

The simulation config (:mod:`ccdseg.sim.config`) and the training config
(:mod:`ccdseg.nn.train_config`) are dataclasses; both read their files, overrides and values
here, and declare their checks as tables of rules, so every message has the same form
``"name = value: must be requirement"``.
"""

import copy
import tomllib
import types
import typing

from ccdseg.errors import ConfigError

#: How messages name the type a value must have.
WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
         dict: "a table"}


def read_toml(path, what="config"):
    """Read a TOML file into a dict; :class:`ConfigError` naming the file when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read {what} ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML ({error})") from None


def parse_override(text):
    """Split ``"key=value"`` and read the value as TOML (a number, list, ...), else as a plain string."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, value = (part.strip() for part in text.split("=", 1))
    try:
        return key, tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value


def parse_overrides(overrides):
    """``(key, value)`` pairs of a dict or of a list of ``"key=value"`` strings (None: none)."""
    if not overrides:
        return []
    if isinstance(overrides, dict):
        return list(overrides.items())
    return [parse_override(text) for text in overrides]


def coerce(name, kind, value, *, like=(), any_length=False, words=WORDS):
    """``value`` as a value of the dataclass field type ``kind``, or :class:`ConfigError` naming ``name``.

    Parameters
    ----------
    name : str
        The parameter, as messages name it.
    kind : type
        ``bool``, ``int`` (an integral float is accepted), ``float`` (an integer is accepted),
        ``str``, ``list``, ``dict``, ``tuple`` (also written ``tuple[...]``), ``object`` (anything)
        or ``X | None`` (None, or the words ``none``/``None`` of an override, give None).
    value : object
        The value read from a file, an override or a keyword.
    like : tuple
        For ``tuple``: the current value, whose length a new value must have (unless
        ``any_length``) and whose first element's type its elements get.
    any_length : bool
        For ``tuple``: a list of any length rather than a (low, high) range.
    words : dict
        Type -> how the message names it.
    """
    if typing.get_origin(kind) in (types.UnionType, typing.Union) and type(None) in typing.get_args(kind):
        if value is None or (isinstance(value, str) and value in ("none", "None")):
            return None
        (kind,) = (arg for arg in typing.get_args(kind) if arg is not type(None))
    kind = typing.get_origin(kind) or kind  # tuple[float, float] -> tuple
    if kind is tuple:
        if not isinstance(value, (list, tuple)) or (not any_length and len(value) != len(like)):
            raise ConfigError(f"{name} must be a list like {list(like)}, got {value!r}")
        return tuple(coerce(name, type(like[0]), item, words=words) for item in value)
    if kind is object:
        return copy.deepcopy(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{name} must be {words[kind]}, got {value!r}")
    return value


# Rules: (test, requirement); a rule's test takes the value and returns whether it is allowed.
POSITIVE = (lambda value: value > 0, "> 0")
NON_NEGATIVE = (lambda value: value >= 0, ">= 0")
POSITIVE_LOW = (lambda value: value[0] > 0, "positive")
INTEGER_RANGE = (lambda value: all(float(v).is_integer() for v in value), "a range of integers")


def at_least(minimum):
    """Rule: a number >= ``minimum``."""
    return (lambda value: value >= minimum), f">= {minimum}"


def interval(text):
    """Rule: a number in the interval ``text``, e.g. ``"[0, 1)"`` (brackets closed, parentheses open)."""
    low, high = (float(bound) for bound in text[1:-1].split(","))

    def test(value):
        above = low <= value if text[0] == "[" else low < value
        return above and (value <= high if text[-1] == "]" else value < high)
    return test, f"in {text}"


def one_of(choices):
    """Rule: one of ``choices``."""
    return (lambda value: value in choices), f"one of {', '.join(choices)}"


def value_range(low=0.0):
    """Rule: a ``(low, high)`` pair with ``low`` <= low <= high."""
    return (lambda value: low <= value[0] <= value[1]), f"a range [low, high] with {low} <= low <= high"


def check_rules(config, rules):
    """Raise :class:`ConfigError` ``"name = value: must be requirement"`` for the first value a rule refuses.

    Parameters
    ----------
    config : object
        The configuration; a dotted name such as ``detector.height`` reads an attribute of an attribute.
    rules : iterable of (str, rule)
        Space-separated names and the rule (``(test, requirement)``) each of their values must pass.
    """
    for names, (test, requirement) in rules:
        for name in names.split():
            value = config
            for part in name.split("."):
                value = getattr(value, part)
            if not test(value):
                raise ConfigError(f"{name} = {value!r}: must be {requirement}")
    return config
