// Batch recycling (see batch_recycler.h).
#include "bindings/batch_recycler.h"

#include <utility>

namespace fastreplay_py {

namespace {

// Whether `a` is still the array wrap() built over `data` with `descr`, `flags` and shape [n, *row], referenced
// only by its one holder (the batch's dict or slot) and by no weak reference.
bool intact(PyObject* a, const void* data, PyObject* capsule, PyArray_Descr* descr, int flags, std::size_t n,
            const std::vector<npy_intp>& row) {
  if (!a || Py_REFCNT(a) != 1 || !PyArray_CheckExact(a)) return false;
  PyArrayObject* arr = as_array(a);
  if (PyArray_DATA(arr) != data || PyArray_BASE(arr) != capsule || PyArray_DESCR(arr) != descr ||
      PyArray_FLAGS(arr) != flags || reinterpret_cast<PyArrayObject_fields*>(a)->weakreflist != nullptr)
    return false;
  if (PyArray_NDIM(arr) != static_cast<int>(row.size()) + 1 || PyArray_DIMS(arr)[0] != static_cast<npy_intp>(n))
    return false;
  for (std::size_t d = 0; d < row.size(); ++d)
    if (PyArray_DIMS(arr)[d + 1] != row[d]) return false;
  return true;
}

}  // namespace

bool BatchRecycler::reusable(const Entry& e, std::size_t n, const std::vector<Field>& fields, bool with_generations) {
  if (!e.batch || e.block->n != n || e.with_generations != with_generations) return false;
  PyObject* b = e.batch.ptr();
  if (Py_REFCNT(b) != 1 || Py_TYPE(b) != batch_type() || PyDict_GET_SIZE(b) != static_cast<Py_ssize_t>(fields.size()))
    return false;
  Py_ssize_t live = 0;
  for (PyObject* a : e.arrays) live += a != nullptr;
  if (Py_REFCNT(e.capsule.ptr()) != live + 1) return false;  // the arrays' bases and the entry: nobody else
  const std::size_t nf = fields.size();
  Py_ssize_t pos = 0;
  PyObject *key, *value;
  for (std::size_t k = 0; PyDict_Next(b, &pos, &key, &value); ++k) {
    if (key != fields[k].key.ptr() || value != e.arrays[k]) return false;
    if (!intact(value, e.block->rows[k], e.capsule.ptr(), e.descrs[k], e.flags[k], n, fields[k].shape))
      return false;
  }
  static const std::vector<npy_intp> scalar_row;
  const BatchSlot slots[3] = {kSlotIndices, kSlotGenerations, kSlotWeights};
  const void* data[3] = {e.block->indices, e.block->generations, e.block->weights};
  for (int s = 0; s < 3; ++s) {
    PyObject* want = e.arrays[nf + static_cast<std::size_t>(s)];
    PyObject* have = batch_slot(b, slots[s]);
    if (!want) {
      if (have != Py_None) return false;
      continue;
    }
    const std::size_t j = nf + static_cast<std::size_t>(s);
    if (have != want || !intact(have, data[s], e.capsule.ptr(), e.descrs[j], e.flags[j], n, scalar_row))
      return false;
  }
  return true;
}

bool BatchRecycler::enabled() {
#if defined(Py_GIL_DISABLED)
  return false;
#else
  return batch_type() && batch_slots_known();
#endif
}

Target BatchRecycler::recycled(std::size_t n, const std::vector<Field>& fields, bool with_generations) const {
  if (enabled())
    for (const Entry& e : ring_)
      if (reusable(e, n, fields, with_generations)) {
        Target t = target_of(*e.block);
        t.batch = e.batch;  // held: no other caller can take it until the batch is dropped again
        return t;
      }
  return Target();
}

Target BatchRecycler::fresh(const std::shared_ptr<fr::BlockPool>& pool, const fr::BatchLayout& layout,
                            const std::vector<Field>& fields, bool with_generations) {
  const bool keep = enabled() && layout.bytes <= kMaxBytes;
  auto block = std::make_unique<fr::BatchBlock>(pool, layout);
  const fr::BatchBlock* raw = block.get();
  Target t = target_of(*block);
  BatchParts parts;
  t.batch = wrap(std::move(block), fields, with_generations, keep ? &parts : nullptr);
  if (keep) {
    Entry& e = ring_[next_];
    next_ = (next_ + 1) % kEntries;
    e.batch = t.batch;
    e.capsule = py::reinterpret_borrow<py::object>(parts.capsule);
    e.block = raw;
    e.with_generations = with_generations;
    e.arrays = std::move(parts.arrays);
    e.descrs.assign(e.arrays.size(), nullptr);
    e.flags.assign(e.arrays.size(), 0);
    for (std::size_t j = 0; j < e.arrays.size(); ++j) {
      if (!e.arrays[j]) continue;
      e.descrs[j] = PyArray_DESCR(as_array(e.arrays[j]));
      e.flags[j] = PyArray_FLAGS(as_array(e.arrays[j]));
    }
  }
  return t;
}

}  // namespace fastreplay_py
