"""Which stored vectors an id selector picks: faiss's own IDSelector objects, or an array of ids.

Accepting faiss.IDSelector* is the drop-in choice (code written for faiss passes its selectors
unchanged). Calling sel.is_member(id) once per stored vector from Python would cost ~3 us per
vector, so:
  - IDSelectorRange and IDSelectorArray are read field by field and evaluated with numpy;
  - any other selector (IDSelectorBatch, IDSelectorBitmap, Not/And/Or/XOr, a user subclass) is
    evaluated by faiss itself, in C++: a throwaway faiss.IndexIDMap over an IndexFlat whose
    vectors encode storage positions gets sel through remove_ids, and the positions that remain
    tell which ones were selected (about 0.1 s per million stored vectors).
faiss is imported only when a selector object is actually passed.
"""
from __future__ import annotations

import numpy as np

from . import _validate

# Positions are stored as two float32 coordinates (high and low 22 bits), each exact in float32.
_POS_BITS = 22


def selection_mask(sel, ids: np.ndarray, name: str = "sel") -> np.ndarray:
    """Boolean (len(ids),) mask: True where the stored id `ids[i]` is selected by `sel`."""
    if isinstance(sel, np.ndarray):
        if sel.ndim != 1 or not np.issubdtype(sel.dtype, np.integer):
            raise TypeError(f"{name}: expected a 1-D integer array of ids or a faiss.IDSelector, "
                            f"got {_validate._describe(sel)}")
        return np.isin(ids, sel.astype(np.int64, copy=False))
    if not hasattr(sel, "is_member"):
        raise TypeError(f"{name}: expected a 1-D int64 array of ids or a faiss.IDSelector object "
                        f"(IDSelectorBatch, IDSelectorRange, IDSelectorArray, ...), got {type(sel).__name__}")
    import faiss

    if isinstance(sel, faiss.IDSelectorRange):
        return (ids >= sel.imin) & (ids < sel.imax)
    if isinstance(sel, faiss.IDSelectorArray):
        members = faiss.rev_swig_ptr(sel.ids, sel.n) if sel.n else np.empty(0, np.int64)
        return np.isin(ids, np.asarray(members, dtype=np.int64))
    if not isinstance(sel, faiss.IDSelector):
        raise TypeError(f"{name}: expected a faiss.IDSelector, got {type(sel).__name__}")
    return _mask_by_faiss(faiss, sel, ids)


def _mask_by_faiss(faiss, sel, ids: np.ndarray) -> np.ndarray:
    n = ids.shape[0]
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    pos = np.arange(n, dtype=np.int64)
    xb = np.stack([pos >> _POS_BITS, pos & ((1 << _POS_BITS) - 1)], axis=1).astype(np.float32)
    flat = faiss.IndexFlatL2(2)
    idmap = faiss.IndexIDMap(flat)
    idmap.add_with_ids(xb, np.ascontiguousarray(ids, dtype=np.int64))
    idmap.remove_ids(sel)
    kept = flat.reconstruct_n(0, flat.ntotal).astype(np.int64) if flat.ntotal else np.empty((0, 2), np.int64)
    mask[:] = True
    mask[(kept[:, 0] << _POS_BITS) | kept[:, 1]] = False
    return mask


def remove_selected(store, ids) -> int:
    """The removal behind every index's remove_ids: `ids` (a 1-D integer array of ids, or a faiss
    IDSelector) becomes a mask over the stored ids of `store` (a _core.CodeStore or InvertedLists),
    which then drops the selected vectors. The caller holds the index's write lock."""
    if isinstance(ids, np.ndarray) and (ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer)):
        raise TypeError(f"ids: expected a 1-D int64 array or a faiss.IDSelector, got {_validate._describe(ids)}")
    if store.ntotal == 0 or (isinstance(ids, np.ndarray) and ids.size == 0):
        selection_mask(ids, np.empty(0, np.int64), "ids")  # still reject a wrong type
        return 0
    mask = selection_mask(ids, store.get_ids(), "ids")
    if not mask.any():
        return 0
    return int(store.remove(mask.view(np.uint8)))
