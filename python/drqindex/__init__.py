"""drqindex: a faiss-compatible vector index over sequential (DRQ) codes.

One model is trained once, every vector is encoded once into M bytes, and each search picks how
many of those bytes to use. `import drqindex` never imports torch: only training does.
"""
from ._core import get_num_threads, set_num_threads, set_simd_level, simd_level, supported_simd_levels
from .index_drq import IndexDRQ
from .index_drq_fastscan import IndexDRQFastScan
from .metrics import METRIC_INNER_PRODUCT, METRIC_L2
from .params import SearchParametersDRQ
from .quantizer import DRQQuantizer

__version__ = "0.1.0"



def __getattr__(name):
    # drqindex.train (torch) and drqindex.data are imported on first use, so that a search-only
    # process never pays for (or needs) torch.
    if name in ("train", "data"):
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "IndexDRQ", "IndexDRQFastScan", "DRQQuantizer", "SearchParametersDRQ", "METRIC_L2", "METRIC_INNER_PRODUCT",
    "simd_level", "supported_simd_levels", "set_simd_level", "get_num_threads", "set_num_threads",
]

# Persistence, faiss interoperability and factory strings (import lines added after the core API).
from .io import IndexFileError, deserialize_index, read_index, serialize_index, write_index  # noqa: E402
from .factory import index_factory  # noqa: E402
from .faiss_export import to_faiss  # noqa: E402
from .index_refine import IndexRefineFlat  # noqa: E402
from .index_ivf import IndexIVFDRQ  # noqa: E402
from .params import SearchParametersIVFDRQ  # noqa: E402

from .encoder import TernaryEncoder  # noqa: E402
from .index_binary_hash import IndexBinaryHash  # noqa: E402

__all__ += ["TernaryEncoder", "IndexBinaryHash", "IndexIVFDRQ", "SearchParametersIVFDRQ", "IndexRefineFlat", "IndexFileError", "read_index", "write_index", "serialize_index", "deserialize_index",
            "index_factory", "to_faiss"]
