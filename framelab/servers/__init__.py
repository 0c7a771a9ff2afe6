"""The lab's servers: raw, framed and msgpack echo on the framing library's adapters.

runner.py is the one runner every server shares (loop, listener, signals,
graceful shutdown, workers, BackgroundServer); config.py is what a server is
told; modes.py says what each mode answers; handlers.py puts a mode on an
I/O style (FramedProtocol or streams) and adds admission and socket options,
nothing of the connection policy; msgpack_app.py is the pure application;
selector_loop.py fixes asyncio's out-of-descriptors accept burst where the
running Python still has it; proxy_gate.py reads a load balancer's PROXY
header before the mode's protocol starts.
"""
