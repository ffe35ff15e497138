"""Training (torch lives only here).

`import drqindex` never imports this package; `import drqindex.train` does not import torch either:
the names below are resolved on first use (PEP 562), which imports torch.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "DRQTrainConfig": "drq",
    "train_drq": "drq",
    "encode_greedy_torch": "drq",
    "HashTeacher": "hashing",
    "HashStudent": "hashing",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
