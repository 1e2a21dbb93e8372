// Sequence replay methods of _Buffer (fastreplay/sequences.h, docs/sequences.md): _sample_sequences,
// _update_sequence_priorities and _update_field. The Python layer (fastreplay/_sequences.py) checks argument
// types and ranges and builds the SequenceBatch; this layer checks arrays and what needs the core's state.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <thread>

#include "bindings/buffer.h"

namespace fastreplay_py {

namespace {

fr::ReplayCore& episodic_core(Buffer& b, const char* fn) {
  if (b.multi()) fr::throw_type(std::string(fn) + " is not available for a multi-task buffer yet");
  fr::ReplayCore& core = b.core();
  if (!core.sequences())
    fr::throw_type(std::string(fn) + " needs an episodic buffer (give num_envs=..., or any episode option; see "
                   "docs/episodes.md)");
  return core;
}

py::object zeros(const std::vector<npy_intp>& dims, PyArray_Descr* descr) {
  Py_INCREF(descr);  // PyArray_Zeros steals it
  PyObject* a = PyArray_Zeros(static_cast<int>(dims.size()), const_cast<npy_intp*>(dims.data()), descr, 0);
  if (!a) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(a);
}
py::object zeros(const std::vector<npy_intp>& dims, int type_num) {
  return zeros(dims, PyArray_DescrFromType(type_num));  // a borrowed builtin descriptor
}

// The first n * T (or n) elements of a [B, L, ...] array as a C-contiguous [B, T, ...] view kept alive by it.
py::object head_view(const py::object& a, npy_intp n, npy_intp T) {
  PyArrayObject* arr = as_array(a);
  std::vector<npy_intp> dims(PyArray_DIMS(arr), PyArray_DIMS(arr) + PyArray_NDIM(arr));
  dims[0] = n;
  dims[1] = T;
  PyArray_Descr* d = PyArray_DESCR(arr);
  return make_view(d, dims, PyArray_DATA(arr), a.ptr(), true);
}

fr::SequenceEnd end_arg(const std::string& end) {
  if (end == "truncate") return fr::SequenceEnd::Truncate;
  if (end == "pad") return fr::SequenceEnd::Pad;
  if (end == "drop") return fr::SequenceEnd::Drop;
  fr::throw_invalid("sample_sequences: end must be 'truncate', 'pad' or 'drop', got '" + end + "'");
}

// sample_sequences: the Python layer validated batch_size >= 1, length >= 1, period >= 1 and beta.
py::tuple sample_sequences(Buffer& b, std::size_t n, std::size_t length, std::size_t period, const std::string& end,
                           double beta) {
  const char* fn = "sample_sequences";
  fr::ReplayCore& core = episodic_core(b, fn);
  if (n == 0 || length == 0 || period == 0) fr::throw_invalid("sample_sequences: arguments must be >= 1");
  if (b.prioritized()) fr::PrioritizedCore::check_beta(fn, beta);
  fr::Sequences& seqs = *core.sequences();
  fr::Sequences::Args a{length, period, end_arg(end), beta};
  const auto cap_dim = static_cast<npy_intp>(length);
  if (static_cast<std::size_t>(cap_dim) != length || n > (std::size_t(1) << 40) / length)
    fr::throw_invalid("sample_sequences: batch_size * length is too large");
  std::shared_ptr<fr::SequenceItems> x;
  std::size_t count = 0;
  {
    ReleaseGil nogil;  // building an index on first use is O(size)
    x = seqs.index(period, fr::Sequences::need_of(a));
    count = seqs.admissible(*x, length, n);
  }
  if (n > count)
    fr::throw_invalid("sample_sequences: batch_size " + std::to_string(n) + " is larger than the number of "
                      "admissible starts (" + std::to_string(count) + " for length=" + std::to_string(length) +
                      ", period=" + std::to_string(period) + ", end='" + end + "')");
  const auto B = static_cast<npy_intp>(n), L = static_cast<npy_intp>(length);
  const std::vector<Field>& fields = b.batch_fields();
  fr::SequenceOut o;
  o.batch = n;
  o.length = length;
  py::list arrays;
  for (const Field& f : fields) {
    std::vector<npy_intp> dims{B, L};
    dims.insert(dims.end(), f.shape.begin(), f.shape.end());
    py::object arr = zeros(dims, f.descr());
    o.fields.push_back(data_of<std::uint8_t>(arr));
    o.row_bytes.push_back(f.row_bytes);
    arrays.append(arr);
  }
  py::object mask = zeros({B, L}, NPY_BOOL), first = zeros({B, L}, NPY_BOOL), slots = zeros({B, L}, NPY_INT64);
  py::object starts = zeros({B}, NPY_INT64), gens = zeros({B}, NPY_UINT64), lengths = zeros({B}, NPY_INT64);
  py::object items = py::none(), weights = py::none();
  o.mask = data_of<std::uint8_t>(mask);
  o.is_first = data_of<std::uint8_t>(first);
  o.slots = data_of<std::int64_t>(slots);
  o.starts = data_of<std::int64_t>(starts);
  o.generations = data_of<std::uint64_t>(gens);
  o.lengths = data_of<std::int64_t>(lengths);
  if (x->prioritized()) {
    items = zeros({B}, NPY_INT64);
    weights = zeros({B}, NPY_FLOAT32);
    o.items = data_of<std::int64_t>(items);
    o.weights = data_of<float>(weights);
  }
  std::size_t T;
  {
    ReleaseGil nogil;
    fr::Rng rng(core.seed(), core.next_stream());
    T = seqs.sample(*x, a, rng, o);
  }
  py::dict out;
  const auto Tn = static_cast<npy_intp>(T);
  for (std::size_t f = 0; f < fields.size(); ++f) {
    py::object arr = arrays[f];
    out[fields[f].key] = Tn == L ? arr : head_view(arr, B, Tn);
  }
  if (Tn != L) {
    mask = head_view(mask, B, Tn);
    first = head_view(first, B, Tn);
    slots = head_view(slots, B, Tn);
  }
  return py::make_tuple(out, mask, first, slots, starts, gens, lengths, items, weights);
}

std::size_t update_sequence_priorities(Buffer& b, std::size_t length, std::size_t period, const std::string& end,
                                       py::handle items, py::handle starts, py::handle gens, py::handle td,
                                       py::handle trained, double eta) {
  const char* fn = "update_sequence_priorities";
  fr::ReplayCore& core = episodic_core(b, fn);
  if (!b.prioritized()) fr::throw_type(std::string(fn) + " needs a PrioritizedReplayBuffer");
  if (!(eta >= 0.0 && eta <= 1.0)) fr::throw_invalid(std::string(fn) + ": eta must be in [0, 1], got " + fr::format_real(eta));
  fr::Sequences& seqs = *core.sequences();
  // Private copies (checked, then read without the GIL).
  py::object it = exact_array(items, NPY_INT64, std::string(fn) + ": batch.items");
  py::object st = exact_array(starts, NPY_INT64, std::string(fn) + ": batch.indices");
  py::object ge = exact_array(gens, NPY_UINT64, std::string(fn) + ": batch.generations");
  py::object tdv = exact_array(td, NPY_FLOAT64, std::string(fn) + ": abs_td");
  py::object tr = exact_array(trained, NPY_BOOL, std::string(fn) + ": trained");
  const auto n = static_cast<std::size_t>(PyArray_SIZE(as_array(it)));
  const std::size_t cap = core.capacity();
  if (static_cast<std::size_t>(PyArray_SIZE(as_array(st))) != n ||
      static_cast<std::size_t>(PyArray_SIZE(as_array(ge))) != n)
    fr::throw_invalid(std::string(fn) + ": the batch's items, indices and generations must have one entry per row");
  const std::size_t cells = static_cast<std::size_t>(PyArray_SIZE(as_array(tdv)));
  if (static_cast<std::size_t>(PyArray_SIZE(as_array(tr))) != cells || (n && cells % n))
    fr::throw_invalid(std::string(fn) + ": abs_td and the mask must have the same [B, T] shape");
  const std::size_t T = n ? cells / n : 0;
  std::vector<std::int64_t> iv(data_of<std::int64_t>(it), data_of<std::int64_t>(it) + n);
  std::vector<std::int64_t> sv(data_of<std::int64_t>(st), data_of<std::int64_t>(st) + n);
  std::vector<std::uint64_t> gv(data_of<std::uint64_t>(ge), data_of<std::uint64_t>(ge) + n);
  std::vector<double> dv(data_of<double>(tdv), data_of<double>(tdv) + cells);
  std::vector<std::uint8_t> mv(data_of<std::uint8_t>(tr), data_of<std::uint8_t>(tr) + cells);
  for (std::size_t k = 0; k < n; ++k)
    if (iv[k] < 0 || static_cast<std::size_t>(iv[k]) >= cap || sv[k] < 0 || static_cast<std::size_t>(sv[k]) >= cap)
      fr::throw_index(std::string(fn) + ": row " + std::to_string(k) + " of the batch names an item or slot outside "
                      "the buffer's " + std::to_string(cap) + " slots");
  const double limit = std::ldexp(1.0, 1022) / static_cast<double>(cap);
  for (std::size_t k = 0; k < cells; ++k) {
    if (!(std::isfinite(dv[k]) && dv[k] >= 0.0))
      fr::throw_invalid(std::string(fn) + ": abs_td must be finite and >= 0, got " + fr::format_real(dv[k]) +
                        " at row " + std::to_string(k / std::max<std::size_t>(T, 1)) + ", step " +
                        std::to_string(k % std::max<std::size_t>(T, 1)));
    if (!(seqs.leaf_of(dv[k]) <= limit))
      fr::throw_invalid(std::string(fn) + ": abs_td " + fr::format_real(dv[k]) +
                        " gives a leaf (p + eps)**alpha beyond 2**1022 / capacity");
  }
  std::shared_ptr<fr::SequenceItems> x = seqs.find(period, fr::Sequences::need_of({length, period, end_arg(end), 0.0}));
  if (!x) return n;  // the index was dropped (clear, load): every row is stale
  ReleaseGil nogil;
  return seqs.update_priorities(*x, iv.data(), sv.data(), gv.data(), dv.data(), mv.data(), n, T, eta);
}

// update_field(name, indices, values, generations): stored column `name` at the given stored slots. Values were
// converted by the Python layer to the field's dtype and shape [n, *shape]. With generations (uint64[n], or None),
// a row whose slot holds another generation now is skipped. Returns the number skipped.
std::size_t update_field(Buffer& b, const std::string& name, py::handle indices, py::handle values,
                         py::handle generations) {
  const char* fn = "update_field";
  if (b.multi()) fr::throw_type(std::string(fn) + " is not available for a multi-task buffer yet");
  fr::ReplayCore& core = b.core();
  const std::vector<Field>& stored = b.stored_fields();
  std::size_t c = stored.size();
  for (std::size_t i = 0; i < stored.size(); ++i)
    if (stored[i].name == name) c = i;
  if (c == stored.size()) fr::throw_invalid(std::string(fn) + ": no stored field '" + name + "'");
  const Field& f = stored[c];
  py::object ia = index_array(fn, indices);
  const auto n = static_cast<std::size_t>(PyArray_SIZE(as_array(ia)));
  py::object va = exact_array(values, f.type_num, std::string(fn) + ": values");
  if (static_cast<std::size_t>(PyArray_NBYTES(as_array(va))) != n * f.row_bytes)
    fr::throw_invalid(std::string(fn) + ": values must hold one row of field '" + name + "' per index");
  std::vector<std::int64_t> idx(data_of<std::int64_t>(ia), data_of<std::int64_t>(ia) + n);
  std::vector<std::uint8_t> rows(data_of<std::uint8_t>(va), data_of<std::uint8_t>(va) + n * f.row_bytes);
  std::vector<std::uint64_t> gens;
  if (!generations.is_none()) {
    py::object ga = uint_array(fn, "generations", generations);
    if (static_cast<std::size_t>(PyArray_SIZE(as_array(ga))) != n)
      fr::throw_invalid(std::string(fn) + ": generations must have one entry per index");
    gens.assign(data_of<std::uint64_t>(ga), data_of<std::uint64_t>(ga) + n);
  }
  core.check_indices(fn, idx.data(), n);
  const fr::Column& col = core.column(c);
  fr::Ring& ring = const_cast<fr::Ring&>(core.ring());
  ReleaseGil nogil;
  std::unique_lock<fr::ForkSafeMutex> lock;  // episodic: serialised with adds
  if (core.episodes()) lock = std::unique_lock<fr::ForkSafeMutex>(core.episodes()->add_mutex());
  std::size_t skipped = 0;
  for (std::size_t k = 0; k < n; ++k) {
    const auto slot = static_cast<std::size_t>(idx[k]);
    std::uint64_t seq = 0;
    bool held = false;
    for (unsigned tries = 0;; ++tries) {
      seq = gens.empty() ? ring.seq_acquire(slot) : 2 * gens[k];
      if (seq != 0 && ring.hold(slot, seq)) {
        held = true;
        break;
      }
      if (!gens.empty()) break;  // the slot holds another generation now: stale
      if (tries > 64) std::this_thread::yield();  // an add is writing the slot: the new row gets the value
    }
    if (!held) {
      ++skipped;
      continue;
    }
    fr::store_shared(const_cast<std::uint8_t*>(col.row(slot)), rows.data() + k * f.row_bytes, f.row_bytes);
    ring.release(slot, seq);
  }
  return skipped;
}

py::object sequence_leaves(Buffer& b, std::size_t length, std::size_t period, const std::string& end) {
  fr::ReplayCore& core = episodic_core(b, "_sequence_leaves");
  auto x = core.sequences()->find(period, fr::Sequences::need_of({length, period, end_arg(end), 0.0}));
  if (!x || !x->prioritized()) return py::none();
  py::object out = new_array(static_cast<npy_intp>(core.capacity()), NPY_FLOAT64);
  auto* o = data_of<double>(out);
  for (std::size_t i = 0; i < core.capacity(); ++i) o[i] = x->tree().leaf(i);
  return out;
}

}  // namespace

void init_sequences(py::class_<Buffer>& cls) {
  cls.def("_sample_sequences", &sample_sequences, py::arg("batch_size"), py::arg("length"), py::arg("period"),
          py::arg("end"), py::arg("beta"))
      .def("_update_sequence_priorities", &update_sequence_priorities, py::arg("length"), py::arg("period"),
           py::arg("end"), py::arg("items"), py::arg("starts"), py::arg("generations"), py::arg("abs_td"),
           py::arg("trained"), py::arg("eta"))
      .def("_update_field", &update_field, py::arg("name"), py::arg("indices"), py::arg("values"),
           py::arg("generations"))
      .def("_sequence_leaves", &sequence_leaves, py::arg("length"), py::arg("period"), py::arg("end"));
}

}  // namespace fastreplay_py
