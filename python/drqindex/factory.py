"""index_factory: build a drqindex index from a faiss-style description string.

    index_factory(d, "DRQ16")                   IndexDRQ(d, iters=16), untrained
    index_factory(d, "DRQ16pi")                 IndexDRQ(d, iters=16, codebooks="per_iteration")
    index_factory(d, "DRQ8x8", METRIC_INNER_PRODUCT)
    index_factory(d, "DRQ32x4fs")               IndexDRQFastScan(d, iters=32): 4-bit codes, SIMD fast scan
    index_factory(d, "DRQ16,Refine(Flat)")      IndexRefineFlat(IndexDRQ(d, 16)): exact re-ranking
    index_factory(d, "IVF1024,DRQ16")           IndexIVFDRQ(faiss.IndexFlatL2(d), d, 1024, iters=16)
    index_factory(d, "IVF1024_HNSW32,DRQ16")    the same with a faiss.IndexHNSWFlat(d, 32) coarse quantizer

A description is a comma-separated list of components, parsed in three slots like faiss's:
    [coarse quantizer ,] encoding [, refinement]
    coarse:      IVF<nlist> or IVF<nlist>_HNSW<M>  IndexIVFDRQ; coarse quantizer IndexFlatL2/IndexFlatIP
                                               by metric, or IndexHNSWFlat(d, M) (faiss)
    encoding:    DRQ<M> or DRQ<M>x8            M = 1..1024 iterations of one byte (K = 256)
                 DRQ<M>pi or DRQ<M>x8pi        the same with one codebook per iteration (codebooks="per_iteration")
                 DRQ<M>x4fs                    IndexDRQFastScan: M = 1..254 iterations of 4 bits
                                               (K = 16, per-iteration codebooks), fast scan; alone
    refinement:  Refine(Flat) or RFlat         IndexRefineFlat: raw vectors kept, exact re-ranking
Each slot is parsed into a small spec first and the index is built from the specs, so adding the
IVF and Refine builders later only fills in _build, the grammar stays as it is.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from . import _validate
from .metrics import METRIC_L2

ACCEPTED_FORMS = ("DRQ<M>", "DRQ<M>x8", "DRQ<M>pi", "DRQ<M>x4fs", "IVF<nlist>,DRQ<M>", "IVF<nlist>_HNSW<m>,DRQ<M>", "DRQ<M>,Refine(Flat)", "DRQ<M>,RFlat")

_ENCODING = re.compile(r"DRQ(\d+)(?:x(\d+)(fs)?)?(pi)?")
_IVF = re.compile(r"IVF(\d+)(?:_HNSW(\d+))?")
_REFINE = re.compile(r"Refine\((\w+)\)|R(Flat)")


@dataclass(frozen=True)
class _Spec:
    iters: int
    nlist: int | None = None  # IVF<nlist>
    hnsw: int | None = None  # IVF<nlist>_HNSW<m>: HNSW coarse quantizer with m links
    refine: str | None = None  # "Flat"
    fastscan: bool = False  # DRQ<M>x4fs
    codebooks: str = "shared"  # DRQ<M>pi: "per_iteration"


def index_factory(d: int, description: str, metric: int = METRIC_L2):
    """The index described by `description` (see the module docstring), untrained, for vectors of
    dimension d and the given metric (drqindex.METRIC_L2 or METRIC_INNER_PRODUCT; faiss's
    constants have the same values). ValueError for a string that is not understood, listing the
    accepted forms; NotImplementedError for a valid form whose index type does not exist yet."""
    d = _validate.positive_int(d, "d")
    metric = _validate.metric_value(metric)
    if not isinstance(description, str):
        raise TypeError(f"description: expected a str such as 'DRQ16', got {type(description).__name__}")
    return _build(d, _parse(description), metric)


def _parse(description: str) -> _Spec:
    parts = [p.strip() for p in description.split(",")]
    iters = nlist = refine = hnsw = None
    fastscan = False
    codebooks = "shared"
    for part in parts:
        if (match := _ENCODING.fullmatch(part)) is not None:
            if iters is not None or refine is not None:
                raise _bad(description, f"'{part}': a second encoding, or an encoding after the refinement")
            iters = int(match.group(1))
            if not 1 <= iters <= 1024:
                raise _bad(description, f"'{part}': M must be 1..1024, got {iters}")
            nbits = match.group(2)
            fastscan = match.group(3) is not None
            if match.group(4) is not None:
                if fastscan:
                    raise _bad(description, f"'{part}': fast-scan codes always have per-iteration codebooks; drop 'pi'")
                codebooks = "per_iteration"
            if fastscan:
                if int(nbits) != 4:
                    raise _bad(description, f"'{part}': fast-scan codes use 4 bits per iteration (K = 16), got x{nbits}")
                if iters > 254:
                    raise _bad(description, f"'{part}': a fast-scan index has M = 1..254, got {iters}")
            elif nbits is not None and int(nbits) != 8:
                raise _bad(description, f"'{part}': DRQ codes use 8 bits per iteration (K = 256), got x{nbits}")
        elif (match := _IVF.fullmatch(part)) is not None:
            if iters is not None or nlist is not None:
                raise _bad(description, f"'{part}': the IVF component must come first, once")
            nlist = int(match.group(1))
            if nlist < 1:
                raise _bad(description, f"'{part}': nlist must be >= 1")
            if match.group(2) is not None:
                hnsw = int(match.group(2))
                if hnsw < 2:
                    raise _bad(description, f"'{part}': HNSW needs >= 2 links per node")
        elif (match := _REFINE.fullmatch(part)) is not None:
            if iters is None or refine is not None:
                raise _bad(description, f"'{part}': a refinement must follow the encoding, once")
            refine = match.group(1) or match.group(2)
            if refine != "Flat":
                raise _bad(description, f"'{part}': only Refine(Flat) is supported")
        else:
            raise _bad(description, f"'{part}' is not a known component")
    if iters is None:
        raise _bad(description, "no encoding component (DRQ<M>)")
    if nlist is not None and refine is not None:
        raise _bad(description, "a refinement of an IVF index is not supported")
    if fastscan and (nlist is not None or refine is not None):
        raise _bad(description, "DRQ<M>x4fs is a flat index: no IVF or refinement component")
    return _Spec(iters=iters, nlist=nlist, hnsw=hnsw, refine=refine, fastscan=fastscan, codebooks=codebooks)


def _build(d: int, spec: _Spec, metric: int):
    from .index_drq import IndexDRQ

    if spec.fastscan:
        from .index_drq_fastscan import IndexDRQFastScan
        return IndexDRQFastScan(d, spec.iters, metric)
    if spec.nlist is not None:
        import faiss

        from .index_ivf import IndexIVFDRQ
        if spec.hnsw is not None:
            coarse = faiss.IndexHNSWFlat(d, spec.hnsw, metric)
        elif metric == METRIC_L2:
            coarse = faiss.IndexFlatL2(d)
        else:
            coarse = faiss.IndexFlatIP(d)
        return IndexIVFDRQ(coarse, d, spec.nlist, iters=spec.iters, metric=metric, codebooks=spec.codebooks)
    index = IndexDRQ(d, iters=spec.iters, metric=metric, codebooks=spec.codebooks)
    if spec.refine == "Flat":
        from .index_refine import IndexRefineFlat
        return IndexRefineFlat(index)
    return index


def _bad(description: str, problem: str) -> ValueError:
    return ValueError(f"index_factory: cannot parse {description!r}: {problem}. "
                      f"Accepted forms: {', '.join(ACCEPTED_FORMS)}")
