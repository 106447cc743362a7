"""What a user would try instead of the model: general-purpose compressors on the same bytes.

`gzip -9` is zlib's deflate at level 9 in a gzip container, `xz -9e` liblzma's preset 9 | EXTREME in an
.xz container (the same libraries the command-line tools use), PPMd is variant I of the `pyppmd`
package (order 6, 16 MB model: 7-Zip's defaults). Sizes include each format's header, as a file would.
`primed` is the cost of `data` after `prime` in one stream: size(prime + data) - size(prime), the
compressor's counterpart of a model whose state has read the earlier sessions.
"""

from __future__ import annotations

import gzip
import lzma

import pyppmd

PPMD_ORDER = 6
PPMD_MEM = 16 << 20


def _gzip(b: bytes) -> int:
    return len(gzip.compress(b, compresslevel=9, mtime=0))


def _xz(b: bytes) -> int:
    return len(lzma.compress(b, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME))


def _ppmd(b: bytes) -> int:
    return len(pyppmd.compress(b, max_order=PPMD_ORDER, mem_size=PPMD_MEM))


COMPRESSORS = {"gzip -9": _gzip, "xz -9e": _xz, f"PPMd o{PPMD_ORDER}": _ppmd}


def alone_bits(name: str, data: bytes) -> float:
    return 8.0 * COMPRESSORS[name](data)


def primed_bits(name: str, data: bytes, prime: bytes) -> float:
    if not prime:
        return alone_bits(name, data)
    size = COMPRESSORS[name]
    return 8.0 * (size(prime + data) - size(prime))


def table(data: bytes, prime: bytes = b"") -> dict[str, dict[str, float]]:
    """{compressor: {"alone": bits, "primed": bits}} for one piece of text."""
    return {n: {"alone": alone_bits(n, data), "primed": primed_bits(n, data, prime)} for n in COMPRESSORS}
