"""Clients of the lab: plain sockets where the kernel's behaviour is the point.

harness: socket options, send patterns, per-read logs (and the raw echo
server's own read sizes); sticky: the `framelab sticky` demonstration;
send: `framelab send`, a one-shot client for the framed and msgpack servers.
"""
