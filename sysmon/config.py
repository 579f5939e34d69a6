"""
The C{key = value} configuration reader shared by sysmon's daemons.

netdump.conf, watchdog.conf and keepalive's process files all use the same
line format::

    # a whole-line comment
    key = value
    list-key = first
    list-key = second       (list keys append; other keys: the last one wins)
    quoted = "a value"      (one pair of matching quotes around a value is removed,
                             unless the schema keeps quotes as the watchdog does)

A daemon describes its keys once, as a L{Schema} of L{Key}s with a coercer
and a default each.  L{Schema.load} reads a file into a L{Config}: unknown
keys and lines without C{=} become L{ConfigWarning}s that name file and line;
a value its coercer refuses raises L{ConfigError} naming file, line and the
accepted form (or, for schemas made with C{badValue="warn"}, a warning that
keeps the old value, as the classic watchdog daemon does).  Values given on
the command line then override the file with L{Config.override} /
L{Config.applyOptions}.

This module only parses text; it does no logging and knows nothing of
Twisted, so every daemon can report the warnings in its own way.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

import attrs

__all__ = [
    "Coercer",
    "Config",
    "ConfigError",
    "ConfigWarning",
    "Entry",
    "Key",
    "Schema",
    "boolean",
    "cInteger",
    "choice",
    "hexInteger",
    "integer",
    "number",
    "octal",
    "port",
    "string",
]

COMMAND_LINE = "command line"


class ConfigError(ValueError):
    """
    A configuration value (or line) that cannot be used.

    @ivar path: the file it came from, or C{"command line"}.
    @ivar line: the 1-based line number, or L{None} when there is none.
    @ivar message: what is wrong, including the accepted form.
    """

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


@attrs.frozen
class ConfigWarning:
    """
    Something in a configuration file that was ignored.

    @ivar path: the file.
    @ivar line: the 1-based line number.
    @ivar message: what was ignored and why.
    """

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


@attrs.frozen
class Coercer:
    """
    Turns the text of a value into a typed value.

    @ivar convert: called with the text; raises L{ValueError} when the text
        is not acceptable.
    @ivar accepted: the accepted form, for error messages ("an integer from 1
        to 64").
    """

    convert: Callable[[str], Any]
    accepted: str

    def __call__(self, text: str) -> Any:
        return self.convert(text)


def _integer(text: str, base: int) -> int:
    text = text.strip().replace("_", "")
    if not text or text.lstrip("+-") == "":
        raise ValueError(text)
    return int(text, base)


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _bounded(
    kind: str, parse: Callable[[str], Any], minimum: Any, maximum: Any
) -> Coercer:
    """
    A coercer for numbers parsed by C{parse} within inclusive bounds.
    """
    low, high = _show(minimum), _show(maximum)
    if minimum is not None and maximum is not None:
        accepted = f"{kind} from {low} to {high}"
    elif minimum is not None:
        accepted = f"{kind} >= {low}"
    elif maximum is not None:
        accepted = f"{kind} <= {high}"
    else:
        accepted = kind

    def convert(text: str) -> Any:
        value = parse(text)
        if (minimum is not None and value < minimum) or (
            maximum is not None and value > maximum
        ):
            raise ValueError(text)
        return value

    return Coercer(convert, accepted)


def integer(minimum: int | None = None, maximum: int | None = None) -> Coercer:
    """
    A decimal integer, optionally bounded (both bounds inclusive).
    """
    return _bounded("an integer", lambda text: _integer(text, 10), minimum, maximum)


_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_INT_MIN, _INT_BITS = -(2**31), 2**32


def _atoi(text: str) -> int:
    if not text or text[0] not in "0123456789+-":
        raise ValueError(text)
    negative = text[0] == "-"
    body = text[1:] if text[0] in "+-" else text
    digits = body[: len(body) - len(body.lstrip("0123456789"))].lstrip("0")
    if len(digits) > 19:
        value = _LONG_MAX + 1  # beyond any long: strtol clamps
    else:
        value = int(digits or "0")
    value = -value if negative else value
    value = max(_LONG_MIN, min(_LONG_MAX, value))
    return (value - _INT_MIN) % _INT_BITS + _INT_MIN


cInteger = Coercer(_atoi, "a number")
"""
An integer read the way C daemons of the classic kind read theirs: the text
must start with a digit, C{+} or C{-} (else it is refused), then C{atoi}
takes the longest run of digits after an optional sign and ignores the rest
(C{"10s"} is 10, C{"5 # five"} is 5, C{"+"} is 0).  As glibc on a 64-bit
machine does, a value beyond a C{long} is clamped and then cut to a 32-bit
C{int} (C{"4294967297"} is 1).
"""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def number(minimum: float | None = None, maximum: float | None = None) -> Coercer:
    """
    A finite decimal number (seconds, load averages...), optionally bounded.
    """
    return _bounded("a number", _finite, minimum, maximum)


def hexInteger(digits: int | None = None) -> Coercer:
    """
    A hexadecimal integer with or without C{0x}, at most C{digits} digits.
    """
    accepted = "a hexadecimal number"
    if digits is not None:
        accepted += f" of at most {digits} digits"

    def convert(text: str) -> int:
        text = text.strip()
        body = text[2:] if text.lower().startswith("0x") else text
        if not body or (digits is not None and len(body) > digits):
            raise ValueError(text)
        if body.startswith(("+", "-")):
            raise ValueError(text)
        return int(body, 16)

    return Coercer(convert, accepted)


def _octal(text: str) -> int:
    value = _integer(text, 8)
    if not 0 <= value <= 0o7777:
        raise ValueError(text)
    return value


octal = Coercer(_octal, "an octal file mode such as 0644")

_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(text)


boolean = Coercer(_boolean, "yes/no, true/false, on/off or 1/0")
port = Coercer(integer(0, 65535).convert, "a port number from 0 to 65535")
string = Coercer(str, "text")


def choice(*choices: str) -> Coercer:
    """
    One of a fixed set of words (case-sensitive).
    """

    def convert(text: str) -> str:
        if text not in choices:
            raise ValueError(text)
        return text

    return Coercer(convert, "one of " + ", ".join(choices))


@attrs.frozen
class Key:
    """
    One key of a configuration schema.

    @ivar name: the key as written in the file.  With C{prefix}, the part
        before the variable name (C{"env."} collects C{env.PATH = ...}).
    @ivar coerce: a L{Coercer} (or any callable raising L{ValueError}).
    @ivar default: the value when the file does not set the key; list keys
        default to an empty list and prefix keys to an empty dict.
    @ivar multiple: a list key: each line appends a value.
    @ivar prefix: a family of keys C{name + variable}, collected in a dict.
    @ivar allowEmpty: an empty value sets the key to L{None} ("disabled")
        instead of being an error.  For list keys an empty value is skipped.
    @ivar help: one line for C{--help} and the sample files.
    """

    name: str
    coerce: Callable[[str], Any] = string
    default: Any = None
    multiple: bool = False
    prefix: bool = False
    allowEmpty: bool = False
    help: str = ""

    @property
    def accepted(self) -> str:
        return getattr(self.coerce, "accepted", "a valid value")

    def initial(self) -> Any:
        if self.multiple:
            return list(self.default or ())
        if self.prefix:
            return dict(self.default or {})
        return self.default


@attrs.frozen
class Entry:
    """
    One accepted C{key = value} line, in file order, after coercion.

    For keys whose meaning depends on the line before (watchdog's C{change}
    applies to the most recent C{file}), walk L{Config.entries}.
    """

    path: str
    line: int
    key: str
    value: Any
    variable: str | None = None


@attrs.define
class Config:
    """
    The result of reading a configuration.

    @ivar values: key name -> typed value, for every key of the schema.
    @ivar sources: key name -> where the value came from (C{"path:line"},
        C{"default"} or C{"command line"}).
    @ivar warnings: what was ignored, in file order.
    @ivar entries: every accepted line, in file order.
    """

    schema: Schema
    values: dict[str, Any]
    sources: dict[str, str]
    warnings: list[ConfigWarning] = attrs.Factory(list)
    entries: list[Entry] = attrs.Factory(list)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def override(self, name: str, value: Any, source: str = COMMAND_LINE) -> None:
        """
        Set C{name} from the command line (or another source that wins over
        the file).  Text is coerced by the key's coercer; a refused value
        raises L{ConfigError} naming C{source} and the key.
        """
        key = self.schema.key(name)
        if key is None:
            raise KeyError(name)
        if isinstance(value, str):
            value = self.schema.coerce(key, value, source, None)
        if key.multiple and not isinstance(value, list):
            value = list(value) if isinstance(value, (tuple, set)) else [value]
        self.values[name] = value
        self.sources[name] = source

    def applyOptions(
        self, options: Mapping[str, Any], names: Mapping[str, str] | None = None
    ) -> None:
        """
        Let command-line options override the file.

        @param options: a L{twisted.python.usage.Options} (or any mapping);
            options left at L{None} were not given and change nothing.
        @param names: option name -> key name where they differ; other
            options are matched to keys by name, C{-} and C{_} alike.
        """
        names = dict(names or {})
        for optionName, value in options.items():
            if value is None:
                continue
            keyName = names.get(optionName)
            if keyName is None:
                key = self.schema.key(optionName) or self.schema.key(
                    optionName.replace("_", "-")
                ) or self.schema.key(optionName.replace("-", "_"))
                if key is None:
                    continue
                keyName = key.name
            self.override(keyName, value, f"{COMMAND_LINE} (--{optionName})")


class Schema:
    """
    The keys a configuration file may hold.

    @ivar badValue: C{"error"} (default): a value the coercer refuses raises
        L{ConfigError}; C{"warn"}: it becomes a warning and the previous value
        stays (for a list key: the line is skipped), as the classic watchdog
        daemon does.
    @ivar unquote: remove one pair of matching quotes around a value (the
        default); L{False} keeps them as part of the value, as C readers
        that do no unquoting (the watchdog's) do.
    @ivar whitespace: the characters trimmed around a line, a key and a
        value; L{None} (the default) is Python's C{str.strip} set.  A C
        reader's own set (the watchdog's is C{" \\t\\r\\n\\b"}) makes the
        same text give the same values.
    """

    def __init__(
        self,
        keys: Iterable[Key],
        *,
        badValue: str = "error",
        unquote: bool = True,
        whitespace: str | None = None,
    ) -> None:
        if badValue not in ("error", "warn"):
            raise ValueError("badValue must be 'error' or 'warn'")
        self.badValue = badValue
        self.unquote = unquote
        self.whitespace = whitespace
        self._keys: dict[str, Key] = {}
        self._prefixes: list[Key] = []
        for key in keys:
            if key.name in self._keys:
                raise ValueError(f"key {key.name!r} defined twice")
            self._keys[key.name] = key
            if key.prefix:
                self._prefixes.append(key)

    @property
    def keys(self) -> list[Key]:
        return list(self._keys.values())

    def key(self, name: str) -> Key | None:
        return self._keys.get(name)

    def _lookup(self, name: str) -> tuple[Key | None, str | None]:
        key = self._keys.get(name)
        if key is not None and not key.prefix:
            return key, None
        for candidate in self._prefixes:
            if name.startswith(candidate.name) and len(name) > len(candidate.name):
                return candidate, name[len(candidate.name) :]
        return None, None

    def coerce(self, key: Key, text: str, path: str, line: int | None) -> Any:
        """
        Apply C{key}'s coercer, turning L{ValueError} into L{ConfigError}.
        """
        try:
            return key.coerce(text)
        except (ValueError, TypeError, OverflowError):
            raise ConfigError(
                path, line, f"bad value {text!r} for {key.name}: expected {key.accepted}"
            ) from None

    def defaults(self) -> Config:
        """
        A L{Config} holding every key's default.
        """
        return Config(
            self,
            {k.name: k.initial() for k in self._keys.values()},
            {k.name: "default" for k in self._keys.values()},
        )

    def parseLines(self, lines: Iterable[str], path: str = "<config>") -> Config:
        """
        Read configuration text.

        @param lines: the lines of the file (with or without line ends).
        @param path: the name to use in warnings and errors.
        @raise ConfigError: for the first value that cannot be used (unless
            the schema was made with C{badValue="warn"}).
        """
        config = self.defaults()
        for number, raw in enumerate(lines, 1):
            self._parseLine(config, path, number, raw)
        return config

    def _warn(self, config: Config, path: str, line: int, message: str) -> None:
        config.warnings.append(ConfigWarning(path, line, message))

    def _parseLine(self, config: Config, path: str, number: int, raw: str) -> None:
        text = raw.strip(self.whitespace)
        if not text or text.startswith("#"):
            return
        if "=" not in text:
            self._warn(config, path, number, f"ignored line without '=': {text!r}")
            return
        name, _, value = text.partition("=")
        name, value = name.strip(self.whitespace), value.strip(self.whitespace)
        if self.unquote:
            value = _unquote(value)
        key, variable = self._lookup(name)
        if key is None:
            self._warn(config, path, number, f"unknown key {name!r} ignored")
            return
        if value == "":
            if not key.allowEmpty:
                self._refuse(
                    config, path, number, f"{name} needs a value ({key.accepted})", key
                )
                return
            if key.multiple:
                return
            typed = None
        else:
            try:
                typed = self.coerce(key, value, path, number)
            except ConfigError as e:
                self._refuse(config, path, number, e.message, key)
                return
        if key.multiple:
            config.values[key.name].append(typed)
        elif key.prefix:
            config.values[key.name][variable] = typed
        else:
            config.values[key.name] = typed
        config.sources[key.name] = f"{path}:{number}"
        config.entries.append(Entry(path, number, key.name, typed, variable))

    def _refuse(
        self, config: Config, path: str, number: int, message: str, key: Key
    ) -> None:
        if self.badValue == "error":
            raise ConfigError(path, number, message)
        outcome = "line ignored" if key.multiple else "old value kept"
        self._warn(config, path, number, f"{message}; {outcome}")

    def load(self, path: str, *, missingOk: bool = False) -> Config:
        """
        Read the file at C{path}.

        @param missingOk: a missing file gives the defaults instead of an
            error (the daemons' default config paths are optional).
        @raise ConfigError: the file cannot be read, or holds a bad value.
        """
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.readlines()
        except FileNotFoundError:
            if missingOk:
                return self.defaults()
            raise ConfigError(path, None, "no such file") from None
        except OSError as e:
            raise ConfigError(path, None, f"cannot read: {e.strerror}") from None
        return self.parseLines(lines, path)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value
