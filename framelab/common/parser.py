"""argparse as every framelab command uses it: option defaults shown in
--help, and a usage mistake in two lines (the mistake, then a short usage),
exit status 2, never the full usage block. The `framelab` command and the
lab's `python -m` tools share it."""

from __future__ import annotations

import argparse
from typing import NoReturn


class HelpFormatter(argparse.HelpFormatter):
    """Shows `(default: X)` after an option's help when it has a default worth
    showing (not None, not a switch that is off), unless the help says it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or default is None
            or default is False
            or default == argparse.SUPPRESS
            or not action.option_strings
            or isinstance(action, argparse._StoreTrueAction | argparse._VersionAction)
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `framelab serve: error: argument --port:
    70000 is not a port (0-65535)`, then a short usage line; never the full
    usage block, which for `serve` alone is a dozen lines."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def short_usage(self) -> str:
        positionals = " ".join(
            (action.metavar if isinstance(action.metavar, str) else action.dest.upper())
            + (" ..." if action.nargs in ("*", "+") else "")
            for action in self._actions
            if not action.option_strings
        )
        return (
            f"usage: {self.prog} [OPTIONS] {positionals}".rstrip() + f"  (see {self.prog} --help)"
        )

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n{self.short_usage()}\n")
