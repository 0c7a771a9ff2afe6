"""Reliability and security: bad input, hostile clients, overload, shutdown, fuzzing."""
