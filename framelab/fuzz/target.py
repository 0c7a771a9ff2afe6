"""libFuzzer's target (atheris): the input layout, the seeds, the application.

Input layout (simple, so seeds are easy to write): byte 0 picks the check
(even: decoder, odd: message); decoder: bytes 1-3 the frame limit, byte 4
the large-frame threshold / 256, byte 5 the chunking seed (its low bit: lend
payloads as views), then the stream;
message: bytes 1-3 the frame limit, then the payload.

The message check runs the msgpack server's own application (what runs in
production), handed to `checks.check_message`. Run as a program,

    python -m framelab.fuzz.target [libFuzzer flags] CORPUS_DIR_OR_INPUT

this module is the fuzzing process `framelab fuzz` starts (libFuzzer exits
when done, so it needs a process of its own); given a crashing input file
instead of a directory, it replays that one input.
"""

from __future__ import annotations

import functools
import sys
from types import ModuleType
from typing import Any

import msgpack

from framelab.fuzz import checks
from framelab.servers import msgpack_app
from framing import BatchHandler, encode_frames, messages
from framing.decoder import HEADER


@functools.lru_cache(maxsize=64)
def server_application(max_frame: int) -> BatchHandler:
    """The msgpack server's batch handler for a frame limit (cached: the
    fuzzer asks for the same few limits millions of times)."""
    # looked up through the modules, so that their instrumented versions run
    return messages.message_handler(
        messages.MessageCodec(max_frame),
        msgpack_app.handle_request,
        msgpack_app.reply_to_bad_message,
    )


def one_input(data: bytes) -> None:
    """libFuzzer's entry point; see the module docstring for the layout."""
    if len(data) < 4:
        return
    max_frame = int.from_bytes(data[1:4], "big")
    if data[0] % 2 == 0:
        if len(data) < 6:
            return
        checks.check_decoder(
            bytes(data[6:]),
            max_frame,
            large_frame=data[4] * 256,
            chunk_seed=data[5],
            views=bool(data[5] & 1),
        )
    else:
        limit = max(max_frame, msgpack_app.MIN_FRAME)
        checks.check_message(bytes(data[4:]), server_application(limit), limit)


def seeds() -> list[bytes]:
    """A starting corpus in the input layout: valid and broken streams and requests."""
    limit = (1 << 20).to_bytes(3, "big")
    streams = [
        bytes(encode_frames([b"", b"x", b"hello" * 50])),
        bytes(encode_frames([bytes(70_000), b"tail"])),
        HEADER.pack(0xFFFF_FFFF) + b"junk",
        bytes(encode_frames([b"ok"])) + b"\x00\x00\x01",
    ]
    requests: list[Any] = [
        {"op": "echo", "id": 1, "args": {"k": [1, 2.5, None, True, b"b"]}},
        {"op": "sum", "id": 2, "args": [1, 2, 3]},
        {"op": "sha256", "args": "text"},
        {"op": "reverse", "args": [1, 2]},
        {"op": "nope"},
    ]
    out = [b"\x00" + limit + b"\x01\x07" + s for s in streams]
    out += [b"\x01" + limit + msgpack.packb(r) for r in requests]
    out += [b"\x01" + limit + b"\xc1", b"\x01\x00\x02\x00" + b"\x91" * 40 + b"\x01"]
    return out


def _instrument(modules: list[ModuleType]) -> None:
    """Coverage for our own code only: instrumenting everything loaded takes
    tens of seconds; these modules take milliseconds."""
    import atheris

    for module in modules:
        for value in list(vars(module).values()):
            if getattr(value, "__module__", None) != module.__name__:
                continue
            if isinstance(value, type):
                for name, attr in list(vars(value).items()):
                    if callable(attr) and hasattr(attr, "__code__"):
                        setattr(value, name, atheris.instrument_func(attr))
            elif hasattr(value, "__code__"):
                setattr(module, value.__name__, atheris.instrument_func(value))


def fuzz_main(argv: list[str]) -> None:
    """In the fuzzing process: instrument, then hand over to libFuzzer."""
    import atheris

    import framing.decoder

    modules = [framing.decoder, messages, msgpack_app, checks, sys.modules[__name__]]
    _instrument(modules)
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    fuzz_main(sys.argv)
