"""The IDX file format of MNIST and Fashion-MNIST: read (raw or gzip) and write."""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import ConvlabError

GZIP_MAGIC = b"\x1f\x8b"
GZIP_LEVEL = 6  # the gzip tool's default; level 9 is up to 30x slower on image data for ~10% smaller files

# IDX type code -> big-endian numpy dtype (the format is big-endian throughout).
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
HEADER_BYTES = 4  # 0, 0, type code, number of dimensions; then one uint32 per dimension


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into a native-endian array.

    Gzip is recognised by its magic bytes, so a file that a browser already unpacked but
    left named `.gz` still loads. Returns an array of the shape stored in the header,
    e.g. (60000, 28, 28) uint8 for MNIST images and (60000,) uint8 for labels.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < HEADER_BYTES:
        raise ConvlabError(f"{path}: not an IDX file ({len(data)} bytes, shorter than the 4-byte header); "
                           "download it again")
    zero1, zero2, code, ndim = data[0], data[1], data[2], data[3]
    if zero1 != 0 or zero2 != 0:
        raise ConvlabError(f"{path}: not an IDX file (magic bytes {data[:4].hex()} should start with 0000); "
                           "check that this is the right file or download it again")
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ConvlabError(f"{path}: unknown IDX type code 0x{code:02X} (known: {known}); "
                           "the file is damaged or not IDX")
    if ndim == 0:
        raise ConvlabError(f"{path}: IDX header says 0 dimensions; the file is damaged or not IDX")

    body_start = HEADER_BYTES + 4 * ndim
    if len(data) < body_start:
        raise ConvlabError(f"{path}: truncated IDX header: {ndim} dimensions need {body_start} bytes, "
                           f"found {len(data)}; download the file again")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=HEADER_BYTES))
    dtype = IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - body_start
    if found < expected:
        raise ConvlabError(f"{path}: truncated IDX body: expected {expected} bytes of data for shape {shape}, "
                           f"found {found}; the file is incomplete, download it again")
    if found > expected:
        raise ConvlabError(f"{path}: {found - expected} extra bytes after the IDX data for shape {shape}; "
                           "the file is damaged or not IDX, download it again")
    array = np.frombuffer(data, dtype=dtype, offset=body_start).reshape(shape)
    # astype copies into a writable, native-endian array.
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write `array` as IDX (any shape with 1..255 dims); gzip it when the path ends in .gz.

    The gzip header carries no name or time, so equal arrays give byte-identical files
    (and equal md5s, which the download tests rely on).
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; use one of {sorted(str(d) for d in codes)}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX stores 1 to 255 dimensions, got shape {array.shape}")
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body = array.astype(IDX_DTYPES[code], copy=False).tobytes()
    if path.name.endswith(".gz"):
        with open(path, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL) as out:
                out.write(header)
                out.write(body)
    else:
        with open(path, "wb") as out:
            out.write(header)
            out.write(body)


def _read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when it starts with the gzip magic bytes."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConvlabError(f"cannot read IDX file {path}: {err.strerror or err}") from err
    if len(data) == 0:
        raise ConvlabError(f"{path}: the file is empty; download it again")
    if data[:2] != GZIP_MAGIC:
        if path.name.endswith(".gz") and data[:2] != b"\x00\x00":
            raise ConvlabError(f"{path}: not a gzip file (and not raw IDX either); download it again")
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        # BadGzipFile is an OSError; a cut-off download ends in EOFError.
        raise ConvlabError(f"{path}: damaged gzip data ({err}); download the file again") from err
