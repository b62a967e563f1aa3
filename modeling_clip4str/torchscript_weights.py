"""The state dict of a TorchScript archive (OpenAI's CLIP `.pt` files), read without running any of its code.

`torch.jit.load` executes the archive: it compiles `code/` and calls each object's `__setstate__`, which can do
anything TorchScript can (write files, for one). The tensors need none of that. An archive is a zip holding
`data.pkl` (the module tree, pickled: TorchScript objects as `__torch__.*` classes, tensors as references to raw
storages under `data/`) and `code/` (the class definitions, which say which attributes are parameters/buffers).
This reader unpickles `data.pkl` with an allow-list (tensor rebuilding, TorchScript's typed-list helpers; every
`__torch__.*` class becomes an inert placeholder), reads only the `__parameters__` / `__buffers__` lists from the
class definitions as text, and assembles the same keys as `torch.jit.load(path).state_dict()`.
"""

from __future__ import annotations

import ast
import collections
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, ClassVar, Self

import torch

_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_CLASS_RE = re.compile(r"^class\s+(\w+)\s*\((\w+)\)\s*:", re.MULTILINE)
_MEMBER_LIST_RE = r"^\s+{name}\s*=\s*(\[[^\]]*\])"


class TorchScriptArchiveError(ValueError):
    """The file is not a TorchScript archive this reader can take apart without executing it."""


class _ScriptObject:
    """Inert stand-in for a pickled TorchScript object: it only remembers its class name and its state."""

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:  # pickle's BUILD: store, never run anything
        object.__setattr__(self, "_state", state)

    @property
    def attributes(self) -> dict[str, Any] | None:
        state = self.__dict__.get("_state")
        return state if isinstance(state, dict) else None


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _typed_list(items: list) -> list:
    return list(items)


def _restore_type_tag(value: Any, type_str: str) -> Any:
    return value


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles TorchScript's `data.pkl`: only tensor rebuilding and typed lists; `__torch__.*` -> placeholders."""

    _ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch.jit._pickle", "build_intlist"): _typed_list,
        ("torch.jit._pickle", "build_doublelist"): _typed_list,
        ("torch.jit._pickle", "build_boollist"): _typed_list,
        ("torch.jit._pickle", "build_tensorlist"): _typed_list,
        ("torch.jit._pickle", "build_genericlist"): _typed_list,
        ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
    }

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, source: str) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self._archive, self._prefix, self._source = archive, prefix, source
        self._storages: dict[str, torch.Tensor] = {}
        self._classes: dict[str, type] = {}
        self._names = set(archive.namelist())

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            qualified = f"{module}.{name}"
            if qualified not in self._classes:
                self._classes[qualified] = type(name, (_ScriptObject,), {"qualified_name": qualified})
            return self._classes[qualified]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        raise pickle.UnpicklingError(
            f"{self._source}: refusing to load global {module}.{name} (not part of a TorchScript weight archive)"
        )

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"{self._source}: unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not isinstance(numel, int):
            raise pickle.UnpicklingError(f"{self._source}: malformed storage reference {pid!r}")
        if key not in self._storages:
            record = f"{self._prefix}/{key}" if "/" in key else f"{self._prefix}/data/{key}"
            if record not in self._names:
                raise pickle.UnpicklingError(f"{self._source}: storage {record} is missing from the archive")
            raw = bytearray(self._archive.read(record))
            flat = torch.frombuffer(raw, dtype=storage_type.dtype) if raw else torch.empty(0, dtype=storage_type.dtype)
            if flat.numel() != numel:
                raise pickle.UnpicklingError(
                    f"{self._source}: storage {record} holds {flat.numel()} elements, the pickle says {numel}"
                )
            self._storages[key] = flat
        return self._storages[key]

    def _rebuild_tensor_v2(self, storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> torch.Tensor:
        if not isinstance(storage, torch.Tensor):
            raise pickle.UnpicklingError(f"{self._source}: tensor without a storage")
        if not all(isinstance(v, int) for v in (offset, *size, *stride)):
            raise pickle.UnpicklingError(f"{self._source}: malformed tensor geometry {size}/{stride}/{offset}")
        try:
            return storage.as_strided(tuple(size), tuple(stride), offset)
        except RuntimeError as error:
            raise pickle.UnpicklingError(f"{self._source}: tensor outside its storage ({error})") from error

    _rebuild_tensor = _rebuild_tensor_v2


def _member_lists(archive: zipfile.ZipFile, prefix: str) -> dict[str, tuple[list[str], list[str]]]:
    """`{qualified class name: (__parameters__, __buffers__)}` from the class definitions under `code/`, read as
    text (`ast.literal_eval` of the two list literals only)."""
    members: dict[str, tuple[list[str], list[str]]] = {}
    code_root = f"{prefix}/code/"
    for record in archive.namelist():
        if not (record.startswith(code_root) and record.endswith(".py")):
            continue
        module = record[len(code_root) : -len(".py")].replace("/", ".")
        text = archive.read(record).decode("utf-8", errors="replace")
        headers = list(_CLASS_RE.finditer(text))
        for i, header in enumerate(headers):
            if header.group(2) != "Module":
                continue
            body = text[header.end() : headers[i + 1].start() if i + 1 < len(headers) else len(text)]
            lists = []
            for name in ("__parameters__", "__buffers__"):
                found = re.search(_MEMBER_LIST_RE.format(name=name), body, re.MULTILINE)
                lists.append([str(v) for v in ast.literal_eval(found.group(1))] if found else [])
            members[f"{module}.{header.group(1)}"] = (lists[0], lists[1])
    return members


def _collect(
    obj: _ScriptObject,
    members: dict[str, tuple[list[str], list[str]]],
    prefix: str,
    out: dict[str, torch.Tensor],
    source: str,
) -> None:
    """Parameters, then buffers, then submodules: the order of `Module.state_dict()`."""
    if obj.qualified_name not in members:
        raise TorchScriptArchiveError(f"{source}: no module definition for {obj.qualified_name} under code/")
    parameters, buffers = members[obj.qualified_name]
    attributes = obj.attributes
    if attributes is None:
        if parameters or buffers:
            raise TorchScriptArchiveError(
                f"{source}: {obj.qualified_name} restores its tensors with its own __setstate__ code; its weights "
                "cannot be read without running that code, which this loader never does"
            )
        return
    for name in (*parameters, *buffers):
        value = attributes.get(name)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise TorchScriptArchiveError(f"{source}: {prefix}{name} is declared a tensor but holds {type(value)}")
        out[f"{prefix}{name}"] = value
    for name, value in attributes.items():
        if isinstance(value, _ScriptObject) and value.qualified_name in members:
            _collect(value, members, f"{prefix}{name}.", out, source)


def is_torchscript_archive(path: str | Path) -> bool:
    """A zip with a `*/data.pkl` and a `*/code/` folder (torch.jit.save's layout)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def load_torchscript_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """`torch.jit.load(path).state_dict()` (same keys, same values) without compiling or running the archive."""
    path = Path(path)
    source = str(path)
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise TorchScriptArchiveError(
                f"{source}: expected one <archive>/data.pkl in the TorchScript zip, found {pickles or 'none'} "
                "(archives from before torch 1.4 are not supported)"
            )
        prefix = pickles[0].split("/", 1)[0]
        if f"{prefix}/byteorder" in archive.namelist():
            order = archive.read(f"{prefix}/byteorder").decode().strip()
            if order != "little":
                raise TorchScriptArchiveError(f"{source}: {order}-endian archives are not supported")
        members = _member_lists(archive, prefix)
        try:
            root = _RestrictedUnpickler(archive.read(pickles[0]), archive, prefix, source).load()
        except pickle.UnpicklingError as error:
            message = str(error)
            raise TorchScriptArchiveError(message if source in message else f"{source}: {message}") from error
        except Exception as error:  # malformed pickles raise anything from our placeholders' point of view
            raise TorchScriptArchiveError(f"{source}: data.pkl could not be read safely ({error})") from error
    if not isinstance(root, _ScriptObject):
        raise TorchScriptArchiveError(f"{source}: data.pkl does not hold a TorchScript module")
    state: dict[str, torch.Tensor] = {}
    _collect(root, members, "", state, source)
    return state


__all__ = ["TorchScriptArchiveError", "is_torchscript_archive", "load_torchscript_state_dict"]
