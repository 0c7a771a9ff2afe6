"""framing: 4-byte big-endian length-prefixed messages, sans-IO at the core.

Core (no I/O): FrameDecoder, encode_frame / encode_frames / write_frames,
MessageCodec, ConnectionPolicy (frame timeout, drain, error reply, discard
after FIN), ProxyHeaderParser (the PROXY protocol a load balancer sends
first). Adapters over the policy: FramedProtocol (asyncio.BufferedProtocol,
the fast path), FrameReader / FrameWriter (asyncio streams). Metrics:
a ConnectionObserver the adapters call. Installed by the `framelab`
distribution (`pip install framelab`, then `import framing`).
"""

from importlib import metadata as _metadata

from framing._codec import ACCELERATED
from framing.allocator import keep_large_buffers_in_heap
from framing.batch import BatchHandler, per_frame
from framing.connection import (
    DEFAULT_DISCARD_WINDOW,
    DEFAULT_FRAME_TIMEOUT,
    ConnectionPolicy,
    ErrorReply,
)
from framing.decoder import (
    DEFAULT_MAX_FRAME_LENGTH,
    HEADER_SIZE,
    BytesLike,
    FrameDecoder,
    Payload,
)
from framing.encoder import encode_frame, encode_frames, frame_header, write_frames
from framing.errors import FrameTimeout, FrameTooLarge, FramingError, MessageError, TruncatedFrame
from framing.messages import MessageCodec, message_handler
from framing.observer import NULL_OBSERVER, ConnectionObserver, ErrorKind, NullObserver
from framing.protocol import DEFAULT_HIGH_WATER, FramedProtocol
from framing.proxy_protocol import ProxyHeader, ProxyHeaderError, ProxyHeaderParser
from framing.streams import (
    FrameReader,
    FrameWriter,
    framed_streams,
    open_framed_connection,
    serve_frames,
)
from framing.transport import format_address, peer_name, set_nodelay, unread_kernel_bytes


def _version() -> str:
    """The installed distribution's version; a source tree that was never
    installed has no metadata, and says so rather than guessing a number."""
    try:
        return _metadata.version("framelab")
    except _metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _version()

__all__ = [
    "ACCELERATED",
    "DEFAULT_DISCARD_WINDOW",
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_HIGH_WATER",
    "DEFAULT_MAX_FRAME_LENGTH",
    "HEADER_SIZE",
    "NULL_OBSERVER",
    "BatchHandler",
    "BytesLike",
    "ConnectionObserver",
    "ConnectionPolicy",
    "ErrorKind",
    "ErrorReply",
    "FrameDecoder",
    "FrameReader",
    "FrameTimeout",
    "FrameTooLarge",
    "FrameWriter",
    "FramedProtocol",
    "FramingError",
    "MessageCodec",
    "MessageError",
    "NullObserver",
    "Payload",
    "ProxyHeader",
    "ProxyHeaderError",
    "ProxyHeaderParser",
    "TruncatedFrame",
    "__version__",
    "encode_frame",
    "encode_frames",
    "format_address",
    "frame_header",
    "framed_streams",
    "keep_large_buffers_in_heap",
    "message_handler",
    "open_framed_connection",
    "peer_name",
    "per_frame",
    "serve_frames",
    "set_nodelay",
    "unread_kernel_bytes",
    "write_frames",
]
