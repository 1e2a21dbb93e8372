// Python bindings of the fastreplay core: numpy conversion and checks with the GIL held, C++ work without it.
//
// The only file that includes pybind11 or numpy. Pattern of every hot call: with the GIL, parse and validate all
// input and allocate outputs (nothing is written to the buffer until everything is checked), then release the
// GIL around the core call, which touches only raw pointers.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <numpy/arrayobject.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <random>
#include <cstring>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "fastreplay/pool.h"
#include "fastreplay/prefetch.h"
#include "fastreplay/prioritized.h"
#include "fastreplay/replay.h"

namespace py = pybind11;
namespace fr = fastreplay;

namespace {

// ---------------------------------------------------------------------------------------------------------------
// Errors and small helpers
// ---------------------------------------------------------------------------------------------------------------

[[noreturn]] void type_error(const std::string& msg) { throw py::type_error(msg); }
[[noreturn]] void value_error(const std::string& msg) { throw py::value_error(msg); }

std::string shape_str(const npy_intp* dims, int nd) {
  std::ostringstream os;
  os << "(";
  for (int i = 0; i < nd; ++i) os << dims[i] << (nd == 1 ? "," : (i + 1 < nd ? ", " : ""));
  os << ")";
  return os.str();
}

std::string dtype_str(PyArray_Descr* d) {
  py::object s = py::reinterpret_steal<py::object>(PyObject_Str(reinterpret_cast<PyObject*>(d)));
  return s ? s.cast<std::string>() : std::string("?");
}

std::string type_name(PyObject* o) { return Py_TYPE(o)->tp_name; }

// A Python int (or numpy integer) as int64; TypeError naming the argument otherwise.
long long as_int(PyObject* o, const char* what) {
  if (PyBool_Check(o) || !(PyLong_Check(o) || PyIndex_Check(o)))
    type_error(std::string(what) + " must be an int, got " + type_name(o));
  py::object idx = py::reinterpret_steal<py::object>(PyNumber_Index(o));
  if (!idx) throw py::error_already_set();
  int overflow = 0;
  long long v = PyLong_AsLongLongAndOverflow(idx.ptr(), &overflow);
  if (overflow) value_error(std::string(what) + " is out of range, got " + py::str(o).cast<std::string>());
  return v;
}

// Kind-based rule for plain Python values (scalars and lists), in the spirit of NEP 50 'weak' Python scalars:
// bool goes anywhere, integers into integer/float/complex fields, floats into float/complex, complex into complex.
bool python_kind_castable(char from, char to) {
  switch (from) {
    case 'b': return true;
    case 'i':
    case 'u': return to == 'i' || to == 'u' || to == 'f' || to == 'c';
    case 'f': return to == 'f' || to == 'c';
    case 'c': return to == 'c';
    default: return false;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Fields
// ---------------------------------------------------------------------------------------------------------------

struct Field {
  std::string name;
  py::str key;                 // interned name: the Batch key
  std::vector<npy_intp> shape;  // row shape
  py::object dtype;            // numpy.dtype (native byte order)
  int type_num = 0;
  char kind = 0;
  std::size_t itemsize = 0;
  std::size_t row_bytes = 0;
  PyArray_Descr* descr() const { return reinterpret_cast<PyArray_Descr*>(dtype.ptr()); }
  std::string shape_text() const { return shape_str(shape.data(), static_cast<int>(shape.size())); }
  std::string batched_shape_text() const {
    std::vector<npy_intp> d(shape);
    d.insert(d.begin(), -1);
    std::string s = shape_str(d.data(), static_cast<int>(d.size()));
    return "(N" + s.substr(3);
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Batch memory: one aligned block per batch, returned to the buffer's pool when the last array viewing it dies.
// ---------------------------------------------------------------------------------------------------------------

constexpr const char* kBatchCapsule = "fastreplay.batch_memory";

struct BatchMemory {
  std::shared_ptr<fr::BlockPool> pool;
  std::uint8_t* block = nullptr;
  std::size_t bytes = 0;
  std::size_t n = 0;
  std::int64_t* indices = nullptr;
  std::uint64_t* generations = nullptr;
  std::uint64_t owner_id = 0;  // which buffer sampled it (generations only mean something there)
  ~BatchMemory() {
    if (block) pool->release(block, bytes);
  }
};

void batch_capsule_destructor(PyObject* cap) {
  delete static_cast<BatchMemory*>(PyCapsule_GetPointer(cap, kBatchCapsule));
}

std::size_t align_up(std::size_t x) { return (x + fr::kCacheLine - 1) / fr::kCacheLine * fr::kCacheLine; }

// A C-contiguous array of `dims` viewing `data`, kept alive by `base`.
py::object make_view(PyArray_Descr* descr, int nd, const npy_intp* dims, void* data, PyObject* base, bool writeable) {
  Py_INCREF(descr);
  PyObject* arr = PyArray_NewFromDescr(&PyArray_Type, descr, nd, const_cast<npy_intp*>(dims), nullptr, data,
                                       writeable ? NPY_ARRAY_CARRAY : NPY_ARRAY_CARRAY_RO, nullptr);
  if (!arr) throw py::error_already_set();
  Py_INCREF(base);
  if (PyArray_SetBaseObject(reinterpret_cast<PyArrayObject*>(arr), base) < 0) {
    Py_DECREF(arr);
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::object>(arr);
}

py::object g_batch_type;  // fastreplay.Batch, registered by the Python package at import
py::object g_empty_tuple;
py::str g_indices, g_weights, g_generations;
std::atomic<std::uint64_t> g_next_buffer_id{1};

// ---------------------------------------------------------------------------------------------------------------
// The buffer
// ---------------------------------------------------------------------------------------------------------------

// One converted input value: a pointer to `rows` contiguous rows of the field's dtype.
struct Source {
  const void* ptr = nullptr;
  npy_intp rows = 1;
  bool batched = false;
  py::object keep;                 // owns converted memory, if any
  alignas(16) unsigned char scalar[16];
};

template <class T>
void put_scalar(void* dst, T v) {
  std::memcpy(dst, &v, sizeof(T));
}

class Buffer {
 public:
  Buffer(long long capacity, const py::list& names, const py::list& shapes, const py::list& dtypes,
         py::object seed, bool prioritized, double alpha, double eps, const std::string& max_priority,
         const std::string& storage_dir)
      : id_(g_next_buffer_id.fetch_add(1)), pool_(std::make_shared<fr::BlockPool>()) {
    if (capacity <= 0) value_error("capacity must be positive, got " + std::to_string(capacity));
    std::vector<fr::FieldSpec> specs;
    for (std::size_t i = 0; i < names.size(); ++i) {
      Field f;
      f.name = names[i].cast<std::string>();
      f.key = py::reinterpret_steal<py::str>(PyUnicode_InternFromString(f.name.c_str()));
      for (auto d : shapes[i].cast<py::tuple>()) f.shape.push_back(d.cast<npy_intp>());
      f.dtype = dtypes[i];
      PyArray_Descr* d = f.descr();
      f.type_num = d->type_num;
      f.kind = d->kind;
      f.itemsize = static_cast<std::size_t>(PyDataType_ELSIZE(d));
      std::size_t elems = 1;
      for (npy_intp s : f.shape) {
        if (s > 0 && elems > std::numeric_limits<std::size_t>::max() / static_cast<std::size_t>(s))
          throw std::bad_alloc();
        elems *= static_cast<std::size_t>(s);
      }
      f.row_bytes = elems * f.itemsize;
      index_[f.key] = py::int_(i);
      specs.push_back({f.name, f.row_bytes});
      fields_.push_back(std::move(f));
    }
    const std::uint64_t s = seed.is_none() ? random_seed() : static_cast<std::uint64_t>(as_int(seed.ptr(), "seed"));
    std::vector<std::shared_ptr<std::uint8_t>> memory;
    if (!storage_dir.empty()) {  // memory-mapped files: field-<i>.bin per field, seq.bin
      const auto cap = static_cast<std::size_t>(capacity);
      for (std::size_t i = 0; i < specs.size(); ++i) {
        memory.push_back(fr::map_file(fr::field_file(storage_dir, i), fr::checked_mul(cap, specs[i].row_bytes)));
        mapped_.push_back({memory.back(), cap * specs[i].row_bytes});
      }
      memory.push_back(fr::map_file(fr::seq_file(storage_dir), fr::checked_mul(cap, 8)));
      mapped_.push_back({memory.back(), cap * 8});
    }
    if (prioritized) {
      auto mode = fr::PrioritizedCore::MaxMode::AllTime;
      if (max_priority == "stored") mode = fr::PrioritizedCore::MaxMode::Stored;
      else if (max_priority != "all_time")
        value_error("max_priority must be 'all_time' or 'stored', got '" + max_priority + "'");
      per_ = new fr::PrioritizedCore(static_cast<std::size_t>(capacity), specs, s, alpha, eps, mode, memory);
      core_.reset(per_);
    } else {
      core_.reset(new fr::ReplayCore(static_cast<std::size_t>(capacity), specs, s, memory));
    }
  }

  fr::ReplayCore& core() { return *core_; }
  fr::PrioritizedCore& per() {
    require_per("this method");
    return *per_;
  }
  void require_per(const char* fn) const {
    if (!per_) type_error(std::string(fn) + " needs a PrioritizedReplayBuffer");
  }
  const std::vector<Field>& fields() const { return fields_; }
  std::uint64_t id() const { return id_; }

  // add(*args, **kwargs): positional values in field order, keywords by name; dict values expand into 'name.key'.
  void add(const py::args& args, const py::kwargs& kwargs) {
    const std::size_t nf = fields_.size();
    std::vector<PyObject*> vals(nf, nullptr);
    if (args.size() > nf)
      type_error("add: takes at most " + std::to_string(nf) + " positional values (one per field), got " +
                 std::to_string(args.size()));
    for (std::size_t i = 0; i < args.size(); ++i) vals[i] = args[i].ptr();
    std::vector<py::object> expanded;  // keeps dict-expanded keys alive
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(kwargs.ptr(), &pos, &key, &value)) {
      PyObject* idx = PyDict_GetItemWithError(index_.ptr(), key);
      if (!idx) {
        if (PyErr_Occurred()) throw py::error_already_set();
        if (PyDict_Check(value) && expand_dict(key, value, vals)) continue;
        type_error("add: unknown field '" + py::str(key).cast<std::string>() + "'; the fields are " + field_list());
      }
      const std::size_t i = PyLong_AsSize_t(idx);
      if (vals[i]) type_error("add: field '" + fields_[i].name + "' given twice");
      vals[i] = value;
    }
    for (std::size_t i = 0; i < nf; ++i)
      if (!vals[i]) type_error("add: missing field '" + fields_[i].name + "'; every add needs all of " + field_list());

    std::vector<Source> src(nf);
    for (std::size_t i = 0; i < nf; ++i) convert("add", fields_[i], vals[i], src[i]);
    npy_intp rows = src[0].rows;
    for (std::size_t i = 1; i < nf; ++i) {
      if (src[i].rows != rows) {
        auto desc = [](const Field& f, const Source& s) {
          return "'" + f.name + "' has " + (s.batched ? std::to_string(s.rows) + " rows" : std::string("a single row"));
        };
        value_error("add: fields disagree on the number of rows: " + desc(fields_[0], src[0]) + ", " +
                    desc(fields_[i], src[i]));
      }
    }
    std::vector<const void*> ptrs(nf);
    for (std::size_t i = 0; i < nf; ++i) ptrs[i] = src[i].ptr;
    py::gil_scoped_release nogil;
    core_->add(ptrs.data(), static_cast<std::size_t>(rows));
  }

  // sample(batch_size, out=None) for uniform buffers; sample(batch_size, beta, out=None) for prioritized ones.
  py::object sample(py::handle batch_size, double beta, py::handle out) {
    const long long n = as_int(batch_size.ptr(), "sample: batch_size");
    if (n <= 0) value_error("sample: batch_size must be positive, got " + std::to_string(n));
    if (core_->size() == 0) value_error("sample: the buffer is empty; add transitions first");
    if (per_ && !(beta >= 0.0 && std::isfinite(beta)))
      value_error("sample: beta must be finite and >= 0, got " + py::str(py::float_(beta)).cast<std::string>());
    Out o = out.is_none() ? new_batch(static_cast<std::size_t>(n)) : reuse_batch("sample", out, static_cast<std::size_t>(n));
    {
      py::gil_scoped_release nogil;
      fill(o, beta);
    }
    return o.batch;
  }

  // get(indices): the rows at the given slots.
  py::object get(py::handle indices) {
    py::object arr = index_array("get", indices);
    auto* a = reinterpret_cast<PyArrayObject*>(arr.ptr());
    const auto n = static_cast<std::size_t>(PyArray_SIZE(a));
    const auto* idx = static_cast<const std::int64_t*>(PyArray_DATA(a));
    core_->check_indices("get", idx, n);
    Out o = new_batch(n, true);
    std::memcpy(o.indices, idx, n * sizeof(std::int64_t));
    {
      py::gil_scoped_release nogil;
      core_->get(idx, n, o.generations, o.rows.data());
      if (per_)
        for (std::size_t k = 0; k < n; ++k) o.weights[k] = 1.0f;
    }
    return o.batch;
  }

  std::size_t update_priorities(py::handle indices, py::handle priorities, py::handle generations, bool raise_stale) {
    py::object ia = index_array("update_priorities", indices);
    auto* a = reinterpret_cast<PyArrayObject*>(ia.ptr());
    const auto n = static_cast<std::size_t>(PyArray_SIZE(a));
    py::object pa = float_array("update_priorities", "priorities", priorities);
    auto* p = reinterpret_cast<PyArrayObject*>(pa.ptr());
    if (static_cast<std::size_t>(PyArray_SIZE(p)) != n)
      value_error("update_priorities: indices and priorities must have the same length, got " + std::to_string(n) +
                  " indices and " + std::to_string(PyArray_SIZE(p)) + " priorities");
    const std::uint64_t* gens = nullptr;
    py::object ga;
    if (!generations.is_none()) {
      py::object g0 = py::reinterpret_steal<py::object>(PyArray_FromAny(generations.ptr(), nullptr, 0, 0, 0, nullptr));
      if (!g0 || PyArray_NDIM(reinterpret_cast<PyArrayObject*>(g0.ptr())) > 1 ||
          (PyArray_SIZE(reinterpret_cast<PyArrayObject*>(g0.ptr())) &&
           !strchr("iu", PyArray_DESCR(reinterpret_cast<PyArrayObject*>(g0.ptr()))->kind))) {
        PyErr_Clear();
        type_error("update_priorities: generations must be a 1-d array of non-negative integers (batch.generations)");
      }
      if (PyArray_DESCR(reinterpret_cast<PyArrayObject*>(g0.ptr()))->kind == 'i' &&
          PyArray_SIZE(reinterpret_cast<PyArrayObject*>(g0.ptr()))) {
        py::object mn = py::reinterpret_steal<py::object>(PyArray_Min(reinterpret_cast<PyArrayObject*>(g0.ptr()), NPY_RAVEL_AXIS, nullptr));
        if (!mn) throw py::error_already_set();
        if (py::int_(mn) < py::int_(0)) value_error("update_priorities: generations must be non-negative");
      }
      ga = py::reinterpret_steal<py::object>(
          PyArray_FromAny(g0.ptr(), PyArray_DescrFromType(NPY_UINT64), 0, 1, NPY_ARRAY_CARRAY_RO | NPY_ARRAY_FORCECAST, nullptr));
      if (!ga) throw py::error_already_set();
      if (static_cast<std::size_t>(PyArray_SIZE(reinterpret_cast<PyArrayObject*>(ga.ptr()))) != n)
        value_error("update_priorities: generations must have one entry per index, got " +
                    std::to_string(PyArray_SIZE(reinterpret_cast<PyArrayObject*>(ga.ptr()))) + " for " + std::to_string(n));
      gens = static_cast<const std::uint64_t*>(PyArray_DATA(reinterpret_cast<PyArrayObject*>(ga.ptr())));
    } else {
      gens = sampled_generations(indices, n);  // the indices array of one of our batches carries them
    }
    const auto* idx = static_cast<const std::int64_t*>(PyArray_DATA(a));
    const auto* pr = static_cast<const double*>(PyArray_DATA(p));
    require_per("update_priorities");
    py::gil_scoped_release nogil;
    return per_->update_priorities(idx, pr, n, gens, raise_stale);
  }

  py::object generations(py::handle indices) {
    py::object ia = index_array("generations", indices);
    auto* a = reinterpret_cast<PyArrayObject*>(ia.ptr());
    const auto n = static_cast<std::size_t>(PyArray_SIZE(a));
    const auto* idx = static_cast<const std::int64_t*>(PyArray_DATA(a));
    const auto cap = static_cast<std::int64_t>(core_->capacity());
    for (std::size_t k = 0; k < n; ++k)
      if (idx[k] < 0 || idx[k] >= cap)
        throw py::index_error("generations: index " + std::to_string(idx[k]) + " at position " + std::to_string(k) +
                              " is out of range for capacity " + std::to_string(cap));
    const npy_intp nn = static_cast<npy_intp>(n);
    PyObject* out = PyArray_SimpleNew(1, &nn, NPY_UINT64);
    if (!out) throw py::error_already_set();
    auto* o = static_cast<std::uint64_t*>(PyArray_DATA(reinterpret_cast<PyArrayObject*>(out)));
    for (std::size_t k = 0; k < n; ++k) o[k] = core_->ring().generation(static_cast<std::size_t>(idx[k]));
    return py::reinterpret_steal<py::object>(out);
  }

  // Checkpoints: the ring's state as plain values, and its restoration (after the columns are written).
  py::dict export_state() {
    py::dict d;
    const auto st = core_->ring().state();
    d["cursor"] = st.cursor;
    d["base"] = st.base;
    d["stream"] = core_->stream();
    d["seed"] = core_->seed();
    const npy_intp cap = static_cast<npy_intp>(core_->capacity());
    PyObject* seq = PyArray_SimpleNew(1, &cap, NPY_UINT64);
    if (!seq) throw py::error_already_set();
    auto* o = static_cast<std::uint64_t*>(PyArray_DATA(reinterpret_cast<PyArrayObject*>(seq)));
    for (npy_intp i = 0; i < cap; ++i) o[i] = core_->ring().seq(static_cast<std::size_t>(i));
    d["seq"] = py::reinterpret_steal<py::object>(seq);
    if (per_) {
      d["max_all_time"] = per_->max_all_time();
      const npy_intp n = static_cast<npy_intp>(core_->size());
      PyObject* pr = PyArray_SimpleNew(1, &n, NPY_FLOAT64);
      if (!pr) throw py::error_already_set();
      auto* q = static_cast<double*>(PyArray_DATA(reinterpret_cast<PyArrayObject*>(pr)));
      for (npy_intp i = 0; i < n; ++i) q[i] = per_->priority(static_cast<std::size_t>(i));
      d["priorities"] = py::reinterpret_steal<py::object>(pr);
    }
    return d;
  }
  void restore_state(std::uint64_t cursor, std::uint64_t base, std::uint64_t stream, py::handle seq,
                     py::handle priorities, double max_all_time) {
    py::object s = exact_array(seq, NPY_UINT64, "restore: seq");
    auto* sp = reinterpret_cast<PyArrayObject*>(s.ptr());
    if (PyArray_NDIM(sp) != 1 || static_cast<std::size_t>(PyArray_SIZE(sp)) != core_->capacity())
      value_error("restore: seq must have one entry per slot");
    core_->restore_ring({cursor, base}, static_cast<const std::uint64_t*>(PyArray_DATA(sp)));
    core_->set_stream(stream);
    if (per_) {
      py::object pr = exact_array(priorities, NPY_FLOAT64, "restore: priorities");
      auto* pp = reinterpret_cast<PyArrayObject*>(pr.ptr());
      if (PyArray_NDIM(pp) != 1 || static_cast<std::size_t>(PyArray_SIZE(pp)) != core_->size())
        value_error("restore: priorities must have one entry per stored transition");
      per_->restore_priorities(static_cast<const double*>(PyArray_DATA(pp)), core_->size(), max_all_time);
    }
  }

  // Memory-mapped storage: recover the ring from the files, and write them back.
  std::size_t reopen(std::uint64_t base) { return core_->reopen(base); }
  void flush() {
    py::gil_scoped_release nogil;
    for (auto& m : mapped_) fr::sync_mapping(m.first.get(), m.second);
  }
  void restore_priorities(py::handle priorities, double max_all_time) {
    py::object pr = exact_array(priorities, NPY_FLOAT64, "restore: priorities");
    auto* pp = reinterpret_cast<PyArrayObject*>(pr.ptr());
    if (PyArray_NDIM(pp) != 1 || static_cast<std::size_t>(PyArray_SIZE(pp)) != core_->size())
      value_error("restore: priorities must have one entry per stored transition");
    per().restore_priorities(static_cast<const double*>(PyArray_DATA(pp)), core_->size(), max_all_time);
  }

  // Writable view of the first n rows of field i, for restoring checkpoints only (no other use is safe).
  py::object raw_view(py::handle self, std::size_t i, std::size_t n) {
    const Field& f = fields_.at(i);
    if (n > core_->capacity()) throw py::index_error("raw view beyond capacity");
    std::vector<npy_intp> dims(f.shape);
    dims.insert(dims.begin(), static_cast<npy_intp>(n));
    return make_view(f.descr(), static_cast<int>(dims.size()), dims.data(), core_->column(i).data(), self.ptr(), true);
  }

  // Read-only view of the first len(buffer) rows of field i, aliasing storage.
  py::object storage_view(py::handle self, std::size_t i) {
    const Field& f = fields_.at(i);
    std::vector<npy_intp> dims(f.shape);
    dims.insert(dims.begin(), static_cast<npy_intp>(core_->size()));
    return make_view(f.descr(), static_cast<int>(dims.size()), dims.data(), core_->column(i).data(), self.ptr(), false);
  }

  std::string field_list() const {
    std::string s;
    for (std::size_t i = 0; i < fields_.size(); ++i) s += (i ? ", " : "") + fields_[i].name;
    return s;
  }

 public:
  struct Out {
    py::object batch;
    std::size_t n = 0;
    std::int64_t* indices = nullptr;
    std::uint64_t* generations = nullptr;
    float* weights = nullptr;
    std::vector<std::uint8_t*> rows;
  };

  friend class Prefetch;

 private:
  static std::uint64_t random_seed() {
    std::random_device rd;
    return ((static_cast<std::uint64_t>(rd()) << 32) ^ rd()) >> 1;  // 63 bits: a valid `seed` argument too
  }

  bool expand_dict(PyObject* key, PyObject* dict, std::vector<PyObject*>& vals) {
    const std::string prefix = py::str(key).cast<std::string>() + ".";
    bool any = false;
    for (std::size_t i = 0; i < fields_.size(); ++i) {
      if (fields_[i].name.compare(0, prefix.size(), prefix) != 0) continue;
      any = true;
      PyObject* v = PyDict_GetItemString(dict, fields_[i].name.c_str() + prefix.size());
      if (!v) type_error("add: field '" + prefix.substr(0, prefix.size() - 1) + "' is missing key '" +
                         fields_[i].name.substr(prefix.size()) + "'");
      if (vals[i]) type_error("add: field '" + fields_[i].name + "' given twice");
      vals[i] = v;
    }
    if (any && static_cast<std::size_t>(PyDict_Size(dict)) !=
                   static_cast<std::size_t>(std::count_if(fields_.begin(), fields_.end(), [&](const Field& f) {
                     return f.name.compare(0, prefix.size(), prefix) == 0;
                   })))
      type_error("add: field '" + prefix.substr(0, prefix.size() - 1) + "' has keys that are not fields");
    return any;
  }

  // Convert one value for field f into contiguous rows of f's dtype, checking shape and dtype.
  void convert(const char* fn, const Field& f, PyObject* v, Source& s) {
    const int rnd = static_cast<int>(f.shape.size());
    // Fast path: a Python scalar for a scalar field.
    if (rnd == 0 && (PyFloat_CheckExact(v) || PyLong_CheckExact(v) || PyBool_Check(v))) {
      if (scalar_fast(f, v, s)) return;
    }
    // Fast path: a numpy scalar (what argmax, vector envs and reductions hand out) for a scalar field.
    if (rnd == 0 && PyArray_IsScalar(v, Generic)) {
      PyArray_Descr* d = PyArray_DescrFromScalar(v);
      if (!d) throw py::error_already_set();
      py::object hold = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(d));
      if (PyDataType_ELSIZE(d) <= 16 && strchr("biufc", d->kind)) {
        s.rows = 1;
        s.batched = false;
        s.ptr = s.scalar;
        if (d->type_num == f.type_num && PyArray_ISNBO(d->byteorder)) {
          PyArray_ScalarAsCtype(v, s.scalar);
          return;
        }
        if (PyArray_CanCastTypeTo(d, f.descr(), NPY_SAME_KIND_CASTING)) {
          if (PyArray_CastScalarToCtype(v, s.scalar, f.descr()) < 0) throw py::error_already_set();
          return;
        }
        type_error(std::string(fn) + ": field '" + f.name + "' expects dtype " + dtype_str(f.descr()) +
                   " (or one that casts to it under numpy's 'same_kind' rule), got " + dtype_str(d));
      }
    }
    PyArrayObject* arr = nullptr;
    const bool numpy_value = PyArray_Check(v) || PyArray_IsScalar(v, Generic);
    py::object holder;
    if (PyArray_Check(v)) {
      arr = reinterpret_cast<PyArrayObject*>(v);
    } else {
      holder = py::reinterpret_steal<py::object>(PyArray_FromAny(v, nullptr, 0, 0, 0, nullptr));
      if (!holder) {
        PyErr_Clear();
        type_error(std::string(fn) + ": field '" + f.name + "' expects an array of " + dtype_str(f.descr()) +
                   " with shape " + f.shape_text() + " or " + f.batched_shape_text() + ", got " + type_name(v) +
                   " that numpy cannot convert");
      }
      arr = reinterpret_cast<PyArrayObject*>(holder.ptr());
    }
    // Shape.
    const int nd = PyArray_NDIM(arr);
    const npy_intp* dims = PyArray_DIMS(arr);
    bool ok = false;
    if (nd == rnd && std::equal(f.shape.begin(), f.shape.end(), dims)) {
      ok = true;
      s.rows = 1;
      s.batched = false;
    } else if (nd == rnd + 1 && std::equal(f.shape.begin(), f.shape.end(), dims + 1)) {
      ok = true;
      s.rows = dims[0];
      s.batched = true;
    }
    if (!ok)
      value_error(std::string(fn) + ": field '" + f.name + "' expects shape " + f.shape_text() + " or " +
                  f.batched_shape_text() + ", got " + shape_str(dims, nd));
    // Dtype.
    PyArray_Descr* from = PyArray_DESCR(arr);
    if (from->type_num == f.type_num && PyArray_ISCARRAY_RO(arr) && PyArray_ISNOTSWAPPED(arr)) {
      s.ptr = PyArray_DATA(arr);
      s.keep = holder;
      return;
    }
    const bool castable = numpy_value ? PyArray_CanCastTypeTo(from, f.descr(), NPY_SAME_KIND_CASTING)
                                      : python_kind_castable(from->kind, f.kind);
    if (castable && !numpy_value && (from->kind == 'i' || from->kind == 'u') && (f.kind == 'i' || f.kind == 'u'))
      check_int_range(fn, f, arr);  // Python ints must fit, as in the scalar fast path
    if (!castable)
      type_error(std::string(fn) + ": field '" + f.name + "' expects dtype " + dtype_str(f.descr()) +
                 (numpy_value ? " (or one that casts to it under numpy's 'same_kind' rule)"
                              : " (Python values of a compatible kind)") +
                 ", got " + dtype_str(from));
    Py_INCREF(f.descr());
    PyObject* c = PyArray_FromArray(arr, f.descr(), NPY_ARRAY_CARRAY_RO | NPY_ARRAY_FORCECAST);
    if (!c) throw py::error_already_set();
    s.keep = py::reinterpret_steal<py::object>(c);
    s.ptr = PyArray_DATA(reinterpret_cast<PyArrayObject*>(c));
  }

  // Every value of an integer array made from Python ints must fit field f's integer type.
  static void check_int_range(const char* fn, const Field& f, PyArrayObject* arr) {
    if (PyArray_SIZE(arr) == 0) return;
    py::object lo = py::reinterpret_steal<py::object>(PyArray_Min(arr, NPY_RAVEL_AXIS, nullptr));
    py::object hi = py::reinterpret_steal<py::object>(PyArray_Max(arr, NPY_RAVEL_AXIS, nullptr));
    if (!lo || !hi) throw py::error_already_set();
    py::object np = py::module_::import("numpy");
    py::object info = np.attr("iinfo")(f.dtype);
    for (const py::object& v : {lo, hi}) {
      py::int_ x(v);
      if (x < info.attr("min") || x > info.attr("max"))
        value_error(std::string(fn) + ": field '" + f.name + "' expects dtype " + dtype_str(f.descr()) + ", got " +
                    py::str(x).cast<std::string>() + ", which is out of its range");
    }
  }

  // Python float/int/bool into a scalar field; false to take the general path.
  bool scalar_fast(const Field& f, PyObject* v, Source& s) {
    s.rows = 1;
    s.batched = false;
    s.ptr = s.scalar;
    if (PyBool_Check(v)) {
      const bool b = v == Py_True;
      switch (f.type_num) {
        case NPY_BOOL: put_scalar<npy_bool>(s.scalar, b); return true;
        case NPY_FLOAT: put_scalar<float>(s.scalar, b); return true;
        case NPY_DOUBLE: put_scalar<double>(s.scalar, b); return true;
        case NPY_LONG: case NPY_LONGLONG: if (f.itemsize == 8) { put_scalar<std::int64_t>(s.scalar, b); return true; } return false;
        default: return false;
      }
    }
    if (PyFloat_CheckExact(v)) {
      const double d = PyFloat_AS_DOUBLE(v);
      switch (f.type_num) {
        case NPY_FLOAT: put_scalar<float>(s.scalar, static_cast<float>(d)); return true;
        case NPY_DOUBLE: put_scalar<double>(s.scalar, d); return true;
        default:
          if (f.kind == 'f' || f.kind == 'c') return false;
          type_error("add: field '" + f.name + "' expects dtype " + dtype_str(f.descr()) + ", got a Python float");
      }
    }
    // Python int: must fit the field's integer type.
    if (f.kind == 'b')
      type_error("add: field '" + f.name + "' expects dtype bool, got a Python int (use True/False)");
    int overflow = 0;
    const long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow) return false;
    auto fits = [&](long long lo, long long hi) {
      if (x < lo || x > hi)
        value_error("add: field '" + f.name + "' expects dtype " + dtype_str(f.descr()) + ", got " +
                    std::to_string(x) + ", which is out of its range");
    };
    if (f.kind == 'i' || f.kind == 'u') {
      switch (f.itemsize) {
        case 1: if (f.kind == 'i') { fits(-128, 127); put_scalar<std::int8_t>(s.scalar, static_cast<std::int8_t>(x)); } else { fits(0, 255); put_scalar<std::uint8_t>(s.scalar, static_cast<std::uint8_t>(x)); } return true;
        case 2: if (f.kind == 'i') { fits(-32768, 32767); put_scalar<std::int16_t>(s.scalar, static_cast<std::int16_t>(x)); } else { fits(0, 65535); put_scalar<std::uint16_t>(s.scalar, static_cast<std::uint16_t>(x)); } return true;
        case 4: if (f.kind == 'i') { fits(INT32_MIN, INT32_MAX); put_scalar<std::int32_t>(s.scalar, static_cast<std::int32_t>(x)); } else { fits(0, UINT32_MAX); put_scalar<std::uint32_t>(s.scalar, static_cast<std::uint32_t>(x)); } return true;
        case 8: if (f.kind == 'i') { put_scalar<std::int64_t>(s.scalar, x); } else { fits(0, LLONG_MAX); put_scalar<std::uint64_t>(s.scalar, static_cast<std::uint64_t>(x)); } return true;
        default: return false;
      }
    }
    if (f.type_num == NPY_FLOAT) { put_scalar<float>(s.scalar, static_cast<float>(x)); return true; }
    if (f.type_num == NPY_DOUBLE) { put_scalar<double>(s.scalar, static_cast<double>(x)); return true; }
    return false;
  }

  // Where each array of an n-row batch lives inside its block.
  struct Layout {
    std::size_t n = 0, bytes = 0, idx_off = 0, gen_off = 0, w_off = 0;
    std::vector<std::size_t> off;  // per field
  };
  Layout layout(std::size_t n) const {
    Layout L;
    L.n = n;
    std::size_t bytes = 0;
    fr::checked_mul(n, 16);  // absurd batch sizes become MemoryError, never an overflowed size
    L.idx_off = bytes;
    bytes = align_up(bytes + n * 8);
    L.gen_off = bytes;
    bytes = align_up(bytes + n * 8);
    L.w_off = bytes;
    if (per_) bytes = align_up(bytes + n * 4);
    L.off.resize(fields_.size());
    for (std::size_t i = 0; i < fields_.size(); ++i) {
      if (fields_[i].row_bytes && n > (std::numeric_limits<std::size_t>::max() / 2 - bytes) / fields_[i].row_bytes)
        throw std::bad_alloc();
      L.off[i] = bytes;
      bytes = align_up(bytes + n * fields_[i].row_bytes);
    }
    L.bytes = bytes;
    return L;
  }

  // A block for one batch (no Python: also called by prefetch workers).
  std::unique_ptr<BatchMemory> alloc_block(const Layout& L) const {
    auto mem = std::make_unique<BatchMemory>();
    mem->pool = pool_;
    mem->block = static_cast<std::uint8_t*>(pool_->acquire(L.bytes));
    mem->bytes = L.bytes;
    mem->n = L.n;
    mem->indices = reinterpret_cast<std::int64_t*>(mem->block + L.idx_off);
    mem->generations = reinterpret_cast<std::uint64_t*>(mem->block + L.gen_off);
    mem->owner_id = id_;
    return mem;
  }
  Out pointers(const Layout& L, BatchMemory* mem) const {
    Out o;
    o.n = L.n;
    o.indices = mem->indices;
    o.generations = mem->generations;
    o.weights = per_ ? reinterpret_cast<float*>(mem->block + L.w_off) : nullptr;
    o.rows.resize(fields_.size());
    for (std::size_t i = 0; i < fields_.size(); ++i) o.rows[i] = mem->block + L.off[i];
    return o;
  }
  // Sample into a block: the whole job of one batch, without the GIL.
  void fill(Out& o, double beta) {
    if (per_)
      per_->sample(o.n, beta, o.indices, o.weights, o.generations, o.rows.data());
    else  // generations only matter for priority updates: uniform batches skip that extra random read per row
      core_->sample(o.n, o.indices, nullptr, o.rows.data());
  }

  // A fresh batch of n rows in one pooled block: indices, generations, weights (prioritized) and each field.
  Out new_batch(std::size_t n, bool with_generations = false) {
    const Layout L = layout(n);
    std::unique_ptr<BatchMemory> mem = alloc_block(L);
    Out o = pointers(L, mem.get());
    o.batch = wrap(std::move(mem), L, with_generations);
    return o;
  }

 public:
  // The Batch object over a filled block; the block returns to the pool when the last array is gone. GIL held.
  py::object wrap(std::unique_ptr<BatchMemory> owned, const Layout& L, bool with_generations) {
    Out o = pointers(L, owned.get());
    py::capsule cap(owned.get(), kBatchCapsule, batch_capsule_destructor);
    owned.release();
    py::object batch;
    {  // tp_new only: Batch.__init__ (for batches users build by hand) is skipped; every attribute is set below
      auto* t = reinterpret_cast<PyTypeObject*>(g_batch_type.ptr());
      PyObject* b = t->tp_new(t, g_empty_tuple.ptr(), nullptr);
      if (!b) throw py::error_already_set();
      batch = py::reinterpret_steal<py::object>(b);
    }
    const npy_intp nn = static_cast<npy_intp>(L.n);
    std::vector<npy_intp> dims;
    for (std::size_t i = 0; i < fields_.size(); ++i) {
      const Field& f = fields_[i];
      dims.assign(1, nn);
      dims.insert(dims.end(), f.shape.begin(), f.shape.end());
      py::object a = make_view(f.descr(), static_cast<int>(dims.size()), dims.data(), o.rows[i], cap.ptr(), true);
      if (PyDict_SetItem(batch.ptr(), f.key.ptr(), a.ptr()) < 0) throw py::error_already_set();
    }
    set_attr(batch, g_indices, typed_view(PyArray_DescrFromType(NPY_INT64), &nn, o.indices, cap.ptr()));
    if (per_ || with_generations)
      set_attr(batch, g_generations, typed_view(PyArray_DescrFromType(NPY_UINT64), &nn, o.generations, cap.ptr()));
    else
      set_attr(batch, g_generations, py::none());
    if (per_)
      set_attr(batch, g_weights, typed_view(PyArray_DescrFromType(NPY_FLOAT32), &nn, o.weights, cap.ptr()));
    else
      set_attr(batch, g_weights, py::none());
    return batch;
  }

 private:
  // A 1-d view of a fresh descriptor reference (from PyArray_DescrFromType), which it consumes.
  static py::object typed_view(PyArray_Descr* d, const npy_intp* n, void* data, PyObject* base) {
    py::object r = make_view(d, 1, n, data, base, true);
    Py_DECREF(d);
    return r;
  }
  static void set_attr(py::object& o, const py::str& name, const py::object& v) {
    if (PyObject_SetAttr(o.ptr(), name.ptr(), v.ptr()) < 0) throw py::error_already_set();
  }

  // A batch the caller keeps (out=): every array must match the buffer's fields and be writeable and contiguous.
  Out reuse_batch(const char* fn, py::handle out, std::size_t n) {
    const std::string where = std::string(fn) + ": out";
    if (!PyDict_Check(out.ptr())) type_error(where + " must be a Batch returned by sample(), got " + type_name(out.ptr()));
    Out o;
    o.batch = py::reinterpret_borrow<py::object>(out);
    o.n = n;
    auto check = [&](PyObject* v, const std::string& what, int type_num, const std::vector<npy_intp>& row) -> void* {
      if (!v || !PyArray_Check(v)) type_error(where + " has no array '" + what + "'");
      auto* a = reinterpret_cast<PyArrayObject*>(v);
      std::vector<npy_intp> want(row);
      want.insert(want.begin(), static_cast<npy_intp>(n));
      const bool shape_ok = PyArray_NDIM(a) == static_cast<int>(want.size()) &&
                            std::equal(want.begin(), want.end(), PyArray_DIMS(a));
      if (PyArray_DESCR(a)->type_num != type_num || !shape_ok)
        value_error(where + "['" + what + "'] must be " + dtype_str(PyArray_DescrFromType(type_num)) + " with shape " +
                    shape_str(want.data(), static_cast<int>(want.size())) + ", got " + dtype_str(PyArray_DESCR(a)) +
                    " with shape " + shape_str(PyArray_DIMS(a), PyArray_NDIM(a)));
      if (!PyArray_ISCARRAY(a) || !PyArray_ISNOTSWAPPED(a))
        value_error(where + "['" + what + "'] must be writeable and C-contiguous");
      return PyArray_DATA(a);
    };
    o.rows.resize(fields_.size());
    for (std::size_t i = 0; i < fields_.size(); ++i)
      o.rows[i] = static_cast<std::uint8_t*>(check(PyDict_GetItem(out.ptr(), fields_[i].key.ptr()), fields_[i].name,
                                                    fields_[i].type_num, fields_[i].shape));
    py::object idx = py::reinterpret_steal<py::object>(PyObject_GetAttr(out.ptr(), g_indices.ptr()));
    if (!idx) throw py::error_already_set();
    o.indices = static_cast<std::int64_t*>(check(idx.ptr(), "indices", NPY_INT64, {}));
    if (per_) {
      py::object gens = py::reinterpret_steal<py::object>(PyObject_GetAttr(out.ptr(), g_generations.ptr()));
      if (!gens) throw py::error_already_set();
      o.generations = static_cast<std::uint64_t*>(check(gens.ptr(), "generations", NPY_UINT64, {}));
      py::object w = py::reinterpret_steal<py::object>(PyObject_GetAttr(out.ptr(), g_weights.ptr()));
      if (!w) throw py::error_already_set();
      o.weights = static_cast<float*>(check(w.ptr(), "weights", NPY_FLOAT32, {}));
    }
    return o;
  }

  // An aligned C-contiguous native array of exactly this dtype (converted only in layout, never in type).
  static py::object exact_array(py::handle v, int type_num, const std::string& what) {
    if (!PyArray_Check(v.ptr()) || PyArray_DESCR(reinterpret_cast<PyArrayObject*>(v.ptr()))->type_num != type_num)
      type_error(what + " must be a numpy array of " + dtype_str(PyArray_DescrFromType(type_num)));
    PyObject* c = PyArray_FromAny(v.ptr(), PyArray_DescrFromType(type_num), 0, 0, NPY_ARRAY_CARRAY_RO, nullptr);
    if (!c) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(c);
  }

  // indices as a contiguous int64[n] array (a copy if needed); integer kinds only.
  py::object index_array(const char* fn, py::handle indices) {
    py::object a = py::reinterpret_steal<py::object>(PyArray_FromAny(indices.ptr(), nullptr, 0, 0, 0, nullptr));
    if (!a) {
      PyErr_Clear();
      type_error(std::string(fn) + ": indices must be a 1-d array of integers, got " + type_name(indices.ptr()));
    }
    auto* arr = reinterpret_cast<PyArrayObject*>(a.ptr());
    const char k = PyArray_DESCR(arr)->kind;
    if (PyArray_NDIM(arr) > 1)
      value_error(std::string(fn) + ": indices must be 1-d, got shape " + shape_str(PyArray_DIMS(arr), PyArray_NDIM(arr)));
    if (!(k == 'i' || k == 'u') && !(PyArray_SIZE(arr) == 0))
      type_error(std::string(fn) + ": indices must be integers, got dtype " + dtype_str(PyArray_DESCR(arr)));
    if (k == 'u' && PyArray_ITEMSIZE(arr) == 8) {  // uint64 beyond int64 would wrap: check
      py::object mx = py::reinterpret_steal<py::object>(PyArray_Max(arr, NPY_RAVEL_AXIS, nullptr));
      if (mx && PyArray_SIZE(arr) && py::cast<unsigned long long>(mx) > static_cast<unsigned long long>(LLONG_MAX))
        throw py::index_error(std::string(fn) + ": index out of range");
    }
    PyObject* c = PyArray_FromAny(a.ptr(), PyArray_DescrFromType(NPY_INT64), 0, 1,
                                  NPY_ARRAY_CARRAY_RO | NPY_ARRAY_FORCECAST, nullptr);
    if (!c) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(c);
  }

  py::object float_array(const char* fn, const char* what, py::handle v) {
    py::object a = py::reinterpret_steal<py::object>(PyArray_FromAny(v.ptr(), nullptr, 0, 0, 0, nullptr));
    if (!a) {
      PyErr_Clear();
      type_error(std::string(fn) + ": " + what + " must be a 1-d array of numbers, got " + type_name(v.ptr()));
    }
    auto* arr = reinterpret_cast<PyArrayObject*>(a.ptr());
    const char k = PyArray_DESCR(arr)->kind;
    if (PyArray_NDIM(arr) > 1)
      value_error(std::string(fn) + ": " + what + " must be 1-d, got shape " + shape_str(PyArray_DIMS(arr), PyArray_NDIM(arr)));
    if (!(k == 'b' || k == 'i' || k == 'u' || k == 'f') && PyArray_SIZE(arr) != 0)
      type_error(std::string(fn) + ": " + what + " must be real numbers, got dtype " + dtype_str(PyArray_DESCR(arr)));
    PyObject* c = PyArray_FromAny(a.ptr(), PyArray_DescrFromType(NPY_FLOAT64), 0, 1,
                                  NPY_ARRAY_CARRAY_RO | NPY_ARRAY_FORCECAST, nullptr);
    if (!c) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(c);
  }

  // If `indices` is the untouched indices array of a batch this buffer sampled, its generations; else null.
  const std::uint64_t* sampled_generations(py::handle indices, std::size_t n) const {
    if (!PyArray_Check(indices.ptr())) return nullptr;
    auto* a = reinterpret_cast<PyArrayObject*>(indices.ptr());
    PyObject* base = PyArray_BASE(a);
    if (!base || !PyCapsule_IsValid(base, kBatchCapsule)) return nullptr;
    auto* mem = static_cast<BatchMemory*>(PyCapsule_GetPointer(base, kBatchCapsule));
    if (mem->owner_id != id_ || PyArray_DATA(a) != mem->indices || mem->n != n) return nullptr;
    return mem->generations;
  }

  std::uint64_t id_;
  std::vector<std::pair<std::shared_ptr<std::uint8_t>, std::size_t>> mapped_;  // memory-mapped files, if any
  std::shared_ptr<fr::BlockPool> pool_;
  std::vector<Field> fields_;
  py::dict index_;  // interned name -> field position
  std::unique_ptr<fr::ReplayCore> core_;
  fr::PrioritizedCore* per_ = nullptr;  // non-null for prioritized buffers (same object as core_)
};

// ---------------------------------------------------------------------------------------------------------------
// Prefetch: C++ threads sampling batches ahead of the consumer
// ---------------------------------------------------------------------------------------------------------------

class Prefetch {
 public:
  Prefetch(py::object buffer, long long batch_size, long long depth, long long threads, double beta)
      : buffer_(std::move(buffer)), buf_(&buffer_.cast<Buffer&>()), beta_(std::make_shared<std::atomic<double>>(beta)) {
    if (batch_size <= 0) value_error("prefetch: batch_size must be positive, got " + std::to_string(batch_size));
    if (depth <= 0) value_error("prefetch: depth must be positive, got " + std::to_string(depth));
    if (threads <= 0 || threads > 64) value_error("prefetch: threads must be in [1, 64], got " + std::to_string(threads));
    if (buf_->per_ && !(beta >= 0.0 && std::isfinite(beta)))
      value_error("prefetch: beta must be finite and >= 0, got " + std::to_string(beta));
    layout_ = buf_->layout(static_cast<std::size_t>(batch_size));
    Buffer* buf = buf_;
    const Buffer::Layout L = layout_;
    auto beta_ptr = beta_;
    auto produce = [buf, L, beta_ptr]() -> BatchMemory* {
      std::unique_ptr<BatchMemory> mem = buf->alloc_block(L);
      Out o = buf->pointers(L, mem.get());
      buf->fill(o, beta_ptr->load(std::memory_order_relaxed));
      return mem.release();
    };
    auto discard = [](BatchMemory* m) { delete m; };
    pf_ = std::make_unique<fr::Prefetcher<BatchMemory*>>(produce, discard, static_cast<std::size_t>(depth),
                                                          static_cast<std::size_t>(threads));
  }
  ~Prefetch() {
    py::gil_scoped_release nogil;
    pf_.reset();  // joins the workers before buffer_ may go
  }

  py::object next() {
    BatchMemory* m = nullptr;
    if (!pf_) throw py::stop_iteration();
    if (!pf_->try_next(m)) {  // only wait (without the GIL) if no batch is ready
      try {
        py::gil_scoped_release nogil;
        m = pf_->next();
      } catch (const fr::PrefetcherClosed&) {
        throw py::stop_iteration();
      }
    }
    return buf_->wrap(std::unique_ptr<BatchMemory>(m), layout_, false);
  }
  void close() {
    if (!pf_) return;
    py::gil_scoped_release nogil;
    pf_->close();
  }
  double beta() const { return beta_->load(); }
  void set_beta(double b) {
    if (!(b >= 0.0 && std::isfinite(b))) value_error("prefetch: beta must be finite and >= 0, got " + std::to_string(b));
    beta_->store(b);
  }
  std::size_t ready() const { return pf_ ? pf_->ready_count() : 0; }
  bool closed() const { return !pf_ || pf_->closed(); }

 private:
  using Out = Buffer::Out;
  py::object buffer_;  // keeps the buffer (and its core) alive while workers run
  Buffer* buf_;
  Buffer::Layout layout_;
  std::shared_ptr<std::atomic<double>> beta_;
  std::unique_ptr<fr::Prefetcher<BatchMemory*>> pf_;
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  if (_import_array() < 0) throw py::error_already_set();
  g_indices = py::reinterpret_steal<py::str>(PyUnicode_InternFromString("indices"));
  g_weights = py::reinterpret_steal<py::str>(PyUnicode_InternFromString("weights"));
  g_generations = py::reinterpret_steal<py::str>(PyUnicode_InternFromString("generations"));
  m.doc() = "fastreplay's compiled core. Use the classes re-exported by the fastreplay package.";

  g_empty_tuple = py::tuple();
  m.def("_set_batch_type", [](py::object t) {
    if (!PyType_Check(t.ptr()) || !PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(t.ptr()), &PyDict_Type))
      type_error("_set_batch_type: expected a dict subclass");
    g_batch_type = t;
  });
  // Free the stored type before the interpreter tears the module down.
  m.add_object("_cleanup", py::capsule([]() {
                   g_batch_type = py::object();
                   g_empty_tuple = py::object();
                 }));

  py::class_<Prefetch>(m, "_Prefetch", "Batches sampled ahead by C++ threads; see ReplayBuffer.prefetch.")
      .def(py::init<py::object, long long, long long, long long, double>(), py::arg("buffer"), py::arg("batch_size"),
           py::arg("depth"), py::arg("threads"), py::arg("beta"))
      .def("__next__", &Prefetch::next)
      .def("close", &Prefetch::close)
      .def_property("beta", &Prefetch::beta, &Prefetch::set_beta)
      .def_property_readonly("ready", &Prefetch::ready)
      .def_property_readonly("closed", &Prefetch::closed);

  py::class_<Buffer>(m, "_Buffer", "Columnar ring buffer core; see fastreplay.ReplayBuffer.")
      .def(py::init<long long, py::list, py::list, py::list, py::object, bool, double, double, std::string,
                    std::string>(),
           py::arg("capacity"), py::arg("names"), py::arg("shapes"), py::arg("dtypes"), py::arg("seed"),
           py::arg("prioritized"), py::arg("alpha"), py::arg("eps"), py::arg("max_priority"),
           py::arg("storage_dir") = "")
      .def("add", &Buffer::add,
           "add(*values, **fields) -> None\n\nStore one transition (each field of its row shape) or N transitions "
           "(each field with a leading axis N). Every field must be given, positionally in field order or by name.")
      .def("sample", [](Buffer& b, py::handle n, py::handle out) { return b.sample(n, 0.0, out); },
           py::arg("batch_size"), py::kw_only(), py::arg("out") = py::none(),
           "sample(batch_size, *, out=None) -> Batch\n\n"
           "Draw batch_size transitions uniformly at random (with replacement) and copy their rows into a Batch\n"
           "that owns its memory: batch[name] is field_dtype[batch_size, *field_shape], batch.indices int64[B]\n"
           "(batch.weights and batch.generations are None). With out=batch (a Batch from an earlier call), its arrays are refilled\n"
           "in place instead. Raises ValueError if batch_size <= 0 or the buffer is empty.")
      .def("_sample_prioritized", [](Buffer& b, py::handle n, double beta, py::handle out) {
             b.require_per("sample");
             return b.sample(n, beta, out);
           },
           py::arg("batch_size"), py::arg("beta") = 0.4, py::kw_only(), py::arg("out") = py::none(),
           "sample(batch_size, beta=0.4, *, out=None) -> Batch\n\n"
           "Stratified proportional sample: the total priority mass is cut into batch_size equal strata and one\n"
           "transition drawn in each. batch.weights is float32[B]: (N*P(i))**-beta divided by the largest such\n"
           "weight over all stored transitions, i.e. (p_min / p_i)**beta, in (0, 1]. Other arrays as in\n"
           "ReplayBuffer.sample.")
      .def("get", &Buffer::get, py::arg("indices"),
           "get(indices) -> Batch\n\nThe transitions at the given slots (int[B], each in [0, len(self))), copied.")
      .def("_update_priorities", &Buffer::update_priorities)
      .def("_storage_view", [](py::object self, std::size_t i) { return self.cast<Buffer&>().storage_view(self, i); })
      .def("_raw_view", [](py::object self, std::size_t i, std::size_t n) { return self.cast<Buffer&>().raw_view(self, i, n); })
      .def("__len__", [](Buffer& b) { return b.core().size(); })
      .def_property_readonly("capacity", [](Buffer& b) { return b.core().capacity(); },
                             "Maximum number of transitions stored (int).")
      .def_property_readonly("next_index", [](Buffer& b) { return b.core().ring().next_index(); },
                             "Slot the next transition is written to (int).")
      .def_property_readonly("total_added", [](Buffer& b) { return b.core().ring().total_added(); },
                             "Transitions added since creation or the last clear() (int).")
      .def_property_readonly("seed", [](Buffer& b) { return b.core().seed(); }, "Seed of the buffer's generator (int).")
      .def_property("_stream", [](Buffer& b) { return b.core().stream(); },
                    [](Buffer& b, std::uint64_t s) { b.core().set_stream(s); })
      .def("generations", [](Buffer& b, py::handle idx) { return b.generations(idx); },
           "generations(indices) -> uint64[B]: the generation of each slot (int[B] in [0, capacity)): the lap of\n"
           "the ring in which it was last written, counted from 1 (0: never written). It changes whenever the slot\n"
           "is overwritten, and clear() starts a new lap, so a batch's generations tell whether its rows are still\n"
           "stored.")
      .def("clear", [](Buffer& b) { b.core().clear(); }, "Remove every transition (memory is kept).")
      .def("_export_state", &Buffer::export_state)
      .def("_reopen", &Buffer::reopen)
      .def("_flush", &Buffer::flush)
      .def("_restore_priorities", &Buffer::restore_priorities)
      .def("_restore_state", &Buffer::restore_state)
      // Prioritized only.
      .def_property("_alpha", [](Buffer& b) { return b.per().alpha(); }, [](Buffer& b, double a) { b.per().set_alpha(a); })
      .def_property_readonly("_eps", [](Buffer& b) { return b.per().eps(); })
      .def_property_readonly("_max_priority", [](Buffer& b) { return b.per().max_priority(); })
      .def_property_readonly("_total", [](Buffer& b) { return b.per().tree().total(); })
      .def_property_readonly("_min", [](Buffer& b) { return b.per().tree().min(); })
      .def("_leaves", [](Buffer& b) {
        const std::size_t n = b.core().capacity();
        py::object out = py::module_::import("numpy").attr("empty")(n, "float64");
        auto* o = static_cast<double*>(PyArray_DATA(reinterpret_cast<PyArrayObject*>(out.ptr())));
        for (std::size_t i = 0; i < n; ++i) o[i] = b.per().tree().leaf(i);
        return out;
      })
      .def("_priorities", [](Buffer& b) {
        const std::size_t n = b.core().size();
        py::object out = py::module_::import("numpy").attr("empty")(n, "float64");
        auto* o = static_cast<double*>(PyArray_DATA(reinterpret_cast<PyArrayObject*>(out.ptr())));
        for (std::size_t i = 0; i < n; ++i) o[i] = b.per().priority(i);
        return out;
      });
}
