"""framing: 4-byte big-endian length-prefixed messages, sans-IO at the core.

Core (no I/O): FrameDecoder, encode_frame / encode_frames / write_frames,
MessageCodec, ProxyHeaderParser (the PROXY protocol a load balancer sends
first). Adapters: FramedProtocol (asyncio.BufferedProtocol, the fast path),
FrameReader / FrameWriter (asyncio streams).
"""

from framing.allocator import keep_large_buffers_in_heap
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
from framing.protocol import BatchHandler, FramedProtocol, per_frame, set_nodelay
from framing.proxy_protocol import ProxyHeader, ProxyHeaderError, ProxyHeaderParser
from framing.streams import FrameReader, FrameWriter, framed_streams, open_framed_connection

__all__ = [
    "DEFAULT_DISCARD_WINDOW",
    "DEFAULT_FRAME_TIMEOUT",
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
    "encode_frame",
    "encode_frames",
    "frame_header",
    "framed_streams",
    "keep_large_buffers_in_heap",
    "message_handler",
    "open_framed_connection",
    "per_frame",
    "set_nodelay",
    "write_frames",
]
