"""Weight files: reading them from anywhere (a run, a download, a stranger) without ever running code from
them, and writing .safetensors files atomically with the usual permissions."""
from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import ConvlabError
from ..files import atomic_write

_SAFETENSORS_SUFFIXES = (".safetensors",)
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")  # torch.save's usual names, Hugging Face's .bin, Lightning's
# Every suffix load_state_dict_file reads: the one list that --weights checks and its messages name.
WEIGHT_SUFFIXES = _SAFETENSORS_SUFFIXES + _TORCH_SUFFIXES


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict (name -> tensor) from a .safetensors file, or from a torch file holding only tensors.

    Torch files are pickles; they are read with torch.load(weights_only=True), whose unpickler
    rebuilds tensors and plain containers and refuses anything else, so a file that would run code
    (a __reduce__ calling os.system, ...) is refused before any of it runs. A checkpoint dict with a
    'state_dict' or 'model' entry is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise ConvlabError(f"weights file {path} does not exist")
    if path.suffix.lower() in _SAFETENSORS_SUFFIXES or _looks_like_safetensors(path):
        return _load_safetensors(path)
    try:
        with warnings.catch_warnings():  # torch warns about plain pickles before refusing them itself
            warnings.simplefilter("ignore", UserWarning)
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ConvlabError(f"{path} was not loaded: besides tensors it holds {_unpickled_object(err)}, which could "
                           "run code when unpickled; pass a state dict of tensors instead (a .safetensors file, or "
                           "torch.save(model.state_dict(), ...) from a source you trust)") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError, KeyError,
            TypeError, IndexError) as err:
        raise ConvlabError(f"cannot read weights file {path} ({type(err).__name__}: {str(err)[:200]}); it is damaged "
                           "or not a torch/safetensors weights file") from None
    return _as_state_dict(loaded, path)


def _unpickled_object(err: pickle.UnpicklingError) -> str:
    """What torch's weights-only unpickler refused, from its long message: 'a Python object (NAME)'."""
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    name = found.group(1) if found else None
    return f"a Python object ({name})" if name else "Python objects"


def _looks_like_safetensors(path: Path) -> bool:
    """safetensors starts with an 8-byte little-endian header length followed by '{'."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as err:
        raise ConvlabError(f"cannot read weights file {path}: not a valid safetensors file ({err})") from None


def _as_state_dict(loaded, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not loaded or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
        raise ConvlabError(f"{path} holds no state dict (a mapping of parameter names to tensors); "
                           "save one with torch.save(model.state_dict(), PATH) or safetensors")
    return loaded


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path,
                     metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (and string `metadata`) to a .safetensors file at `path`, atomically, with the
    permissions any other file of the process gets (0666 & ~umask: 0644 under the usual umask 022).

    Why not safetensors.torch.save_file: it (safetensors 0.8) writes into a temp file that Rust's
    tempfile crate creates with mode 0600 (private by design) and renames that over `path`, so the file
    keeps 0600 - which is why a run's model.safetensors and model.int8.safetensors were 0600 next to its
    0644 files - and it does not fsync. Here the bytes go into a temp file in the same folder (so the
    rename is atomic) opened with mode 0666, which the kernel narrows by the umask as for any open();
    it is fsynced and moved into place with os.replace, so a crash leaves the old file or the new one,
    never a part; on failure the temp file is removed and the error (OSError, ...) is raised.
    """
    from safetensors.torch import save

    atomic_write(path, save(tensors, metadata=metadata))
