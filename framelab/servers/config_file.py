"""`framelab serve --config FILE`: a TOML file of server options.

The keys are the long option names, with `-` or `_` (`max-frame` or
`max_frame`), and each value is checked by the same argparse type as on the
command line, so a file and a command line cannot disagree on what a value
means. Switches (`nodelay`, `quiet`, ...) take true or false. An option given
on the command line overrides the file's key.

The file is read at start and again at every SIGHUP (servers/supervisor.py):
what it says then is what the new workers run with. A mistake is one line
naming the file, the key and the problem (ConfigError).
"""

from __future__ import annotations

import argparse
import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framelab.servers.config import ServerConfig, config_from_options, server_options


class ConfigError(ValueError):
    """A config file that cannot be used: the message names file, key, problem."""


def _value_for(option: argparse.Action, value: object) -> Any:
    """One file value, checked as the command line checks it; ValueError says why."""
    if option.nargs == 0:  # a switch: --nodelay, --quiet
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a single value (a string or a number)")
    text = str(value)
    try:
        converted = option.type(text) if callable(option.type) else text
    except argparse.ArgumentTypeError as error:
        raise ValueError(str(error)) from None
    if option.choices is not None and converted not in option.choices:
        allowed = ", ".join(map(str, option.choices))
        raise ValueError(f"{value!r} is not one of {allowed}")
    return converted


def read_config_file(path: Path) -> dict[str, Any]:
    """The options a file sets, by option name (dest); ConfigError if any is wrong."""
    try:
        with path.open("rb") as file:
            table = tomllib.load(file)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    options = {option.dest: option for option in server_options()}
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        option = options.get(name)
        if option is None:
            near = difflib.get_close_matches(name, options, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(f"{path}: unknown key {key!r}{hint}")
        if name in values:
            raise ConfigError(f"{path}: {key!r} is given twice (with '-' and with '_')")
        try:
            values[name] = _value_for(option, value)
        except ValueError as error:
            raise ConfigError(f"{path}: {key}: {error}") from None
    return values


@dataclass(frozen=True)
class ConfigSource:
    """Where a server's configuration comes from: a file (or none) under
    the options its command line gave. load() again reads the file anew."""

    path: Path | None = None
    given: dict[str, Any] = field(default_factory=dict)

    def load(self) -> ServerConfig:
        """The configuration now; ConfigError (a ValueError) naming the file if
        it is wrong, ValueError for a command line's own mistake."""
        from_file = read_config_file(self.path) if self.path is not None else {}
        try:
            return config_from_options({**from_file, **self.given})
        except ValueError as error:
            if self.path is None:
                raise
            raise ConfigError(f"{self.path}: {error}") from None
