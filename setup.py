"""Build the optional C accelerator; everything else is in pyproject.toml.

`optional=True`: where no compiler is available the install still
succeeds and framing uses its pure-Python loops (framing/_codec.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("framing._speedups", ["framing/_speedups.c"], optional=True),
        Extension("framing._msgpack_speedups", ["framing/_msgpack_speedups.c"], optional=True),
    ]
)
