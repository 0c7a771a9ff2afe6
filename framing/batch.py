"""The handler shape both adapters call: a batch of payloads in, replies out.

A read that completes many frames hands them over as one list (as Netty's
decoders fill an out list), so the handler and the writer work per batch,
not per frame: one write for all the replies of one read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from framing.decoder import BytesLike, Payload

#: the batch handler: payloads in, replies out (None or [] for no reply)
BatchHandler = Callable[[list[Payload]], Iterable[BytesLike] | None]


def per_frame(handler: Callable[[Payload], BytesLike | None]) -> BatchHandler:
    """Adapt a one-frame-at-a-time handler (reply or None) to a batch handler."""

    def batch(frames: list[Payload]) -> list[BytesLike]:
        replies = []
        for frame in frames:
            reply = handler(frame)
            if reply is not None:
                replies.append(reply)
        return replies

    return batch
