"""Writing a safetensors file one tensor at a time, so a big file never sits whole in memory.

`safetensors.torch.save_file` wants every tensor at once. The consolidated SAC adapter is
computed layer by layer, so each tensor's bytes go to a temporary data file as soon as it
exists; `close` then writes the header (whose offsets are only known at the end) followed by
the data into a second temporary file in the target folder, fsyncs it and renames it into
place. Readers (`safetensors.safe_open`) load it back tensor by tensor as well.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import torch

from ...core.fsio import fsync_dir

_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
           torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}


class StreamingWriter:
    """`with StreamingWriter(path, metadata) as w: w.add(name, tensor) ...` writes `path` atomically.

    An exception inside the block leaves no file behind (and an older `path` untouched).
    """

    def __init__(self, path: str | os.PathLike, metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
        self.header: dict[str, dict] = {}
        self.offset = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._data_name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".data", dir=self.path.parent)
        self._data = os.fdopen(fd, "w+b")

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self.header or name == "__metadata__":
            raise ValueError(f"tensor name {name!r} used twice")
        if tensor.dtype not in _DTYPES:
            raise ValueError(f"cannot store dtype {tensor.dtype} in safetensors")
        flat = tensor.detach().to("cpu").contiguous()
        raw = flat.reshape(-1).view(torch.uint8).numpy().tobytes() if flat.numel() else b""
        self._data.write(raw)
        self.header[name] = {"dtype": _DTYPES[tensor.dtype], "shape": list(flat.shape),
                             "data_offsets": [self.offset, self.offset + len(raw)]}
        self.offset += len(raw)

    def close(self) -> Path:
        header = dict(self.header)
        if self.metadata:
            header["__metadata__"] = self.metadata
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 8)  # the data section starts 8-byte aligned, as safetensors writes it
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(struct.pack("<Q", len(text)))
                out.write(text)
                self._data.flush()
                self._data.seek(0)
                shutil.copyfileobj(self._data, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        finally:
            self._discard()
        fsync_dir(self.path.parent)
        return self.path

    def _discard(self) -> None:
        self._data.close()
        if os.path.exists(self._data_name):
            os.unlink(self._data_name)

    def __enter__(self) -> "StreamingWriter":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self._discard()
