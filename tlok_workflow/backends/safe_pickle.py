"""torch's pickled weight files (.ckpt, .pth, .pt) read without running anything they ask for.

A pickle can call any function while it is read, so a downloaded .ckpt may run a command. torch's
`weights_only=True` loader reads files that pickle only tensors and containers. Old Dreambooth .ckpt files
(the 4elements model is one) also pickle PyTorch Lightning trainer objects, which it refuses; those are read
again with our allow-list, as the WebUI's modules/safe.py does: tensors, dicts and numpy scalars are rebuilt,
Lightning objects become inert stand-ins, anything else is refused.

torch's loader uses two things of the pickle module it is given: `Unpickler` (the zip format's data.pkl, the
legacy format's main pickle) and `load` (the legacy non-zip format's magic number, version, system info and
storage keys, read before and after the main pickle). Both go through the allow-list, so no byte of a file is
unpickled any other way. TorchScript archives (they hold code) are refused, and so is the pre-1.0 tar format
(torch's weights-only loader refuses it, and it is never read a second time).
"""
import pickle
import types
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from typing import Any, Tuple

from ..errors import UserError


class Refused(UserError):
    """A file holding something no weights file needs; the message says what."""


def load(path) -> Tuple[Any, bool]:
    """(what the file pickles, on the CPU; True when it needed our allow-list: it pickles training objects)."""
    import torch

    is_zip = zipfile.is_zipfile(path)
    if is_zip and _is_torchscript(path):
        raise Refused("a TorchScript archive, which holds code, not only weights (save its state_dict instead)")
    try:   # mmap works only for the zip format (torch >= 1.6)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip), False
    except pickle.UnpicklingError:
        pass   # it pickles more than tensors: read it again, every step through the allow-list
    return torch.load(path, map_location="cpu", weights_only=False, mmap=is_zip, pickle_module=RESTRICTED), True


def _is_torchscript(path) -> bool:
    """As torch.load tells one (it would hand such a file to torch.jit.load): a constants.pkl record."""
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/", 1)[-1] == "constants.pkl" for name in archive.namelist())


class _Inert:
    """Stands in for a pickled training object (a Lightning callback); keeps nothing, runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


_ALLOWED = {
    "collections": {"OrderedDict"},
    "torch._utils": {"_rebuild_tensor_v2", "_rebuild_tensor", "_rebuild_parameter", "_rebuild_parameter_with_state"},
    "torch": {"Size", "device"},
    "numpy": {"dtype", "ndarray"},
    "numpy.core.multiarray": {"scalar", "_reconstruct"},
    "numpy._core.multiarray": {"scalar", "_reconstruct"},
    "_codecs": {"encode"},
    "builtins": {"set", "frozenset", "slice"},
}
_LIGHTNING = ("pytorch_lightning", "lightning", "lightning_fabric")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # protocol 2 (torch's default) writes Python 2 names: __builtin__.set is builtins.set, as pickle reads it
        module, name = NAME_MAPPING.get((module, name), (IMPORT_MAPPING.get(module, module), name))
        if name in _ALLOWED.get(module, ()) or module == "numpy.dtypes":
            return super().find_class(module, name)
        if module.split(".")[0] in _LIGHTNING:
            return _Inert
        raise Refused(f"it pickles {module}.{name}, which a weights file has no need for")


def _restricted_load(file, **kwargs):
    return _RestrictedUnpickler(file, **kwargs).load()


RESTRICTED = types.ModuleType("tlok_restricted_pickle")   # what torch.load takes as its pickle_module
RESTRICTED.Unpickler = _RestrictedUnpickler
RESTRICTED.load = _restricted_load
