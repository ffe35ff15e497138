// drqindex._core: the only pybind11 file. Converts and checks numpy arrays, releases the GIL
// around the C++ core, and turns Ctrl-C during long calls into KeyboardInterrupt.
//
// Arrays are never converted silently: every input must already have the exact dtype, the
// expected number of dimensions and sizes, and be C-contiguous and aligned; otherwise ValueError
// names what was expected and what was received. (The Python layer converts user input first;
// a silent copy here would hide a missed conversion there.)
//
// Thread safety: a CodeStore carries a readers-writer lock. Every method takes it only after
// releasing the GIL, so a thread waiting for the lock never holds the GIL that the lock holder
// may need (the interrupt check re-acquires the GIL while a search holds the lock).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "drq/adc.h"
#include "drq/codes.h"
#include "drq/encode.h"
#include "drq/encode_per_iteration.h"
#include "drq/inner_products.h"
#include "drq/hamming.h"
#include "drq/fastscan.h"
#include "drq/fastscan_codes.h"
#include "drq/fastscan_search.h"
#include "drq/fastscan_tables.h"
#include "drq/ivf.h"
#include "drq/parallel.h"
#include "drq/search.h"
#include "drq/simd_level.h"
#include "drq/ternary_net.h"

namespace py = pybind11;

namespace {

// ---------------------------------------------------------------------------------------------
// Array checks

// One expected dimension: a fixed size, or any size (kAny) shown under a symbolic name.
struct Dim {
    static constexpr py::ssize_t kAny = -1;
    py::ssize_t size;
    std::string label;  // e.g. "n"; used when size == kAny
};

Dim any_dim(const std::string& label) { return Dim{Dim::kAny, label}; }
Dim fixed_dim(py::ssize_t size, const std::string& label = "") { return Dim{size, label}; }

std::string shape_text(const std::vector<py::ssize_t>& shape) {
    std::string text = "(";
    for (size_t i = 0; i < shape.size(); ++i) {
        if (i > 0) text += ", ";
        text += std::to_string(shape[i]);
    }
    if (shape.size() == 1) text += ",";
    return text + ")";
}

std::string expected_shape_text(const std::vector<Dim>& dims) {
    std::string text = "(";
    for (size_t i = 0; i < dims.size(); ++i) {
        if (i > 0) text += ", ";
        if (dims[i].size == Dim::kAny) {
            text += dims[i].label;
        } else if (!dims[i].label.empty()) {
            text += dims[i].label + "=" + std::to_string(dims[i].size);
        } else {
            text += std::to_string(dims[i].size);
        }
    }
    if (dims.size() == 1) text += ",";
    return text + ")";
}

std::string describe_array(const py::array& arr) {
    std::vector<py::ssize_t> shape(arr.shape(), arr.shape() + arr.ndim());
    return std::string(py::str(arr.dtype())) + " array of shape " + shape_text(shape);
}

// The SIMD level a kernel binding runs at: the one a test forces by name (it must be supported
// here), else the process's current level.
drq::SimdLevel requested_simd_level(const std::optional<std::string>& level_name) {
    if (!level_name) return drq::get_simd_level();
    const drq::SimdLevel level = drq::parse_simd_level(*level_name);
    if (!drq::simd_level_supported(level)) {
        throw std::invalid_argument("SIMD level " + *level_name + " is not supported here");
    }
    return level;
}

template <class T>
bool has_dtype(const py::array& arr) {
    // EquivTypes: accepts e.g. int64 spelled 'l' or 'q', rejects other byte orders.
    return py::isinstance<py::array_t<T>>(arr);
}

// Checks `obj` against one of the dtypes T... (by equivalence), the dims, C-contiguity and
// alignment. Returns the array (no copy). `dtype_text` names the accepted dtypes for messages.
template <class... T>
py::array require_array(const py::handle& obj, const char* arg, const char* dtype_text,
                        const std::vector<Dim>& dims) {
    const std::string expected = std::string(dtype_text) + " array of shape " +
                                 expected_shape_text(dims) + ", C-contiguous";
    if (!py::isinstance<py::array>(obj)) {
        throw py::type_error(std::string(arg) + ": expected a numpy " + expected + ", got " +
                             std::string(py::str(py::type::of(obj).attr("__name__"))));
    }
    py::array arr = py::reinterpret_borrow<py::array>(obj);
    const auto fail = [&](const std::string& why) {
        throw std::invalid_argument(std::string(arg) + ": expected " + expected + ", got " +
                                    describe_array(arr) + why);
    };
    if (!(has_dtype<T>(arr) || ...)) fail("");
    if (arr.ndim() != static_cast<py::ssize_t>(dims.size())) fail("");
    for (size_t i = 0; i < dims.size(); ++i) {
        if (dims[i].size != Dim::kAny && arr.shape(static_cast<py::ssize_t>(i)) != dims[i].size) {
            fail("");
        }
    }
    if (!(arr.flags() & py::array::c_style)) fail(" that is not C-contiguous");
    if (!(arr.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_)) fail(" that is not aligned");
    return arr;
}

// A 2-D float32 array whose rows may be apart (a slice of columns such as a[:, 1:9]): each row
// contiguous and aligned, rows a positive whole number of elements apart. Returns that distance
// in elements (the row length when there is at most one row).
size_t require_float_rows(const py::array& arr, const char* arg) {
    const auto fail = [&](const std::string& why) {
        throw std::invalid_argument(std::string(arg) + ": expected a float32 2-D array whose rows are contiguous, got " +
                                    describe_array(arr) + why);
    };
    if (arr.ndim() != 2) fail("");
    if (arr.strides(1) != static_cast<py::ssize_t>(sizeof(float)) && arr.shape(1) > 1) fail(" with strided rows");
    if (!(arr.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_)) fail(" that is not aligned");
    if (arr.shape(0) <= 1) return static_cast<size_t>(arr.shape(1));
    const py::ssize_t stride = arr.strides(0);
    if (stride <= 0 || stride % static_cast<py::ssize_t>(sizeof(float)) != 0 ||
        stride / static_cast<py::ssize_t>(sizeof(float)) < arr.shape(1)) {
        fail(" with overlapping or reversed rows");
    }
    return static_cast<size_t>(stride / static_cast<py::ssize_t>(sizeof(float)));
}

// Whether the memory spans of two arrays (first to last element) overlap.
bool ranges_overlap(const py::array& a, const py::array& b) {
    const auto span = [](const py::array& x) {
        const char* p = static_cast<const char*>(x.data());
        if (x.size() == 0) return std::make_pair(p, p);
        py::ssize_t lo = 0, hi = 0;
        for (py::ssize_t i = 0; i < x.ndim(); ++i) {
            const py::ssize_t ext = (x.shape(i) - 1) * x.strides(i);
            (ext < 0 ? lo : hi) += ext;
        }
        return std::make_pair(p + lo, p + hi + x.itemsize());
    };
    const auto [a0, a1] = span(a);
    const auto [b0, b1] = span(b);
    return a0 < b1 && b0 < a1;
}

template <class T>
const T* data_of(const py::array& arr) {
    return static_cast<const T*>(arr.data());
}

// Hands a std::vector to numpy without copying: the array owns the vector through a capsule.
template <class T>
py::array_t<T> vector_to_array(std::vector<T>&& values, std::vector<py::ssize_t> shape) {
    auto* owned = new std::vector<T>(std::move(values));
    py::capsule owner(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
    return py::array_t<T>(shape, owned->data(), owner);
}

// Validates vectors [start, start + n) against the store (n = None: up to the end); returns n.
size_t resolve_range(const drq::CodeStore& store, int64_t start, std::optional<int64_t> n,
                     const char* what) {
    const size_t ntotal = store.ntotal();
    if (start < 0 || static_cast<uint64_t>(start) > ntotal) {
        throw std::out_of_range(std::string(what) + ": start=" + std::to_string(start) +
                                " is outside [0, ntotal=" + std::to_string(ntotal) + "]");
    }
    const size_t available = ntotal - static_cast<size_t>(start);
    if (!n) return available;
    if (*n < 0 || static_cast<uint64_t>(*n) > available) {
        throw std::out_of_range(std::string(what) + ": n=" + std::to_string(*n) +
                                " vectors from start=" + std::to_string(start) +
                                " do not fit in ntotal=" + std::to_string(ntotal));
    }
    return static_cast<size_t>(*n);
}

size_t to_size(int64_t value, const char* name, int64_t min_value) {
    if (value < min_value) {
        throw std::invalid_argument(std::string(name) + " must be >= " +
                                    std::to_string(min_value) + ", got " + std::to_string(value));
    }
    return static_cast<size_t>(value);
}

// ---------------------------------------------------------------------------------------------
// GIL release with Ctrl-C support

// Runs fn(interrupt_callback) without the GIL. The callback, called by the core on this thread
// every few milliseconds, takes the GIL back and runs the Python signal handlers; if one raised
// (KeyboardInterrupt for Ctrl-C), the core stops and that Python exception is raised here.
template <class Fn>
void run_interruptible(Fn&& fn) {
    std::optional<py::error_already_set> pending;
    const drq::InterruptCallback check_signals = [&pending]() -> bool {
        py::gil_scoped_acquire gil;
        if (PyErr_CheckSignals() != 0) {
            pending.emplace();  // fetches (and clears) the exception the handler raised
            return true;
        }
        return false;
    };
    try {
        py::gil_scoped_release release;
        fn(check_signals);
    } catch (const drq::Interrupted&) {
        if (pending) throw py::error_already_set(*pending);
        throw;  // translated to KeyboardInterrupt
    }
}

// ---------------------------------------------------------------------------------------------
// CodeStore with its lock

// remove(mask) of both stores (CodeStore, InvertedLists): the mask is checked against ntotal
// under the write lock, so a concurrent add cannot slip in between the check and the removal.
template <class Container>
size_t remove_by_mask(std::shared_mutex& mutex, Container& container, const py::object& mask_obj) {
    py::array mask = require_array<bool, uint8_t>(mask_obj, "mask", "bool or uint8", {any_dim("ntotal")});
    const size_t length = static_cast<size_t>(mask.shape(0));
    const uint8_t* mask_data = data_of<uint8_t>(mask);
    py::gil_scoped_release release;
    std::unique_lock<std::shared_mutex> lock(mutex);
    if (length != container.ntotal()) {
        throw std::invalid_argument("mask: expected shape (ntotal=" + std::to_string(container.ntotal()) +
                                    ",), got (" + std::to_string(length) + ",)");
    }
    return container.remove(mask_data);
}

struct PyCodeStore {
    explicit PyCodeStore(size_t M) : store(M) {}
    drq::CodeStore store;
    mutable std::shared_mutex mutex;
};

// The arguments shared by search and range_search, checked and converted; the arrays are kept
// here so the raw pointers in params stay valid for the whole call.
struct SearchInputs {
    py::array tables, qnorms, scales, allowed;
    drq::SearchParams params;
};

SearchInputs parse_search_inputs(const PyCodeStore& s, const py::object& tables_obj,
                                 const py::object& qnorms_obj, const py::object& scales_obj,
                                 int64_t iters, int64_t k, int64_t metric,
                                 const py::object& allowed_obj) {
    SearchInputs in;
    const py::ssize_t M = static_cast<py::ssize_t>(s.store.M());
    // (nq, K): one table shared by all iterations; (nq, T, K): one table per iteration.
    const bool per_iteration_tables = py::isinstance<py::array>(tables_obj) &&
                                      py::reinterpret_borrow<py::array>(tables_obj).ndim() == 3;
    in.tables =
        per_iteration_tables
            ? require_array<float>(tables_obj, "tables", "float32",
                                   {any_dim("nq"), any_dim("T"), any_dim("K")})
            : require_array<float>(tables_obj, "tables", "float32", {any_dim("nq"), any_dim("K")});
    const py::ssize_t nq = in.tables.shape(0);
    in.qnorms = require_array<float>(qnorms_obj, "qnorms", "float32", {fixed_dim(nq, "nq")});
    in.scales = require_array<float>(scales_obj, "scales", "float32", {fixed_dim(M, "M")});
    if (metric != 0 && metric != 1) {
        throw std::invalid_argument("metric must be 0 (L2) or 1 (inner product), got " +
                                    std::to_string(metric));
    }

    drq::SearchParams& params = in.params;
    params.tables = data_of<float>(in.tables);
    params.nq = static_cast<size_t>(nq);
    params.K = static_cast<size_t>(in.tables.shape(per_iteration_tables ? 2 : 1));
    params.tables_per_query = per_iteration_tables ? static_cast<size_t>(in.tables.shape(1)) : 1;
    if (per_iteration_tables && params.tables_per_query == 0) {
        throw std::invalid_argument("tables: the per-iteration axis T is empty");
    }
    params.qnorms = data_of<float>(in.qnorms);
    params.scales = data_of<float>(in.scales);
    params.iters = to_size(iters, "iters", 1);
    params.k = to_size(k, "k", 1);
    params.metric = metric == 0 ? drq::Metric::L2 : drq::Metric::InnerProduct;
    if (!allowed_obj.is_none()) {
        in.allowed = require_array<bool, uint8_t>(allowed_obj, "allowed", "bool or uint8",
                                                  {any_dim("ntotal")});
        params.allowed = data_of<uint8_t>(in.allowed);
        params.allowed_size = static_cast<size_t>(in.allowed.shape(0));  // checked under the lock
    }
    return in;
}

py::tuple search_impl(const PyCodeStore& s, const py::object& tables_obj,
                      const py::object& qnorms_obj, const py::object& scales_obj, int64_t iters,
                      int64_t k, int64_t metric, const py::object& allowed_obj, bool reference) {
    SearchInputs in =
        parse_search_inputs(s, tables_obj, qnorms_obj, scales_obj, iters, k, metric, allowed_obj);
    const drq::SearchParams& params = in.params;
    const auto nq = static_cast<py::ssize_t>(params.nq);

    py::array_t<float> distances({nq, static_cast<py::ssize_t>(params.k)});
    py::array_t<int64_t> labels({nq, static_cast<py::ssize_t>(params.k)});
    float* d_out = distances.mutable_data();
    int64_t* l_out = labels.mutable_data();

    if (reference) {
        py::gil_scoped_release release;
        std::shared_lock<std::shared_mutex> lock(s.mutex);
        drq::search_reference(s.store, params, d_out, l_out);
    } else {
        const int nthreads = drq::get_num_threads();
        const drq::SimdLevel level = drq::get_simd_level();  // read once per call
        run_interruptible([&](const drq::InterruptCallback& interrupt) {
            std::shared_lock<std::shared_mutex> lock(s.mutex);
            drq::search(s.store, params, d_out, l_out, interrupt, nthreads, level);
        });
    }
    return py::make_tuple(distances, labels);
}

py::tuple range_search_impl(const PyCodeStore& s, const py::object& tables_obj,
                            const py::object& qnorms_obj, const py::object& scales_obj,
                            int64_t iters, double radius, int64_t metric,
                            const py::object& allowed_obj) {
    SearchInputs in =
        parse_search_inputs(s, tables_obj, qnorms_obj, scales_obj, iters, 1, metric, allowed_obj);
    const size_t nq = in.params.nq;
    std::vector<uint64_t> lims(nq + 1, 0);
    std::vector<float> distances;
    std::vector<int64_t> labels;
    {
        std::vector<std::vector<drq::Candidate>> results;
        const int nthreads = drq::get_num_threads();
        const drq::SimdLevel level = drq::get_simd_level();
        run_interruptible([&](const drq::InterruptCallback& interrupt) {
            std::shared_lock<std::shared_mutex> lock(s.mutex);
            drq::range_search(s.store, in.params, static_cast<float>(radius), results, interrupt,
                              nthreads, level);
            size_t total = 0;
            for (size_t q = 0; q < nq; ++q) {
                total += results[q].size();
                lims[q + 1] = total;
            }
            distances.reserve(total);
            labels.reserve(total);
            for (auto& r : results) {
                for (const drq::Candidate& c : r) {
                    distances.push_back(c.dist);
                    labels.push_back(c.id);
                }
                std::vector<drq::Candidate>().swap(r);
            }
        });
    }
    const auto total = static_cast<py::ssize_t>(distances.size());
    return py::make_tuple(vector_to_array(std::move(lims), {static_cast<py::ssize_t>(nq + 1)}),
                          vector_to_array(std::move(distances), {total}),
                          vector_to_array(std::move(labels), {total}));
}

// ---------------------------------------------------------------------------------------------
// InvertedLists with its lock

struct PyIVFStore {
    PyIVFStore(size_t nlist, size_t M) : lists(nlist, M) {}
    drq::InvertedLists lists;
    mutable std::shared_mutex mutex;
};

py::tuple ivf_search_impl(const PyIVFStore& s, const py::object& tables_obj,
                          const py::object& coarse_obj, const py::object& list_nos_obj,
                          const py::object& scales_obj, int64_t iters, int64_t k, int64_t metric,
                          const py::object& allowed_obj, bool reference) {
    const py::ssize_t M = static_cast<py::ssize_t>(s.lists.M());
    // (nq, K): one table shared by all iterations; (nq, T, K): one table per iteration, T >= iters.
    const bool per_iteration_tables = py::isinstance<py::array>(tables_obj) &&
                                      py::reinterpret_borrow<py::array>(tables_obj).ndim() == 3;
    py::array tables =
        per_iteration_tables
            ? require_array<float>(tables_obj, "tables", "float32",
                                   {any_dim("nq"), any_dim("T"), any_dim("K")})
            : require_array<float>(tables_obj, "tables", "float32", {any_dim("nq"), any_dim("K")});
    const py::ssize_t nq = tables.shape(0);
    if (per_iteration_tables && iters >= 1 && iters <= M && tables.shape(1) < iters) {
        throw std::invalid_argument(
            "tables: expected per-iteration tables of shape (nq, T >= iters=" + std::to_string(iters) +
            ", K), one table per searched iteration, got " + describe_array(tables));
    }
    py::array coarse = require_array<float>(coarse_obj, "coarse", "float32",
                                            {fixed_dim(nq, "nq"), any_dim("nprobe")});
    const py::ssize_t nprobe = coarse.shape(1);
    py::array list_nos = require_array<int64_t>(list_nos_obj, "list_nos", "int64",
                                                {fixed_dim(nq, "nq"), fixed_dim(nprobe, "nprobe")});
    py::array scales = require_array<float>(scales_obj, "scales", "float32", {fixed_dim(M, "M")});
    if (metric != 0 && metric != 1) {
        throw std::invalid_argument("metric must be 0 (L2) or 1 (inner product), got " +
                                    std::to_string(metric));
    }
    drq::IVFSearchParams params;
    params.tables = data_of<float>(tables);
    params.nq = static_cast<size_t>(nq);
    params.K = static_cast<size_t>(tables.shape(per_iteration_tables ? 2 : 1));
    params.tables_per_query = per_iteration_tables ? static_cast<size_t>(tables.shape(1)) : 1;
    params.coarse = data_of<float>(coarse);
    params.list_nos = data_of<int64_t>(list_nos);
    params.nprobe = to_size(nprobe, "nprobe", 1);
    params.scales = data_of<float>(scales);
    params.iters = to_size(iters, "iters", 1);
    params.k = to_size(k, "k", 1);
    params.metric = metric == 0 ? drq::Metric::L2 : drq::Metric::InnerProduct;
    py::array allowed;
    if (!allowed_obj.is_none()) {
        allowed = require_array<bool, uint8_t>(allowed_obj, "allowed", "bool or uint8",
                                               {any_dim("ntotal")});
        params.allowed = data_of<uint8_t>(allowed);
        params.allowed_size = static_cast<size_t>(allowed.shape(0));
    }
    py::array_t<float> distances({nq, static_cast<py::ssize_t>(params.k)});
    py::array_t<int64_t> labels({nq, static_cast<py::ssize_t>(params.k)});
    float* d_out = distances.mutable_data();
    int64_t* l_out = labels.mutable_data();
    if (reference) {
        py::gil_scoped_release release;
        std::shared_lock<std::shared_mutex> lock(s.mutex);
        drq::ivf_search_reference(s.lists, params, d_out, l_out);
    } else {
        const int nthreads = drq::get_num_threads();
        const drq::SimdLevel level = drq::get_simd_level();
        run_interruptible([&](const drq::InterruptCallback& interrupt) {
            std::shared_lock<std::shared_mutex> lock(s.mutex);
            drq::ivf_search(s.lists, params, d_out, l_out, interrupt, nthreads, level);
        });
    }
    return py::make_tuple(distances, labels);
}


// ---------------------------------------------------------------------------------------------
// Hash encoder and Hamming search

// A TernaryNet from the Python layer's checked arrays: layers is a list of dicts, each with
// "kind" ("ternary" | "float"), "scale", "shift", "relu", and "pos", "neg" (bool/uint8
// (d_out, d_in)), "w_pos", "w_neg" for ternary or "weight" (float32 (d_out, d_in)) for float.
std::unique_ptr<drq::TernaryNet> make_ternary_net(const py::object& in_scale_obj,
                                                  const py::object& in_shift_obj,
                                                  const py::list& layers) {
    py::array in_scale = require_array<float>(in_scale_obj, "in_scale", "float32", {any_dim("d_in")});
    const py::ssize_t d_in = in_scale.shape(0);
    py::array in_shift = require_array<float>(in_shift_obj, "in_shift", "float32", {fixed_dim(d_in, "d_in")});
    std::vector<py::array> keep;  // keeps converted arrays alive until the net has copied them
    std::vector<drq::TernaryLayerSpec> specs;
    py::ssize_t width = d_in;
    for (size_t li = 0; li < layers.size(); ++li) {
        const py::dict layer = layers[li].cast<py::dict>();
        const std::string kind = layer["kind"].cast<std::string>();
        drq::TernaryLayerSpec spec;
        spec.d_in = static_cast<size_t>(width);
        py::ssize_t d_out = 0;
        if (kind == "ternary") {
            py::array pos = require_array<bool, uint8_t>(layer["pos"], "pos", "bool or uint8",
                                                         {any_dim("d_out"), fixed_dim(width, "d_in")});
            d_out = pos.shape(0);
            py::array neg = require_array<bool, uint8_t>(layer["neg"], "neg", "bool or uint8",
                                                         {fixed_dim(d_out, "d_out"), fixed_dim(width, "d_in")});
            spec.ternary = true;
            spec.pos = data_of<uint8_t>(pos);
            spec.neg = data_of<uint8_t>(neg);
            spec.w_pos = layer["w_pos"].cast<float>();
            spec.w_neg = layer["w_neg"].cast<float>();
            keep.push_back(pos);
            keep.push_back(neg);
        } else if (kind == "float") {
            py::array weight = require_array<float>(layer["weight"], "weight", "float32",
                                                    {any_dim("d_out"), fixed_dim(width, "d_in")});
            d_out = weight.shape(0);
            spec.ternary = false;
            spec.weight = data_of<float>(weight);
            keep.push_back(weight);
        } else {
            throw std::invalid_argument("layer " + std::to_string(li) + ": kind must be 'ternary' or 'float', got '" +
                                        kind + "'");
        }
        py::array scale = require_array<float>(layer["scale"], "scale", "float32", {fixed_dim(d_out, "d_out")});
        py::array shift = require_array<float>(layer["shift"], "shift", "float32", {fixed_dim(d_out, "d_out")});
        keep.push_back(scale);
        keep.push_back(shift);
        spec.d_out = static_cast<size_t>(d_out);
        spec.scale = data_of<float>(scale);
        spec.shift = data_of<float>(shift);
        spec.relu = layer["relu"].cast<bool>();
        specs.push_back(spec);
        width = d_out;
    }
    return std::make_unique<drq::TernaryNet>(static_cast<size_t>(d_in), data_of<float>(in_scale),
                                             data_of<float>(in_shift), specs);
}

py::array_t<float> ternary_forward(const drq::TernaryNet& net, const py::object& x_obj) {
    const py::ssize_t d_in = static_cast<py::ssize_t>(net.d_in());
    const bool is_uint8 = py::isinstance<py::array>(x_obj) &&
                          has_dtype<uint8_t>(py::reinterpret_borrow<py::array>(x_obj));
    py::array x = is_uint8 ? require_array<uint8_t>(x_obj, "x", "uint8", {any_dim("n"), fixed_dim(d_in, "d_in")})
                           : require_array<float>(x_obj, "x", "float32 or uint8",
                                                  {any_dim("n"), fixed_dim(d_in, "d_in")});
    const py::ssize_t n = x.shape(0);
    py::array_t<float> out({n, static_cast<py::ssize_t>(net.d_out())});
    float* out_data = out.mutable_data();
    const int nthreads = drq::get_num_threads();
    const drq::SimdLevel level = drq::get_simd_level();
    run_interruptible([&](const drq::InterruptCallback& interrupt) {
        if (is_uint8) {
            net.forward(data_of<uint8_t>(x), static_cast<size_t>(n), out_data, interrupt, nthreads, level);
        } else {
            net.forward(data_of<float>(x), static_cast<size_t>(n), out_data, interrupt, nthreads, level);
        }
    });
    return out;
}

py::tuple hamming_search_impl(const py::object& codes_obj, const py::object& ids_obj,
                              const py::object& queries_obj, int64_t nbits, int64_t k, bool reference) {
    py::array codes = require_array<uint64_t>(codes_obj, "codes", "uint64", {any_dim("n"), any_dim("W")});
    const py::ssize_t W = codes.shape(1);
    py::array queries = require_array<uint64_t>(queries_obj, "queries", "uint64", {any_dim("nq"), fixed_dim(W, "W")});
    py::array ids;
    drq::HammingSearchParams p;
    p.codes = data_of<uint64_t>(codes);
    p.n = static_cast<size_t>(codes.shape(0));
    p.W = static_cast<size_t>(W);
    if (!ids_obj.is_none()) {
        ids = require_array<int64_t>(ids_obj, "ids", "int64", {fixed_dim(codes.shape(0), "n")});
        p.ids = data_of<int64_t>(ids);
    }
    p.queries = data_of<uint64_t>(queries);
    p.nq = static_cast<size_t>(queries.shape(0));
    p.nbits = to_size(nbits, "nbits", 1);
    p.k = to_size(k, "k", 1);
    drq::validate_hamming_search(p);
    const py::ssize_t nq = queries.shape(0);
    py::array_t<int32_t> distances({nq, static_cast<py::ssize_t>(p.k)});
    py::array_t<int64_t> labels({nq, static_cast<py::ssize_t>(p.k)});
    int32_t* d_out = distances.mutable_data();
    int64_t* l_out = labels.mutable_data();
    if (reference) {
        py::gil_scoped_release release;
        drq::hamming_search_reference(p, d_out, l_out);
    } else {
        const int nthreads = drq::get_num_threads();
        const drq::SimdLevel level = drq::get_simd_level();
        run_interruptible([&](const drq::InterruptCallback& interrupt) {
            drq::hamming_search(p, d_out, l_out, interrupt, nthreads, level);
        });
    }
    return py::make_tuple(distances, labels);
}

// ---------------------------------------------------------------------------------------------
// FastScanStore (4-bit fast scan) with its lock

struct PyFastScanStore {
    PyFastScanStore(size_t M, size_t nnorm) : store(M, nnorm) {}
    drq::FastScanStore store;
    mutable std::shared_mutex mutex;
};

size_t resolve_fs_range(size_t ntotal, int64_t start, std::optional<int64_t> n, const char* what) {
    if (start < 0 || static_cast<uint64_t>(start) > ntotal) {
        throw std::out_of_range(std::string(what) + ": start=" + std::to_string(start) +
                                " is outside [0, ntotal=" + std::to_string(ntotal) + "]");
    }
    const size_t available = ntotal - static_cast<size_t>(start);
    if (!n) return available;
    if (*n < 0 || static_cast<uint64_t>(*n) > available) {
        throw std::out_of_range(std::string(what) + ": n=" + std::to_string(*n) +
                                " vectors from start=" + std::to_string(start) +
                                " do not fit in ntotal=" + std::to_string(ntotal));
    }
    return static_cast<size_t>(*n);
}

// Rows [start, start + n) of one per-vector uint8 array of the store (`width` bytes per vector),
// copied under the read lock without the GIL: get(start, count, out) fills count * width bytes.
template <class Get>
py::array fastscan_rows(const PyFastScanStore& s, int64_t start, std::optional<int64_t> n, size_t width,
                        const char* what, Get get) {
    std::vector<uint8_t> out;
    size_t count = 0;
    {
        py::gil_scoped_release release;
        std::shared_lock<std::shared_mutex> lock(s.mutex);
        count = resolve_fs_range(s.store.ntotal(), start, n, what);
        out.resize(count * width);
        get(static_cast<size_t>(start), count, out.data());
    }
    return vector_to_array(std::move(out), {static_cast<py::ssize_t>(count), static_cast<py::ssize_t>(width)});
}

void bind_fastscan(py::module_& m) {
    py::class_<PyFastScanStore>(m, "FastScanStore",
                                "4-bit codes (two per byte) in blocks of 32 vectors, quantised "
                                "per-prefix norm bytes and int64 ids.")
        .def(py::init([](int64_t M, int64_t nnorm) {
                 return std::make_unique<PyFastScanStore>(to_size(M, "M", 1), to_size(nnorm, "nnorm", 0));
             }),
             py::arg("M"), py::arg("nnorm"))
        .def_property_readonly("M", [](const PyFastScanStore& s) { return s.store.M(); })
        .def_property_readonly("nnorm", [](const PyFastScanStore& s) { return s.store.nnorm(); })
        .def_property_readonly("ntotal",
                               [](const PyFastScanStore& s) {
                                   py::gil_scoped_release release;
                                   std::shared_lock<std::shared_mutex> lock(s.mutex);
                                   return s.store.ntotal();
                               })
        .def("memory_usage",
             [](const PyFastScanStore& s) {
                 py::gil_scoped_release release;
                 std::shared_lock<std::shared_mutex> lock(s.mutex);
                 return s.store.memory_usage();
             })
        .def(
            "add",
            [](PyFastScanStore& s, const py::object& codes_obj, const py::object& norms_obj,
               const py::object& ids_obj) {
                const auto M = static_cast<py::ssize_t>(s.store.M());
                const auto nn = static_cast<py::ssize_t>(s.store.nnorm());
                py::array codes = require_array<uint8_t>(codes_obj, "codes", "uint8",
                                                         {any_dim("n"), fixed_dim(M, "M")});
                const py::ssize_t n = codes.shape(0);
                py::array norms = require_array<uint8_t>(norms_obj, "norm_codes", "uint8",
                                                         {fixed_dim(n, "n"), fixed_dim(nn, "nnorm")});
                py::array ids = require_array<int64_t>(ids_obj, "ids", "int64", {fixed_dim(n, "n")});
                py::gil_scoped_release release;
                std::unique_lock<std::shared_mutex> lock(s.mutex);
                s.store.add(static_cast<size_t>(n), data_of<uint8_t>(codes), data_of<uint8_t>(norms),
                            data_of<int64_t>(ids));
            },
            py::arg("codes"), py::arg("norm_codes"), py::arg("ids"),
            "Appends codes uint8 (n, M) values 0..15, norm_codes uint8 (n, nnorm), ids int64 (n,).")
        .def(
            "get_codes",
            [](const PyFastScanStore& s, int64_t start, std::optional<int64_t> n) {
                return fastscan_rows(s, start, n, s.store.M(), "get_codes",
                                     [&](size_t i0, size_t count, uint8_t* out) { s.store.get_codes(i0, count, out); });
            },
            py::arg("start") = 0, py::arg("n") = py::none(), "Unpacked codes uint8 (n, M).")
        .def(
            "get_norm_codes",
            [](const PyFastScanStore& s, int64_t start, std::optional<int64_t> n) {
                return fastscan_rows(s, start, n, s.store.nnorm(), "get_norm_codes", [&](size_t i0, size_t count, uint8_t* out) {
                    s.store.get_norm_codes(i0, count, out);
                });
            },
            py::arg("start") = 0, py::arg("n") = py::none(), "Norm codes uint8 (n, nnorm).")
        .def("get_ids",
             [](const PyFastScanStore& s) {
                 std::vector<int64_t> out;
                 {
                     py::gil_scoped_release release;
                     std::shared_lock<std::shared_mutex> lock(s.mutex);
                     out.assign(s.store.ids(), s.store.ids() + s.store.ntotal());
                 }
                 const auto n = static_cast<py::ssize_t>(out.size());
                 return vector_to_array(std::move(out), {n});
             })
        .def("remove",
             [](PyFastScanStore& s, const py::object& mask_obj) {
                 return remove_by_mask(s.mutex, s.store, mask_obj);
             },
             py::arg("mask"))
        .def("reset", [](PyFastScanStore& s) {
            py::gil_scoped_release release;
            std::unique_lock<std::shared_mutex> lock(s.mutex);
            s.store.reset();
        });

    m.def(
        "fastscan_search",
        [](const PyFastScanStore& s, const py::object& tables_obj, const py::object& bias_obj,
           double sign, int64_t iters, int64_t norm_slot, int64_t k, int64_t rerank,
           const py::object& allowed_obj, std::optional<std::string> level_name, double norm_step,
           const py::object& queries_obj, const py::object& codebooks_obj) {
            drq::FastScanSearchParams p;
            p.iters = to_size(iters, "iters", 1);
            py::array tables, queries, codebooks;
            py::ssize_t nq = 0;
            if (!tables_obj.is_none()) {
                if (!queries_obj.is_none() || !codebooks_obj.is_none()) {
                    throw std::invalid_argument("fastscan_search: give either tables or queries and codebooks, not both");
                }
                tables = require_array<float>(tables_obj, "tables", "float32",
                                              {any_dim("nq"), any_dim("T"), fixed_dim(16)});
                nq = tables.shape(0);
                p.tables = data_of<float>(tables);
                p.ntables = static_cast<size_t>(tables.shape(1));
            } else {
                if (queries_obj.is_none() || codebooks_obj.is_none()) {
                    throw std::invalid_argument("fastscan_search: tables is None, so queries and codebooks are required");
                }
                queries = require_array<float>(queries_obj, "queries", "float32", {any_dim("nq"), any_dim("d")});
                nq = queries.shape(0);
                const py::ssize_t d = queries.shape(1);
                codebooks = require_array<float>(codebooks_obj, "codebooks", "float32",
                                                 {any_dim("M"), fixed_dim(d, "d"), fixed_dim(16)});
                if (d == 0) throw std::invalid_argument("queries: expected d >= 1, got 0");
                p.queries = data_of<float>(queries);
                p.d = static_cast<size_t>(d);
                p.codebooks_t = data_of<float>(codebooks);
                p.codebook_iters = static_cast<size_t>(codebooks.shape(0));
                p.ntables = 2 * ((p.iters + 1) / 2);
            }
            py::array bias = require_array<float>(bias_obj, "bias", "float32", {fixed_dim(nq, "nq")});
            p.nq = static_cast<size_t>(nq);
            p.norm_slot = static_cast<long>(norm_slot);
            p.norm_step = static_cast<float>(norm_step);
            p.bias = data_of<float>(bias);
            p.sign = sign >= 0 ? 1.0f : -1.0f;
            p.k = to_size(k, "k", 1);
            p.rerank = to_size(rerank, "rerank", 0);
            py::array allowed;
            if (!allowed_obj.is_none()) {
                allowed = require_array<bool, uint8_t>(allowed_obj, "allowed", "bool or uint8",
                                                       {any_dim("ntotal")});
                p.allowed = data_of<uint8_t>(allowed);
                p.allowed_size = static_cast<size_t>(allowed.shape(0));
            }
            const drq::SimdLevel level = requested_simd_level(level_name);
            py::array_t<float> distances({nq, static_cast<py::ssize_t>(p.k)});
            py::array_t<int64_t> labels({nq, static_cast<py::ssize_t>(p.k)});
            float* d_out = distances.mutable_data();
            int64_t* l_out = labels.mutable_data();
            const int nthreads = drq::get_num_threads();
            run_interruptible([&](const drq::InterruptCallback& interrupt) {
                std::shared_lock<std::shared_mutex> lock(s.mutex);
                drq::fastscan_search(s.store, p, d_out, l_out, interrupt, nthreads,
                                     drq::fastscan_scan_for(level), drq::fastscan_filter_for(level),
                                     drq::fastscan_tables_for(level));
            });
            return py::make_tuple(distances, labels);
        },
        py::arg("store"), py::arg("tables"), py::arg("bias"), py::arg("sign"), py::arg("iters"),
        py::arg("norm_slot"), py::arg("k"), py::arg("rerank") = 0, py::arg("allowed") = py::none(),
        py::arg("level") = py::none(), py::arg("norm_step") = 0.0, py::arg("queries") = py::none(),
        py::arg("codebooks") = py::none(),
        "fastscan_search(store, tables float32 (nq, T, 16) or None, bias float32 (nq,), sign, iters,\n"
        "norm_slot, k, rerank=0, allowed=None, level=None, norm_step=0.0, queries=None, codebooks=None)\n"
        "-> (D float32 (nq, k), I int64 (nq, k)).\n"
        "tables in kernel order (see csrc/drq/fastscan_search.h); D = sign * (bias + sum [+ norm level * norm_step]).\n"
        "tables=None: computed inside the search from queries float32 (nq, d) and codebooks float32 (M, d, 16)\n"
        "(iteration j's codebook transposed, metric factor folded in; csrc/drq/fastscan_tables.h).\n"
        "level: force a SIMD level ('scalar'|'avx2'|'avx512'; tests). GIL released, Ctrl-C honoured.");

    m.def(
        "fastscan_tables",
        [](const std::string& level_name, const py::object& queries_obj, const py::object& codebooks_obj,
           int64_t iters) {
            const drq::SimdLevel level = drq::parse_simd_level(level_name);
            if (!drq::simd_level_supported(level)) {
                throw std::invalid_argument("SIMD level " + level_name + " is not supported here");
            }
            py::array queries = require_array<float>(queries_obj, "queries", "float32", {any_dim("nq"), any_dim("d")});
            const py::ssize_t nq = queries.shape(0), d = queries.shape(1);
            py::array codebooks = require_array<float>(codebooks_obj, "codebooks", "float32",
                                                       {any_dim("M"), fixed_dim(d, "d"), fixed_dim(16)});
            const size_t m = to_size(iters, "iters", 0);
            if (m > static_cast<size_t>(codebooks.shape(0))) {
                throw std::invalid_argument("iters=" + std::to_string(m) + " exceeds the " +
                                            std::to_string(codebooks.shape(0)) + " iterations of codebooks");
            }
            py::array_t<float> tables({nq, static_cast<py::ssize_t>(m), py::ssize_t(16)});
            float* out = tables.mutable_data();
            const float* x = data_of<float>(queries);
            const float* cb = data_of<float>(codebooks);
            {
                py::gil_scoped_release release;
                drq::fastscan_tables_for(level)(x, static_cast<size_t>(nq), static_cast<size_t>(d), cb, m, out, m * 16);
            }
            return tables;
        },
        py::arg("level"), py::arg("queries"), py::arg("codebooks"), py::arg("iters"),
        "fastscan_tables(level, queries float32 (nq, d), codebooks float32 (M, d, 16), iters) -> float32 (nq, iters, 16):\n"
        "the float code tables of csrc/drq/fastscan_tables.h with the kernel of a SIMD level (tests).");

    m.def(
        "fastscan_scan",
        [](const std::string& level_name, const py::object& codes_obj, int64_t nbytes,
           const py::object& extra_obj, const py::object& luts_obj, const py::object& factors_obj,
           const py::object& shifts_obj) {
            const drq::SimdLevel level = drq::parse_simd_level(level_name);
            if (!drq::simd_level_supported(level)) {
                throw std::invalid_argument("SIMD level " + level_name + " is not supported here");
            }
            py::array codes = require_array<uint8_t>(codes_obj, "codes", "uint8",
                                                     {any_dim("nblocks"), any_dim("block_stride")});
            const size_t nblocks = static_cast<size_t>(codes.shape(0));
            const size_t stride = static_cast<size_t>(codes.shape(1));
            const size_t nb = to_size(nbytes, "nbytes", 0);
            if (nb * 32 > stride) throw std::invalid_argument("nbytes * 32 exceeds the block stride");
            py::array extra;
            const uint8_t* extra_ptr = nullptr;
            size_t extra_stride = 0;
            if (!extra_obj.is_none()) {
                extra = require_array<uint8_t>(extra_obj, "extra", "uint8",
                                               {fixed_dim(codes.shape(0), "nblocks"), fixed_dim(32)});
                extra_ptr = data_of<uint8_t>(extra);
                extra_stride = 32;
            }
            const py::ssize_t ntables = static_cast<py::ssize_t>(2 * nb);
            py::array luts = require_array<uint8_t>(luts_obj, "luts", "uint8",
                                                    {any_dim("nq"), fixed_dim(ntables, "ntables"), fixed_dim(16)});
            const size_t nq = static_cast<size_t>(luts.shape(0));
            if (nq < 1 || nq > drq::kFastScanMaxQueries) {
                throw std::invalid_argument("luts: 1.." + std::to_string(drq::kFastScanMaxQueries) +
                                            " queries per kernel call, got " + std::to_string(nq));
            }
            std::vector<uint16_t> factors(nq, 0);
            if (!factors_obj.is_none()) {
                py::array f = require_array<uint16_t>(factors_obj, "extra_factors", "uint16",
                                                      {fixed_dim(luts.shape(0), "nq")});
                std::copy(data_of<uint16_t>(f), data_of<uint16_t>(f) + nq, factors.begin());
            }
            std::vector<uint8_t> shifts;
            if (!shifts_obj.is_none()) {
                py::array sh = require_array<uint8_t>(shifts_obj, "shifts", "uint8",
                                                      {fixed_dim(luts.shape(0), "nq"), fixed_dim(static_cast<py::ssize_t>(nb), "nbytes")});
                shifts.assign(data_of<uint8_t>(sh), data_of<uint8_t>(sh) + nq * nb);
                for (uint8_t v : shifts) {
                    if (v > 15) throw std::invalid_argument("shifts: expected values 0..15, got " + std::to_string(v));
                }
            }
            py::array_t<uint16_t> acc({static_cast<py::ssize_t>(nq), static_cast<py::ssize_t>(nblocks * 32)});
            uint16_t* acc_out = acc.mutable_data();
            py::gil_scoped_release release;
            drq::fastscan_scan_for(level)(data_of<uint8_t>(codes), nblocks, stride, nb, extra_ptr,
                                          extra_stride, factors.data(),
                                          shifts.empty() ? nullptr : shifts.data(), data_of<uint8_t>(luts),
                                          static_cast<size_t>(ntables) * 16, nq, acc_out, nblocks * 32);
            return acc;
        },
        py::arg("level"), py::arg("codes"), py::arg("nbytes"), py::arg("extra"), py::arg("luts"),
        py::arg("extra_factors") = py::none(), py::arg("shifts") = py::none(),
        "One fast-scan kernel call (tests): codes uint8 (nblocks, block_stride) blocked as in\n"
        "fastscan_codes.h, extra None or uint8 (nblocks, 32), luts uint8 (nq, 2 nbytes, 16) with\n"
        "1 <= nq <= 4 queries, extra_factors None (zeros) or uint16 (nq,), shifts None or uint8 (nq, nbytes)\n"
        "-> acc uint16 (nq, nblocks * 32).");
    m.def(
        "fastscan_filter",
        [](const std::string& level_name, const py::object& acc_obj, int64_t threshold) {
            const drq::SimdLevel level = drq::parse_simd_level(level_name);
            if (!drq::simd_level_supported(level)) {
                throw std::invalid_argument("SIMD level " + level_name + " is not supported here");
            }
            py::array acc = require_array<uint16_t>(acc_obj, "acc", "uint16", {any_dim("nblocks"), fixed_dim(32)});
            if (threshold < 0 || threshold > 65535) throw std::invalid_argument("threshold must be in 0..65535");
            py::array_t<uint32_t> masks({acc.shape(0)});
            uint32_t* out = masks.mutable_data();
            py::gil_scoped_release release;
            drq::fastscan_filter_for(level)(data_of<uint16_t>(acc), static_cast<size_t>(acc.shape(0)),
                                            static_cast<uint16_t>(threshold), out);
            return masks;
        },
        py::arg("level"), py::arg("acc"), py::arg("threshold"),
        "Candidate masks (tests): acc uint16 (nblocks, 32) -> uint32 (nblocks,), bit i = acc[b, i] <= threshold.");
}

}  // namespace


PYBIND11_MODULE(_core, m) {
    m.doc() =
        "drqindex C++ core: sequential (DRQ) code storage, greedy encoding and ADC search.\n"
        "Inputs must have the exact dtype and be C-contiguous; nothing is converted.";

    py::register_exception_translator([](std::exception_ptr error) {
        try {
            if (error) std::rethrow_exception(error);
        } catch (const drq::Interrupted& e) {
            PyErr_SetString(PyExc_KeyboardInterrupt, e.what());
        }
    });

    m.attr("BLOCK_SIZE") = drq::kBlockSize;

    // --- SIMD level and threads --------------------------------------------------------------
    m.def(
        "simd_level", [] { return std::string(drq::simd_level_name(drq::get_simd_level())); },
        "The SIMD level the kernels use now: 'scalar', 'avx2' or 'avx512'.");
    m.def(
        "supported_simd_levels",
        [] {
            std::vector<std::string> names;
            for (drq::SimdLevel level : drq::supported_simd_levels()) {
                names.emplace_back(drq::simd_level_name(level));
            }
            return names;
        },
        "The levels this CPU can run, narrowest first (always starts with 'scalar').");
    m.def(
        "set_simd_level",
        [](const std::string& name) { drq::set_simd_level(drq::parse_simd_level(name)); },
        py::arg("name"),
        "Forces a SIMD level ('scalar', 'avx2', 'avx512'). ValueError if this CPU cannot run it.\n"
        "The environment variable DRQ_SIMD_LEVEL sets the initial level (read once at load).");
    m.def("get_num_threads", &drq::get_num_threads,
          "Threads used by encode_greedy and search (default: the number of CPUs).");
    m.def("set_num_threads", &drq::set_num_threads, py::arg("n"),
          "Sets the threads used by encode_greedy and search (n >= 1).");

    // --- encoding ----------------------------------------------------------------------------
    m.def(
        "encode_greedy",
        [](const py::object& xc_obj, const py::object& gram_obj, const py::object& scales_obj) {
            py::array xc = require_array<float>(xc_obj, "xc", "float32", {any_dim("n"), any_dim("K")});
            const py::ssize_t n = xc.shape(0);
            const py::ssize_t K = xc.shape(1);
            if (K < 1 || K > 256) {
                throw std::invalid_argument("xc: K (second dimension) must be in [1, 256], got " +
                                            std::to_string(K));
            }
            py::array gram = require_array<float>(gram_obj, "gram", "float32",
                                                  {fixed_dim(K, "K"), fixed_dim(K, "K")});
            py::array scales = require_array<float>(scales_obj, "scales", "float32", {any_dim("M")});
            const py::ssize_t M = scales.shape(0);
            if (M < 1) throw std::invalid_argument("scales: M must be >= 1, got an empty array");

            py::array_t<uint8_t> codes({n, M});
            py::array_t<float> norms({n, M});
            uint8_t* codes_out = codes.mutable_data();
            float* norms_out = norms.mutable_data();
            const int nthreads = drq::get_num_threads();
            run_interruptible([&](const drq::InterruptCallback& interrupt) {
                drq::encode_greedy(static_cast<size_t>(n), static_cast<size_t>(K),
                                   static_cast<size_t>(M), data_of<float>(xc), data_of<float>(gram),
                                   data_of<float>(scales), codes_out, norms_out, interrupt, nthreads);
            });
            return py::make_tuple(codes, norms);
        },
        py::arg("xc"), py::arg("gram"), py::arg("scales"),
        "Greedy DRQ encoding from xc = x @ C.T (float32 (n, K)), gram = C @ C.T (float32 (K, K))\n"
        "and scales (float32 (M,)). Returns (codes uint8 (n, M), norms float32 (n, M)) with\n"
        "norms[i, m-1] = ||xhat_m(i)||^2. Multi-threaded, GIL released, Ctrl-C honoured.");

    m.def(
        "encode_per_iteration",
        [](const py::object& x_obj, const py::object& codebooks_obj, const py::object& scales_obj,
           const py::object& sq_norms_obj, const std::optional<std::string>& level_name) {
            py::array codebooks = require_array<float>(codebooks_obj, "codebooks", "float32",
                                                       {any_dim("M"), any_dim("K"), any_dim("d")});
            const py::ssize_t M = codebooks.shape(0), K = codebooks.shape(1), d = codebooks.shape(2);
            if (M < 1 || K < 1 || K > 256 || d < 1) {
                throw std::invalid_argument("codebooks: expected shape (M, K, d) with M >= 1, K in [1, 256], "
                                            "d >= 1, got " + describe_array(codebooks));
            }
            py::array x = require_array<float>(x_obj, "x", "float32", {any_dim("n"), fixed_dim(d, "d")});
            py::array scales = require_array<float>(scales_obj, "scales", "float32", {fixed_dim(M, "M")});
            py::array sq_norms = require_array<float>(sq_norms_obj, "sq_norms", "float32",
                                                      {fixed_dim(M, "M"), fixed_dim(K, "K")});
            const drq::SimdLevel level = requested_simd_level(level_name);
            const py::ssize_t n = x.shape(0);
            py::array_t<uint8_t> codes({n, M});
            py::array_t<float> norms({n, M});
            uint8_t* codes_out = codes.mutable_data();
            float* norms_out = norms.mutable_data();
            const int nthreads = drq::get_num_threads();
            run_interruptible([&](const drq::InterruptCallback& interrupt) {
                drq::encode_per_iteration(static_cast<size_t>(n), static_cast<size_t>(d), static_cast<size_t>(K),
                                          static_cast<size_t>(M), data_of<float>(x), data_of<float>(codebooks),
                                          data_of<float>(scales), data_of<float>(sq_norms), codes_out,
                                          norms_out, interrupt, nthreads, level);
            });
            return py::make_tuple(codes, norms);
        },
        py::arg("x"), py::arg("codebooks"), py::arg("scales"), py::arg("sq_norms"),
        py::arg("level") = py::none(),
        "Greedy encoding with one codebook per iteration (csrc/drq/encode_per_iteration.h): x float32\n"
        "(n, d), codebooks float32 (M, K, d), scales float32 (M,), sq_norms float32 (M, K) =\n"
        "||s_m C_m[k]||^2. Returns (codes uint8 (n, M), norms float32 (n, M)) with norms[i, m-1] =\n"
        "||xhat_m(i)||^2 summed in float64. level: force a SIMD level ('scalar'|'avx2'|'avx512'; tests).\n"
        "Multi-threaded, GIL released, Ctrl-C honoured.");

    m.def(
        "inner_products",
        [](const py::object& rows_obj, const py::object& columns_obj, const py::object& out_obj,
           const std::optional<std::string>& level_name) {
            const auto as_float_array = [](const py::object& obj, const char* arg) {
                if (!py::isinstance<py::array>(obj) ||
                    !has_dtype<float>(py::reinterpret_borrow<py::array>(obj))) {
                    throw py::type_error(std::string(arg) + ": expected a numpy float32 2-D array, got " +
                                         (py::isinstance<py::array>(obj)
                                              ? describe_array(py::reinterpret_borrow<py::array>(obj))
                                              : std::string(py::str(py::type::of(obj).attr("__name__")))));
                }
                return py::reinterpret_borrow<py::array>(obj);
            };
            py::array columns = as_float_array(columns_obj, "columns");
            // (P, d, 16) C-contiguous: columns packed in panels (csrc/drq/inner_products.h).
            const bool packed = columns.ndim() == 3;
            constexpr py::ssize_t kPanel = static_cast<py::ssize_t>(drq::kInnerProductsPanel);
            if (packed && (columns.shape(2) != kPanel || !(columns.flags() & py::array::c_style) ||
                           !(columns.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))) {
                throw std::invalid_argument("columns: expected (d, K) or packed panels (P, d, 16) C-contiguous, got " +
                                            describe_array(columns));
            }
            const size_t column_stride = packed ? 0 : require_float_rows(columns, "columns");
            const py::ssize_t d = columns.shape(packed ? 1 : 0);
            const py::ssize_t K = packed ? columns.shape(0) * kPanel : columns.shape(1);
            if (K < 1 || d < 1) {
                throw std::invalid_argument("columns: expected shape (d, K) with d >= 1, K >= 1, got " +
                                            describe_array(columns));
            }
            py::array rows = as_float_array(rows_obj, "rows");
            const size_t row_stride = require_float_rows(rows, "rows");
            if (rows.shape(1) != d) {
                throw std::invalid_argument("rows: expected shape (n, " + std::to_string(d) +
                                            ") (d = columns.shape[0]), got " + describe_array(rows));
            }
            const drq::SimdLevel level = requested_simd_level(level_name);
            const py::ssize_t n = rows.shape(0);
            py::array out;
            size_t out_stride = static_cast<size_t>(K);
            if (out_obj.is_none()) {
                out = py::array_t<float>({n, K});
            } else {
                out = as_float_array(out_obj, "out");
                out_stride = require_float_rows(out, "out");
                if (out.shape(0) != n || out.shape(1) != K) {
                    throw std::invalid_argument("out: expected shape (" + std::to_string(n) + ", " + std::to_string(K) +
                                                ") (rows.shape[0], columns.shape[1]), got " + describe_array(out));
                }
                if (!out.writeable()) throw std::invalid_argument("out: expected a writeable array");
                if (ranges_overlap(out, rows) || ranges_overlap(out, columns)) {
                    throw std::invalid_argument("out: must not share memory with rows or columns");
                }
            }
            float* out_data = static_cast<float*>(out.mutable_data());
            const int nthreads = drq::get_num_threads();
            run_interruptible([&](const drq::InterruptCallback& interrupt) {
                if (packed) {
                    drq::inner_products_packed(data_of<float>(rows), static_cast<size_t>(n), row_stride,
                                               data_of<float>(columns), static_cast<size_t>(columns.shape(0)),
                                               static_cast<size_t>(d), out_data, out_stride, interrupt, nthreads,
                                               level);
                } else {
                    drq::inner_products(data_of<float>(rows), static_cast<size_t>(n), row_stride,
                                        data_of<float>(columns), static_cast<size_t>(K), column_stride,
                                        static_cast<size_t>(d), out_data, out_stride, interrupt, nthreads, level);
                }
            });
            return out;
        },
        py::arg("rows"), py::arg("columns"), py::arg("out") = py::none(), py::arg("level") = py::none(),
        "out = rows @ columns (csrc/drq/inner_products.h): rows float32 (n, d), columns float32 (d, K)\n"
        "(e.g. codewords transposed), or the same packed in panels, float32 (P, d, 16) C-contiguous with\n"
        "panels[p, t, c] = columns[t, 16 p + c] and K = 16 P (packed once by a caller that reuses them);\n"
        "out float32 (n, K); each row of rows and of columns contiguous,\n"
        "the rows may be apart (column slices such as z[:, 1:129] need no copy). out: None, or a float32\n"
        "(n, K) array (rows contiguous, may be apart) written in place and returned. One fixed summation\n"
        "order (bit-identical at every SIMD level and thread count), on the core's threads (no BLAS\n"
        "thread pool). level: force a SIMD level ('scalar'|'avx2'|'avx512'; tests). GIL released.");

    // --- CodeStore ---------------------------------------------------------------------------
    py::class_<PyCodeStore>(m, "CodeStore",
                            "Sequential codes in a blocked layout, per-prefix norms and int64 ids.")
        .def(py::init([](int64_t M) { return std::make_unique<PyCodeStore>(to_size(M, "M", 1)); }),
             py::arg("M"))
        .def_property_readonly("M", [](const PyCodeStore& s) { return s.store.M(); })
        .def_property_readonly("ntotal",
                               [](const PyCodeStore& s) {
                                   py::gil_scoped_release release;
                                   std::shared_lock<std::shared_mutex> lock(s.mutex);
                                   return s.store.ntotal();
                               })
        .def(
            "memory_usage",
            [](const PyCodeStore& s) {
                py::gil_scoped_release release;
                std::shared_lock<std::shared_mutex> lock(s.mutex);
                return s.store.memory_usage();
            },
            "Bytes held by codes (blocked, padding included), norms and ids.")
        .def(
            "add",
            [](PyCodeStore& s, const py::object& codes_obj, const py::object& norms_obj,
               const py::object& ids_obj) {
                const py::ssize_t M = static_cast<py::ssize_t>(s.store.M());
                py::array codes = require_array<uint8_t>(codes_obj, "codes", "uint8",
                                                         {any_dim("n"), fixed_dim(M, "M")});
                const py::ssize_t n = codes.shape(0);
                py::array norms = require_array<float>(norms_obj, "norms", "float32",
                                                       {fixed_dim(n, "n"), fixed_dim(M, "M")});
                py::array ids = require_array<int64_t>(ids_obj, "ids", "int64", {fixed_dim(n, "n")});
                py::gil_scoped_release release;
                std::unique_lock<std::shared_mutex> lock(s.mutex);
                s.store.add(static_cast<size_t>(n), data_of<uint8_t>(codes), data_of<float>(norms),
                            data_of<int64_t>(ids));
            },
            py::arg("codes"), py::arg("norms"), py::arg("ids"),
            "Appends codes uint8 (n, M), norms float32 (n, M), ids int64 (n,). All or nothing.")
        .def(
            "get_codes",
            [](const PyCodeStore& s, int64_t start, std::optional<int64_t> n) {
                const size_t M = s.store.M();
                std::vector<uint8_t> out;
                size_t count = 0;
                {
                    py::gil_scoped_release release;
                    std::shared_lock<std::shared_mutex> lock(s.mutex);
                    count = resolve_range(s.store, start, n, "get_codes");
                    out.resize(count * M);
                    s.store.get_codes(static_cast<size_t>(start), count, out.data());
                }
                return vector_to_array(std::move(out), {static_cast<py::ssize_t>(count),
                                                        static_cast<py::ssize_t>(M)});
            },
            py::arg("start") = 0, py::arg("n") = py::none(),
            "Codes of vectors [start, start + n) as uint8 (n, M) (n=None: to the end).")
        .def(
            "get_norms",
            [](const PyCodeStore& s, int64_t start, std::optional<int64_t> n) {
                const size_t M = s.store.M();
                std::vector<float> out;
                size_t count = 0;
                {
                    py::gil_scoped_release release;
                    std::shared_lock<std::shared_mutex> lock(s.mutex);
                    count = resolve_range(s.store, start, n, "get_norms");
                    out.resize(count * M);
                    s.store.get_norms(static_cast<size_t>(start), count, out.data());
                }
                return vector_to_array(std::move(out), {static_cast<py::ssize_t>(count),
                                                        static_cast<py::ssize_t>(M)});
            },
            py::arg("start") = 0, py::arg("n") = py::none(),
            "Per-prefix norms of vectors [start, start + n) as float32 (n, M); [:, m-1] is "
            "||xhat_m||^2.")
        .def(
            "get_ids",
            [](const PyCodeStore& s) {
                std::vector<int64_t> out;
                {
                    py::gil_scoped_release release;
                    std::shared_lock<std::shared_mutex> lock(s.mutex);
                    out.assign(s.store.ids(), s.store.ids() + s.store.ntotal());
                }
                const auto n = static_cast<py::ssize_t>(out.size());
                return vector_to_array(std::move(out), {n});
            },
            "The stored ids, int64 (ntotal,), in storage order.")
        .def(
            "remove",
            [](PyCodeStore& s, const py::object& mask_obj) {
                return remove_by_mask(s.mutex, s.store, mask_obj);
            },
            py::arg("mask"),
            "Removes the vectors where mask (bool or uint8, (ntotal,)) is nonzero, keeping the "
            "order of the rest. Returns how many were removed.")
        .def(
            "reset",
            [](PyCodeStore& s) {
                py::gil_scoped_release release;
                std::unique_lock<std::shared_mutex> lock(s.mutex);
                s.store.reset();
            },
            "Removes everything and frees the memory.")
        .def("__repr__", [](const PyCodeStore& s) {
            size_t ntotal = 0;
            {
                py::gil_scoped_release release;
                std::shared_lock<std::shared_mutex> lock(s.mutex);
                ntotal = s.store.ntotal();
            }
            return "<drqindex._core.CodeStore M=" + std::to_string(s.store.M()) +
                   " ntotal=" + std::to_string(ntotal) + ">";
        });

    // --- search ------------------------------------------------------------------------------
    const char* search_doc =
        "search(store, tables, qnorms, scales, iters, k, metric, allowed=None) -> (D float32 (nq, k), I int64 "
        "(nq, k))\n"
        "tables: float32 (nq, K), one table T = q @ C.T per query shared by all iterations, or\n"
        "float32 (nq, T, K) with T >= iters, one table per iteration. qnorms: float32 (nq,),\n"
        "||q||^2 (read for L2). scales: float32 (M,). metric: 0 = L2 (ascending), 1 = inner\n"
        "product (descending). Missing results: I = -1, D = +inf (L2) / -inf (IP).\n"
        "Equal distances rank by id, then storage order. GIL released, Ctrl-C honoured.\n"
        "allowed: optional bool/uint8 (ntotal,) filter; only positions with a nonzero entry can\n"
        "be returned (fewer than k allowed: -1 padding).";
    m.def(
        "search",
        [](const PyCodeStore& s, const py::object& tables, const py::object& qnorms,
           const py::object& scales, int64_t iters, int64_t k, int64_t metric,
           const py::object& allowed) {
            return search_impl(s, tables, qnorms, scales, iters, k, metric, allowed, false);
        },
        py::arg("store"), py::arg("tables"), py::arg("qnorms"), py::arg("scales"),
        py::arg("iters"), py::arg("k"), py::arg("metric"), py::arg("allowed") = py::none(),
        search_doc);
    m.def(
        "range_search",
        [](const PyCodeStore& s, const py::object& tables, const py::object& qnorms,
           const py::object& scales, int64_t iters, double radius, int64_t metric,
           const py::object& allowed) {
            return range_search_impl(s, tables, qnorms, scales, iters, radius, metric, allowed);
        },
        py::arg("store"), py::arg("tables"), py::arg("qnorms"), py::arg("scales"),
        py::arg("iters"), py::arg("radius"), py::arg("metric"), py::arg("allowed") = py::none(),
        "range_search(store, tables, qnorms, scales, iters, radius, metric, allowed=None)\n"
        "-> (lims uint64 (nq + 1,), D float32 (lims[nq],), I int64 (lims[nq],)).\n"
        "Every stored vector with D < radius (L2, metric 0) or D > radius (inner product,\n"
        "metric 1), with the same distances as search; query q's results are\n"
        "[lims[q], lims[q + 1]), best first (ties by id, then storage order). Inputs as search.\n"
        "GIL released, Ctrl-C honoured.");
    m.def(
        "search_reference",
        [](const PyCodeStore& s, const py::object& tables, const py::object& qnorms,
           const py::object& scales, int64_t iters, int64_t k, int64_t metric,
           const py::object& allowed) {
            return search_impl(s, tables, qnorms, scales, iters, k, metric, allowed, true);
        },
        py::arg("store"), py::arg("tables"), py::arg("qnorms"), py::arg("scales"),
        py::arg("iters"), py::arg("k"), py::arg("metric"), py::arg("allowed") = py::none(),
        "Same as search, computed by a plain single-threaded scalar loop with a full sort "
        "(ignores the SIMD level and threads; for tests).");

    // --- inverted lists (IndexIVFDRQ) ---------------------------------------------------------
    py::class_<PyIVFStore>(m, "IVFStore",
                           "nlist inverted lists of sequential codes (blocked layout), per-prefix "
                           "floats and int64 ids.")
        .def(py::init([](int64_t nlist, int64_t M) {
                 return std::make_unique<PyIVFStore>(to_size(nlist, "nlist", 1), to_size(M, "M", 1));
             }),
             py::arg("nlist"), py::arg("M"))
        .def_property_readonly("M", [](const PyIVFStore& s) { return s.lists.M(); })
        .def_property_readonly("nlist", [](const PyIVFStore& s) { return s.lists.nlist(); })
        .def_property_readonly("ntotal",
                               [](const PyIVFStore& s) {
                                   py::gil_scoped_release release;
                                   std::shared_lock<std::shared_mutex> lock(s.mutex);
                                   return s.lists.ntotal();
                               })
        .def(
            "memory_usage",
            [](const PyIVFStore& s) {
                py::gil_scoped_release release;
                std::shared_lock<std::shared_mutex> lock(s.mutex);
                return s.lists.memory_usage();
            },
            "Bytes held by all lists: codes (blocked, padding included), per-prefix floats, ids.")
        .def(
            "list_sizes",
            [](const PyIVFStore& s) {
                std::vector<int64_t> out(s.lists.nlist());
                {
                    py::gil_scoped_release release;
                    std::shared_lock<std::shared_mutex> lock(s.mutex);
                    for (size_t l = 0; l < out.size(); ++l) {
                        out[l] = static_cast<int64_t>(s.lists.list(l).ntotal());
                    }
                }
                const auto n = static_cast<py::ssize_t>(out.size());
                return vector_to_array(std::move(out), {n});
            },
            "Vectors per list, int64 (nlist,).")
        .def(
            "add",
            [](PyIVFStore& s, const py::object& codes_obj, const py::object& terms_obj,
               const py::object& ids_obj, const py::object& list_nos_obj) {
                const py::ssize_t M = static_cast<py::ssize_t>(s.lists.M());
                py::array codes = require_array<uint8_t>(codes_obj, "codes", "uint8",
                                                         {any_dim("n"), fixed_dim(M, "M")});
                const py::ssize_t n = codes.shape(0);
                py::array terms = require_array<float>(terms_obj, "terms", "float32",
                                                       {fixed_dim(n, "n"), fixed_dim(M, "M")});
                py::array ids = require_array<int64_t>(ids_obj, "ids", "int64", {fixed_dim(n, "n")});
                py::array list_nos =
                    require_array<int64_t>(list_nos_obj, "list_nos", "int64", {fixed_dim(n, "n")});
                py::gil_scoped_release release;
                std::unique_lock<std::shared_mutex> lock(s.mutex);
                s.lists.add(static_cast<size_t>(n), data_of<uint8_t>(codes), data_of<float>(terms),
                            data_of<int64_t>(ids), data_of<int64_t>(list_nos));
            },
            py::arg("codes"), py::arg("terms"), py::arg("ids"), py::arg("list_nos"),
            "Appends codes uint8 (n, M), per-prefix terms float32 (n, M), ids int64 (n,) to the\n"
            "lists list_nos int64 (n,). All or nothing.")
        .def(
            "get_list",
            [](const PyIVFStore& s, int64_t l) {
                const size_t M = s.lists.M();
                std::vector<uint8_t> codes;
                std::vector<float> terms;
                std::vector<int64_t> ids;
                size_t n = 0;
                {
                    py::gil_scoped_release release;
                    std::shared_lock<std::shared_mutex> lock(s.mutex);
                    if (l < 0 || static_cast<uint64_t>(l) >= s.lists.nlist()) {
                        throw std::out_of_range("get_list: list " + std::to_string(l) +
                                                " is outside [0, nlist=" +
                                                std::to_string(s.lists.nlist()) + ")");
                    }
                    const drq::CodeStore& store = s.lists.list(static_cast<size_t>(l));
                    n = store.ntotal();
                    codes.resize(n * M);
                    terms.resize(n * M);
                    store.get_codes(0, n, codes.data());
                    store.get_norms(0, n, terms.data());
                    ids.assign(store.ids(), store.ids() + n);
                }
                const auto sn = static_cast<py::ssize_t>(n);
                const auto sM = static_cast<py::ssize_t>(M);
                return py::make_tuple(vector_to_array(std::move(codes), {sn, sM}),
                                      vector_to_array(std::move(terms), {sn, sM}),
                                      vector_to_array(std::move(ids), {sn}));
            },
            py::arg("list_no"),
            "(codes uint8 (n, M), terms float32 (n, M), ids int64 (n,)) of one list.")
        .def(
            "get_ids",
            [](const PyIVFStore& s) {
                std::vector<int64_t> out;
                {
                    py::gil_scoped_release release;
                    std::shared_lock<std::shared_mutex> lock(s.mutex);
                    out = s.lists.ids_in_list_order();
                }
                const auto n = static_cast<py::ssize_t>(out.size());
                return vector_to_array(std::move(out), {n});
            },
            "All ids, int64 (ntotal,), in list order (list 0 first).")
        .def(
            "remove",
            [](PyIVFStore& s, const py::object& mask_obj) {
                return remove_by_mask(s.mutex, s.lists, mask_obj);
            },
            py::arg("mask"),
            "Removes the vectors where mask ((ntotal,), in get_ids() order) is nonzero.")
        .def(
            "reset",
            [](PyIVFStore& s) {
                py::gil_scoped_release release;
                std::unique_lock<std::shared_mutex> lock(s.mutex);
                s.lists.reset();
            },
            "Removes everything and frees the memory.");

    const char* ivf_doc =
        "ivf_search(store, tables, coarse, list_nos, scales, iters, k, metric, allowed=None)\n"
        "-> (D float32 (nq, k), I int64 (nq, k)). tables: float32 (nq, K), T = q @ C.T (shared\n"
        "codebook), or (nq, T >= iters, K), tables[q, j] = q @ C_j.T (one codebook per iteration);\n"
        "coarse: float32 (nq, nprobe), ||q - c_l||^2 (L2) or <q, c_l> (IP) of the probed lists;\n"
        "list_nos: int64 (nq, nprobe), -1 = skip. L2: D = (coarse + term_iters) - 2 ip;\n"
        "IP: D = coarse + ip. allowed: optional (ntotal,) filter in get_ids() order.\n"
        "GIL released, Ctrl-C honoured.";
    m.def(
        "ivf_search",
        [](const PyIVFStore& s, const py::object& tables, const py::object& coarse,
           const py::object& list_nos, const py::object& scales, int64_t iters, int64_t k,
           int64_t metric, const py::object& allowed) {
            return ivf_search_impl(s, tables, coarse, list_nos, scales, iters, k, metric, allowed,
                                   false);
        },
        py::arg("store"), py::arg("tables"), py::arg("coarse"), py::arg("list_nos"),
        py::arg("scales"), py::arg("iters"), py::arg("k"), py::arg("metric"),
        py::arg("allowed") = py::none(), ivf_doc);
    m.def(
        "ivf_search_reference",
        [](const PyIVFStore& s, const py::object& tables, const py::object& coarse,
           const py::object& list_nos, const py::object& scales, int64_t iters, int64_t k,
           int64_t metric, const py::object& allowed) {
            return ivf_search_impl(s, tables, coarse, list_nos, scales, iters, k, metric, allowed,
                                   true);
        },
        py::arg("store"), py::arg("tables"), py::arg("coarse"), py::arg("list_nos"),
        py::arg("scales"), py::arg("iters"), py::arg("k"), py::arg("metric"),
        py::arg("allowed") = py::none(),
        "Same as ivf_search by a plain single-threaded scalar loop with a full sort (tests).");

    // --- hash encoder and Hamming search -------------------------------------------------------
    m.def("cpu_has_avx512_vpopcntdq", &drq::cpu_has_avx512_vpopcntdq,
          "True when the AVX-512 Hamming kernel (VPOPCNTDQ) runs at the 'avx512' level.");
    py::class_<drq::TernaryNet>(m, "TernaryNet",
                                "Ternary/float MLP hash encoder (see csrc/drq/ternary.h for the exact math).")
        .def(py::init(&make_ternary_net), py::arg("in_scale"), py::arg("in_shift"), py::arg("layers"))
        .def_property_readonly("d_in", &drq::TernaryNet::d_in)
        .def_property_readonly("d_out", &drq::TernaryNet::d_out)
        .def("forward", &ternary_forward, py::arg("x"),
             "forward(x float32 or uint8 (n, d_in)) -> float32 (n, d_out) logits.\n"
             "Multi-threaded, GIL released, Ctrl-C honoured.");
    m.def(
        "hamming_search",
        [](const py::object& codes, const py::object& ids, const py::object& queries, int64_t nbits,
           int64_t k) { return hamming_search_impl(codes, ids, queries, nbits, k, false); },
        py::arg("codes"), py::arg("ids"), py::arg("queries"), py::arg("nbits"), py::arg("k"),
        "hamming_search(codes uint64 (n, W), ids int64 (n,) or None, queries uint64 (nq, W), nbits, k)\n"
        "-> (D int32 (nq, k), I int64 (nq, k)); the first nbits bits are compared; ties by id then\n"
        "position; padding (INT32_MAX, -1). Multi-threaded, GIL released, Ctrl-C honoured.");
    m.def(
        "hamming_search_reference",
        [](const py::object& codes, const py::object& ids, const py::object& queries, int64_t nbits,
           int64_t k) { return hamming_search_impl(codes, ids, queries, nbits, k, true); },
        py::arg("codes"), py::arg("ids"), py::arg("queries"), py::arg("nbits"), py::arg("k"),
        "Same as hamming_search by a single-threaded scalar loop with a full sort (tests).");
    bind_fastscan(m);
}
