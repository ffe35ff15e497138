"""Search-time parameters, passed as `index.search(x, k, params=...)` as in faiss."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SearchParametersDRQ:
    """iters: how many code iterations (bytes per vector) the scan uses, 1..M; None means all M.
    sel: only return vectors whose id it selects, as faiss's SearchParameters.sel: a
    faiss.IDSelector (IDSelectorBatch, IDSelectorRange, IDSelectorArray, Not/And/Or, ...) or a 1-D
    int array of allowed ids; None searches everything. Fewer than k selected: -1 padding.

    The codes are stored once with M iterations; a smaller iters reads only each code's prefix,
    trading recall for speed without re-encoding.
    """
    iters: int | None = None
    sel: object = None


@dataclass
class SearchParametersIVFDRQ:
    """For IndexIVFDRQ. nprobe: how many inverted lists to scan per query, 1..nlist (None:
    index.nprobe); iters: code iterations (bytes) used, 1..M (None: index.search_iters, else M);
    sel: as SearchParametersDRQ.sel (a faiss.IDSelector or an int array of allowed ids)."""
    nprobe: int | None = None
    iters: int | None = None
    sel: object = None
