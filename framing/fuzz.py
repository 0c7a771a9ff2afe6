"""Fuzzing the decoder and the message layer: checks, and the atheris target.

Two checks, each given plain values so that property tests (hypothesis) and
the coverage-guided fuzzer (atheris, libFuzzer) drive the same code:
- `check_decoder`: a byte stream, cut into pseudo-random chunks fed through
  both input paths (feed() and get_buffer()/buffer_updated()), must give
  exactly the frames and the error of `reference_decode`, a deliberately
  naive decoder; the only exceptions allowed are FrameTooLarge and
  TruncatedFrame; the decoder never holds more than its receive buffer plus
  one frame of at most the limit.
- `check_message`: any payload through MessageCodec + message_handler with
  the msgpack server's application must give exactly one reply, a map with
  a boolean "ok", and raise nothing.
Any other exception, or a failed assertion, is a finding.

Run: `framelab fuzz --seconds 60` (or `python -m framing.fuzz --seconds 60`).
libFuzzer needs a process of its own (it exits when done), so the command
starts one. Inputs that crash are written to --artifacts; --corpus keeps
what the fuzzer learnt between runs (default: a fresh, seeded directory).
Input layout (simple, so seeds are easy to write): byte 0 picks the target
(even: decoder, odd: message); decoder: bytes 1-3 the frame limit, byte 4
the large-frame threshold / 256, byte 5 the chunking seed, then the stream;
message: bytes 1-3 the frame limit, then the payload.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack

from framing.decoder import DEFAULT_LARGE_FRAME, HEADER, FrameDecoder, Payload
from framing.encoder import encode_frames
from framing.errors import FrameTooLarge, FramingError, TruncatedFrame
from framing.messages import MessageCodec, message_handler

FUZZ_BUFFER_SIZE = 32 * 1024  # the smallest allowed: compaction and overflow happen often
CHUNK_SIZES = (1, 2, 3, 4, 5, 7, 100, 4096, 20_000, 70_000)
MIN_MESSAGE_FRAME = 512  # servers.msgpack_app.MIN_FRAME (framing does not import servers)


# -- the checks --------------------------------------------------------------
def reference_decode(
    stream: bytes, max_frame: int
) -> tuple[list[bytes], type[FramingError] | None]:
    """The frames in `stream` and the error ending it, decoded the obvious way."""
    frames: list[bytes] = []
    pos = 0
    while len(stream) - pos >= HEADER.size:
        (length,) = HEADER.unpack_from(stream, pos)
        if length > max_frame:
            return frames, FrameTooLarge
        end = pos + HEADER.size + length
        if end > len(stream):
            return frames, TruncatedFrame
        frames.append(stream[pos + HEADER.size : end])
        pos = end
    return frames, (TruncatedFrame if pos < len(stream) else None)


def check_decoder(
    stream: bytes,
    max_frame: int,
    large_frame: int = DEFAULT_LARGE_FRAME,
    chunk_seed: int = 0,
    buffer_size: int = FUZZ_BUFFER_SIZE,
) -> None:
    """Decode `stream` in pseudo-random chunks; assert it matches the reference."""
    rng = random.Random(chunk_seed)
    decoder = FrameDecoder(max_frame, buffer_size=buffer_size, large_frame=large_frame)
    bound = buffer_size + max_frame
    frames: list[Payload] = []
    error: FramingError | None = None
    src = memoryview(stream)
    try:
        while src:
            size = rng.choice(CHUNK_SIZES)
            if rng.random() < 0.5:
                frames += decoder.feed(src[:size])
                src = src[size:]
            else:
                room = decoder.get_buffer(size)
                assert len(room) <= max(buffer_size, max_frame), "a buffer over the bound"
                count = min(len(room), size, len(src))
                room[:count] = src[:count]
                src = src[count:]
                frames += decoder.buffer_updated(count)
            assert decoder.buffered <= bound, f"{decoder.buffered} bytes held, bound {bound}"
        decoder.end_of_stream()
    except (FrameTooLarge, TruncatedFrame) as exc:
        error = exc
    expected_frames, expected_error = reference_decode(stream, max_frame)
    got = [bytes(f) for f in frames]
    assert got == expected_frames, f"{len(got)} frames, expected {len(expected_frames)}"
    assert type(error) is (expected_error or type(None)), f"{error!r}, expected {expected_error}"


def _server_application(max_frame: int) -> Callable[[list[Payload]], Any]:
    # the server's application is what the message layer runs in production;
    # imported here so that `framing` itself never depends on `servers`
    from framelab.servers import msgpack_app

    return message_handler(
        MessageCodec(max_frame), msgpack_app.handle_request, msgpack_app.reply_to_bad_message
    )


def check_message(payload: bytes, max_frame: int) -> None:
    """One payload through the msgpack layer: exactly one well-formed reply
    (`max_frame` at least the server's minimum for msgpack mode)."""
    replies = list(_server_application(max_frame)([payload]))
    assert len(replies) == 1, f"{len(replies)} replies to one request"
    assert len(replies[0]) <= max_frame
    reply = msgpack.unpackb(replies[0])
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply


# -- the atheris target --------------------------------------------------------
def one_input(data: bytes) -> None:
    """libFuzzer's entry point; see the module docstring for the layout."""
    if len(data) < 4:
        return
    max_frame = int.from_bytes(data[1:4], "big")
    if data[0] % 2 == 0:
        if len(data) < 6:
            return
        check_decoder(bytes(data[6:]), max_frame, large_frame=data[4] * 256, chunk_seed=data[5])
    else:
        check_message(bytes(data[4:]), max(max_frame, MIN_MESSAGE_FRAME))


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
    import framing.messages
    from framelab.servers import msgpack_app

    _instrument([framing.decoder, framing.messages, msgpack_app, sys.modules[__name__]])
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


# -- command line --------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=int, default=60, help="how long to fuzz")
    parser.add_argument("--runs", type=int, help="stop after this many inputs instead")
    parser.add_argument("--corpus", type=Path, help="corpus directory (kept between runs)")
    parser.add_argument(
        "--artifacts", type=Path, default=Path("fuzz-artifacts"), help="where crashing inputs go"
    )
    parser.add_argument("--max-len", type=int, default=100_000, help="largest input, bytes")


def libfuzzer_arguments(args: argparse.Namespace, corpus: Path) -> list[str]:
    flags = [
        f"-max_total_time={args.seconds}",
        f"-max_len={args.max_len}",
        f"-artifact_prefix={args.artifacts}{os.sep}",
        "-timeout=20",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
    ]
    if args.runs is not None:
        flags.append(f"-runs={args.runs}")
    return [*flags, str(corpus)]


def run(args: argparse.Namespace) -> int:
    """`framelab fuzz`: fuzz in a child process; its exit status is ours."""
    args.artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="framelab-corpus-") as scratch:
        corpus = args.corpus or Path(scratch)
        corpus.mkdir(parents=True, exist_ok=True)
        if not any(corpus.iterdir()):
            for i, seed in enumerate(seeds()):
                (corpus / f"seed-{i:02d}").write_bytes(seed)
        command = [sys.executable, "-m", "framing.fuzz", *libfuzzer_arguments(args, corpus)]
        code = subprocess.run(command).returncode
    if code != 0:
        print(f"fuzzing found a problem: see the log above and {args.artifacts}", file=sys.stderr)
    return code


if __name__ == "__main__":
    # `python -m framing.fuzz --seconds N ...` is `framelab fuzz`; with
    # libFuzzer's own flags (-max_total_time=...) it is the fuzzing process
    if len(sys.argv) > 1 and sys.argv[1].startswith("--"):
        parser = argparse.ArgumentParser(prog="python -m framing.fuzz")
        configure(parser)
        sys.exit(run(parser.parse_args()))
    fuzz_main(sys.argv)
