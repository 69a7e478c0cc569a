"""What encoded image bytes are, from their first bytes, before any decoder sees them: file types that are
not decoded here (named in the error), and JPEG or PNG headers that would cost Pillow seconds of CPU (read
by :func:`faceage.core.imageio.open_image`)."""
from __future__ import annotations


def unsupported_kind(data: bytes) -> str | None:
    """Name of a recognisable file type that is not decoded here, if ``data`` starts like one."""
    head = data[:64]
    if head.startswith(b"%PDF"):
        return "PDF"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIC/HEIF"
        if brand in (b"avif", b"avis"):
            return "AVIF"
        return "MP4/QuickTime video"
    text = data[:1024].lstrip().lower()
    if text.startswith(b"<?xml") or text.startswith(b"<svg") or b"<svg" in text:
        return "SVG"
    if text.startswith(b"<!doctype html") or text.startswith(b"<html"):
        return "HTML"
    if head.startswith(b"PK\x03\x04"):
        return "ZIP"
    if head.startswith(b"%!PS") or head.startswith(b"\xc5\xd0\xd3\xc6"):
        return "PostScript/EPS"
    if head.startswith(b"8BPS"):
        return "Photoshop PSD"
    if head[:1] == b"\x0a" and head[1:2] in (b"\x00", b"\x02", b"\x03", b"\x04", b"\x05"):
        return "PCX"
    if head[:1] == b"P" and head[1:2] in b"123456":
        return "PPM/PGM/PBM"
    return None


#: bytes of non-marker garbage tolerated in a JPEG header; Pillow skips garbage one byte at a time in Python
#: (about 0.5 s per MB), so a 10 MB "JPEG" of zeros would cost seconds of CPU
JPEG_GARBAGE_LIMIT = 256 * 1024


def jpeg_header_garbage(data: bytes) -> int:
    """Bytes Pillow would have to skip one by one while looking for JPEG markers before the scan data."""
    pos, n, garbage = 2, len(data), 0
    while pos < n and garbage <= JPEG_GARBAGE_LIMIT:
        if data[pos] != 0xFF:
            nxt = data.find(b"\xff", pos)
            garbage += (n if nxt < 0 else nxt) - pos
            if nxt < 0:
                break
            pos = nxt
            continue
        if pos + 1 >= n:
            break
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
        elif marker in (0xDA, 0xD9):  # start of scan / end of image: the header is over
            break
        elif marker in (0x00, 0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2
        else:
            length = int.from_bytes(data[pos + 2:pos + 4], "big")
            pos += 2 + max(length, 2)
    return garbage


#: PNG chunks tolerated in one file; Pillow handles each chunk in Python, so millions of empty chunks
#: (12 bytes each) would cost tens of seconds of CPU; real files have a few to a few thousand
PNG_CHUNK_LIMIT = 20_000


def png_chunk_count(data: bytes) -> int:
    """Number of chunks in a PNG, counting no further than just past :data:`PNG_CHUNK_LIMIT`."""
    pos, n, count = 8, len(data), 0
    while pos + 8 <= n and count <= PNG_CHUNK_LIMIT:
        length = int.from_bytes(data[pos:pos + 4], "big")
        count += 1
        if data[pos + 4:pos + 8] == b"IEND":
            break
        pos += 12 + length
    return count
