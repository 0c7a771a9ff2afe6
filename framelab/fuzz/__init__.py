"""Fuzzing the framing library: a tool that stands on it, not a part of it.

- `checks`: the properties, as plain functions of plain values, so that the
  property tests (hypothesis) and the coverage-guided fuzzer drive the same
  code; the message check is given the application to run, so the library
  under test never depends on the lab's servers.
- `target`: libFuzzer's entry point (atheris): the input layout, the seeds,
  and the application the msgpack server runs in production.
- `cli`: `framelab fuzz`, which runs the target in a child process and turns
  its output into one summary line, leaving nothing behind.
"""
