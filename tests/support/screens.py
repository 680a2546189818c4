"""Reading what a screenshot shows: the pixels of a Chromium PNG, and the QR code in them.

Chromium writes 8-bit, non-interlaced RGB or RGBA PNGs; this decodes exactly those (no image
library is needed for it), to grey, for zxing-cpp to scan like a phone camera would.
"""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel


def _paeth(left: int, up: int, corner: int) -> int:
    estimate = left + up - corner
    pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
    if pa <= pb and pa <= pc:
        return left
    return up if pb <= pc else corner


def _unfilter(kind: int, line: bytes, above: bytes, bpp: int) -> bytearray:
    out = bytearray(line)
    if kind == 0:
        return out
    if kind == 2:
        return bytearray((a + b) & 255 for a, b in zip(line, above, strict=True))
    for i in range(len(out)):
        left = out[i - bpp] if i >= bpp else 0
        if kind == 1:
            predicted = left
        elif kind == 3:
            predicted = (left + above[i]) // 2
        elif kind == 4:
            predicted = _paeth(left, above[i], above[i - bpp] if i >= bpp else 0)
        else:
            raise ValueError(f"unknown PNG filter {kind}")
        out[i] = (out[i] + predicted) & 255
    return out


def grey_pixels(png: bytes) -> tuple[int, int, bytes]:
    """Width, height and one grey byte per pixel of an 8-bit non-interlaced PNG."""
    if not png.startswith(SIGNATURE):
        raise ValueError("not a PNG")
    pos, idat, header = len(SIGNATURE), bytearray(), b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        if kind == b"IHDR":
            header = png[pos + 8 : pos + 8 + length]
        elif kind == b"IDAT":
            idat += png[pos + 8 : pos + 8 + length]
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or interlace != 0 or colour not in CHANNELS:
        raise ValueError(f"unsupported PNG: depth {depth}, colour {colour}, interlace {interlace}")
    bpp = CHANNELS[colour]
    stride = width * bpp
    raw = zlib.decompress(bytes(idat))
    grey, above = bytearray(), bytes(stride)
    for row in range(height):
        start = row * (stride + 1)
        line = _unfilter(raw[start], raw[start + 1 : start + 1 + stride], above, bpp)
        if bpp >= 3:
            # Luma from RGB (alpha ignored: screenshots are opaque).
            for x in range(0, stride, bpp):
                grey.append((299 * line[x] + 587 * line[x + 1] + 114 * line[x + 2]) // 1000)
        else:
            grey += line[::bpp]
        above = bytes(line)
    return width, height, bytes(grey)


def read_qr(png: bytes) -> str | None:
    """The text of the QR code a screenshot shows, or None when no code can be read in it."""
    import zxingcpp

    width, height, pixels = grey_pixels(png)
    found = zxingcpp.read_barcode(memoryview(pixels).cast("B", (height, width)))
    if found is None or found.format != zxingcpp.BarcodeFormat.QRCode:
        return None
    return str(found.text)
