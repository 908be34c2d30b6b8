"""Frame decoding for the host: the C decoder when it is built, else the reference Python one.

Both return gridtap_fw.wire.Message objects and keep the same counters, so the
rest of the daemon never knows which one it has.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Protocol

from gridtap_fw import wire


class FrameDecoder(Protocol):
    counts: list[int]

    def feed(self, data: bytes) -> list[wire.Message]: ...

    def counters(self) -> dict[str, int]: ...


def _native() -> ModuleType | None:
    try:
        return importlib.import_module("gridtap.board.native")
    except ImportError:
        return None


def native_available() -> bool:
    return _native() is not None


def make_decoder(prefer_native: bool = True) -> FrameDecoder:
    """Return a streaming decoder; the C one if it was built and wanted."""
    native = _native() if prefer_native else None
    if native is not None:
        decoder: FrameDecoder = native.NativeDecoder()
        return decoder
    return wire.Decoder()


def implementation(decoder: FrameDecoder) -> str:
    return "python" if isinstance(decoder, wire.Decoder) else "c"
