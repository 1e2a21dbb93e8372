// Batch objects (see batch_object.h).
#include "bindings/batch_object.h"

#include <structmember.h>  // PyMemberDef: where Batch's __slots__ live

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace fastreplay_py {

namespace {

constexpr const char* kBatchCapsule = "fastreplay.batch_memory";

py::object g_batch_type;  // fastreplay.Batch, registered by the Python package at import
py::object g_empty_tuple;
py::str g_indices, g_weights, g_generations;
Py_ssize_t g_slot_offset[3] = {-1, -1, -1};  // byte offsets of Batch's __slots__ (indices, generations, weights)

void capsule_destructor(PyObject* cap) {
  delete static_cast<fr::BatchBlock*>(PyCapsule_GetPointer(cap, kBatchCapsule));
}

void set_attr(const py::object& o, const py::str& name, const py::object& v) {
  if (PyObject_SetAttr(o.ptr(), name.ptr(), v.ptr()) < 0) throw py::error_already_set();
}

// A 1-d view of n elements of a builtin dtype.
py::object typed_view(int type_num, std::size_t n, void* data, PyObject* base) {
  PyArray_Descr* d = PyArray_DescrFromType(type_num);
  py::object hold = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(d));
  return make_view(d, {static_cast<npy_intp>(n)}, data, base, true);
}

std::string dtype_name(int type_num) {
  PyArray_Descr* d = PyArray_DescrFromType(type_num);
  py::object hold = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(d));
  return dtype_str(d);
}

}  // namespace

py::object wrap(std::unique_ptr<fr::BatchBlock> owned, const std::vector<Field>& fields, bool with_generations,
                BatchParts* parts) {
  fr::BatchBlock* mem = owned.get();
  py::capsule cap(mem, kBatchCapsule, capsule_destructor);
  owned.release();
  py::object batch;
  {  // tp_new only: Batch.__init__ (for batches users build by hand) is skipped; every attribute is set below
    if (!g_batch_type)  // only reachable by using fastreplay._core without the package (which registers it)
      throw std::runtime_error("fastreplay._core: no Batch class registered; import fastreplay.buffer first");
    auto* t = reinterpret_cast<PyTypeObject*>(g_batch_type.ptr());
    PyObject* b = t->tp_new(t, g_empty_tuple.ptr(), nullptr);
    if (!b) throw py::error_already_set();
    batch = py::reinterpret_steal<py::object>(b);
  }
  std::vector<npy_intp> dims;
  for (std::size_t i = 0; i < fields.size(); ++i) {
    const Field& f = fields[i];
    dims.assign(1, static_cast<npy_intp>(mem->n));
    dims.insert(dims.end(), f.shape.begin(), f.shape.end());
    py::object a = make_view(f.descr(), dims, mem->rows[i], cap.ptr(), true);
    if (PyDict_SetItem(batch.ptr(), f.key.ptr(), a.ptr()) < 0) throw py::error_already_set();
    if (parts) parts->arrays.push_back(a.ptr());
  }
  const bool weights = mem->weights != nullptr;
  py::object indices = typed_view(NPY_INT64, mem->n, mem->indices, cap.ptr());
  py::object gens =
      weights || with_generations ? typed_view(NPY_UINT64, mem->n, mem->generations, cap.ptr()) : py::none();
  py::object w = weights ? typed_view(NPY_FLOAT32, mem->n, mem->weights, cap.ptr()) : py::none();
  set_attr(batch, g_indices, indices);
  set_attr(batch, g_generations, gens);
  set_attr(batch, g_weights, w);
  if (parts) {
    parts->capsule = cap.ptr();
    for (const py::object* o : {&indices, &gens, &w}) parts->arrays.push_back(o->is_none() ? nullptr : o->ptr());
  }
  return batch;
}

Target new_batch(std::shared_ptr<fr::BlockPool> pool, const fr::BatchLayout& layout, const std::vector<Field>& fields,
                 bool with_generations) {
  auto block = std::make_unique<fr::BatchBlock>(std::move(pool), layout);
  Target t = target_of(*block);
  t.batch = wrap(std::move(block), fields, with_generations);
  return t;
}

Target target_of(const fr::BatchBlock& block) {
  Target t;
  t.n = block.n;
  t.indices = block.indices;
  t.generations = block.generations;
  t.weights = block.weights;
  t.block_rows = block.rows.data();  // the block outlives the target: the batch or the caller owns it
  return t;
}

Target reuse_batch(const char* fn, py::handle out, const std::vector<Field>& fields, std::size_t n, bool prioritized) {
  auto where = [fn] { return std::string(fn) + ": out"; };  // built only for an error message
  if (!PyDict_Check(out.ptr()))
    fr::throw_type(where() + " must be a Batch returned by sample(), got " + type_name(out.ptr()));
  Target t;
  t.batch = py::reinterpret_borrow<py::object>(out);
  t.n = n;
  auto check = [&](py::object v, const std::string& what, int type_num, const std::vector<npy_intp>& row) -> void* {
    if (!v || !PyArray_Check(v.ptr())) fr::throw_type(where() + " has no array '" + what + "'");
    PyArrayObject* a = as_array(v);
    const bool shape_ok = PyArray_NDIM(a) == static_cast<int>(row.size()) + 1 &&
                          PyArray_DIMS(a)[0] == static_cast<npy_intp>(n) &&
                          std::equal(row.begin(), row.end(), PyArray_DIMS(a) + 1);
    if (PyArray_DESCR(a)->type_num != type_num || !shape_ok) {
      std::vector<npy_intp> want(row);
      want.insert(want.begin(), static_cast<npy_intp>(n));
      fr::throw_invalid(where() + "['" + what + "'] must be " + dtype_name(type_num) + " with shape " +
                        shape_str(want.data(), static_cast<int>(want.size())) + ", got " +
                        dtype_str(PyArray_DESCR(a)) + " with shape " + shape_str(PyArray_DIMS(a), PyArray_NDIM(a)));
    }
    if (!PyArray_ISCARRAY(a) || !PyArray_ISNOTSWAPPED(a))
      fr::throw_invalid(where() + "['" + what + "'] must be writeable and C-contiguous");
    t.keep.push_back(std::move(v));
    return PyArray_DATA(a);
  };
  // A Batch itself: its slots read directly (an unset slot is a missing array); else attribute lookups.
  const bool direct = Py_TYPE(out.ptr()) == batch_type() && batch_slots_known();
  auto attr = [&](const py::str& name, BatchSlot slot) {  // a missing attribute is reported as a missing array
    if (direct) {
      PyObject* v = batch_slot(out.ptr(), slot);
      if (v) return py::reinterpret_borrow<py::object>(v);
      fr::throw_type(where() + " has no array '" + name.cast<std::string>() + "'");
    }
    py::object v = py::reinterpret_steal<py::object>(PyObject_GetAttr(out.ptr(), name.ptr()));
    if (!v) {
      if (!PyErr_ExceptionMatches(PyExc_AttributeError)) throw py::error_already_set();
      PyErr_Clear();
      fr::throw_type(where() + " has no array '" + name.cast<std::string>() + "'");
    }
    return v;
  };
  t.own_rows.resize(fields.size());
  t.keep.reserve(fields.size() + 3);
  for (std::size_t i = 0; i < fields.size(); ++i) {
    PyObject* item = PyDict_GetItemWithError(out.ptr(), fields[i].key.ptr());  // borrowed: owned at once
    if (!item && PyErr_Occurred()) throw py::error_already_set();
    t.own_rows[i] = static_cast<std::uint8_t*>(
        check(py::reinterpret_borrow<py::object>(item), fields[i].name, fields[i].type_num, fields[i].shape));
  }
  t.indices = static_cast<std::int64_t*>(check(attr(g_indices, kSlotIndices), "indices", NPY_INT64, {}));
  if (prioritized) {
    t.generations =
        static_cast<std::uint64_t*>(check(attr(g_generations, kSlotGenerations), "generations", NPY_UINT64, {}));
    t.weights = static_cast<float*>(check(attr(g_weights, kSlotWeights), "weights", NPY_FLOAT32, {}));
  }
  return t;
}

bool is_batch(PyObject* o) {
  if (!g_batch_type) return false;
  const int r = PyObject_IsInstance(o, g_batch_type.ptr());
  if (r < 0) throw py::error_already_set();
  return r == 1;
}

PyTypeObject* batch_type() { return reinterpret_cast<PyTypeObject*>(g_batch_type.ptr()); }

bool batch_slots_known() { return g_slot_offset[0] >= 0 && g_slot_offset[1] >= 0 && g_slot_offset[2] >= 0; }

PyObject* batch_slot(PyObject* batch, BatchSlot slot) {
  const Py_ssize_t at = g_slot_offset[slot];
  return at < 0 ? nullptr : *reinterpret_cast<PyObject**>(reinterpret_cast<char*>(batch) + at);
}

py::object batch_indices(PyObject* batch) { return py::reinterpret_borrow<py::object>(batch).attr(g_indices); }
py::object batch_generations(PyObject* batch) { return py::reinterpret_borrow<py::object>(batch).attr(g_generations); }

void init_batch_object(py::module_& m) {
  g_indices = py::reinterpret_steal<py::str>(PyUnicode_InternFromString("indices"));
  g_weights = py::reinterpret_steal<py::str>(PyUnicode_InternFromString("weights"));
  g_generations = py::reinterpret_steal<py::str>(PyUnicode_InternFromString("generations"));
  g_empty_tuple = py::tuple();
  m.def(
      "_set_batch_type",
      [](py::object t) {
        if (!PyType_Check(t.ptr()) || !PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(t.ptr()), &PyDict_Type))
          fr::throw_type("_set_batch_type: expected a dict subclass");
        g_batch_type = t;
        // Where its __slots__ live: member descriptors hold their offsets (-1, and no recycling, if not slots).
        const py::str* names[3] = {&g_indices, &g_generations, &g_weights};
        for (int s = 0; s < 3; ++s) {
          py::object d = py::reinterpret_steal<py::object>(PyObject_GetAttr(t.ptr(), names[s]->ptr()));
          if (!d) PyErr_Clear();
          g_slot_offset[s] = d && Py_IS_TYPE(d.ptr(), &PyMemberDescr_Type)
                                 ? reinterpret_cast<PyMemberDescrObject*>(d.ptr())->d_member->offset
                                 : -1;
        }
      },
      py::arg("batch_type"), "Register the Batch class (a dict subclass) that sample() returns.");
  // Free the stored objects before the interpreter tears the module down.
  m.add_object("_cleanup", py::capsule([]() {
                 g_batch_type = py::object();
                 g_empty_tuple = py::object();
               }));
}

}  // namespace fastreplay_py
