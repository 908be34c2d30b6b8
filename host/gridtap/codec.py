"""Frame decoding for the host: the C decoder when it is built, else the reference Python one.

Both return gridtap_fw.wire.Message objects and keep the same counters, so the
rest of the daemon never knows which one it has.
"""

from __future__ import annotations

from typing import Protocol

from gridtap_fw import wire


class FrameDecoder(Protocol):
    counts: list[int]

    def feed(self, data: bytes) -> list[wire.Message]: ...

    def counters(self) -> dict[str, int]: ...


def native_available() -> bool:
    try:
        from gridtap import native  # noqa: F401
    except ImportError:
        return False
    return True


def make_decoder(prefer_native: bool = True) -> FrameDecoder:
    """Return a streaming decoder; the C one if it was built and wanted."""
    if prefer_native:
        try:
            from gridtap import native
        except ImportError:
            pass
        else:
            return native.NativeDecoder()
    return wire.Decoder()


def implementation(decoder: FrameDecoder) -> str:
    return "python" if isinstance(decoder, wire.Decoder) else "c"
