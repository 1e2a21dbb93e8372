// Fastcall methods (see fastcall.h): argument parsing, error translation, and the hot methods themselves.
#include "bindings/fastcall.h"

#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "bindings/batch_object.h"
#include "bindings/buffer.h"

namespace fastreplay_py {

void set_error_from_exception() {
  try {
    throw;
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const py::builtin_exception& e) {
    e.set_error();
  } catch (const fr::type_error& e) {
    PyErr_SetString(PyExc_TypeError, e.what());
  } catch (const std::bad_alloc&) {
    PyErr_SetString(PyExc_MemoryError, "std::bad_alloc");
  } catch (const std::out_of_range& e) {
    PyErr_SetString(PyExc_IndexError, e.what());
  } catch (const std::overflow_error& e) {
    PyErr_SetString(PyExc_OverflowError, e.what());
  } catch (const std::invalid_argument& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  } catch (const std::domain_error& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  } catch (const std::length_error& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  } catch (const std::range_error& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  } catch (...) {
    PyErr_SetString(PyExc_SystemError, "unknown C++ exception");
  }
}

bool FastArgs::parse(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, PyObject** values) const {
  const std::size_t n = names.size();
  for (std::size_t i = 0; i < n; ++i) values[i] = nullptr;
  if (static_cast<std::size_t>(nargs) > positional) {
    PyErr_Format(PyExc_TypeError, "%s() takes at most %zu positional argument%s (%zd given)", fn, positional,
                 positional == 1 ? "" : "s", nargs);
    return false;
  }
  for (Py_ssize_t i = 0; i < nargs; ++i) values[i] = args[i];
  const Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t k = 0; k < nk; ++k) {
    PyObject* key = PyTuple_GET_ITEM(kwnames, k);
    const char* s = PyUnicode_AsUTF8(key);
    if (!s) return false;
    std::size_t i = 0;
    for (const char* name : names) {
      if (std::strcmp(name, s) == 0) break;
      ++i;
    }
    if (i == n) {
      PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%s'", fn, s);
      return false;
    }
    if (values[i]) {
      PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fn, s);
      return false;
    }
    values[i] = args[nargs + k];
  }
  std::size_t i = 0;
  for (const char* name : names) {
    if (i < required && !values[i]) {
      PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fn, name);
      return false;
    }
    ++i;
  }
  return true;
}

void add_fast_method(py::handle cls, PyMethodDef* def, const char* attr) {
  PyObject* descr = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cls.ptr()), def);
  if (!descr) throw py::error_already_set();
  const int rc = PyObject_SetAttrString(cls.ptr(), attr ? attr : def->ml_name, descr);
  Py_DECREF(descr);
  if (rc < 0) throw py::error_already_set();
}

namespace {

Buffer& self_buffer(PyObject* self) { return py::handle(self).cast<Buffer&>(); }  // TypeError if never initialized

// sample(batch_size, *, out=None, tasks=None)
PyObject* sample_uniform(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  static const FastArgs spec{"sample", {"batch_size", "out", "tasks"}, 1, 1};
  PyObject* v[3];
  if (!spec.parse(args, nargs, kwnames, v)) return nullptr;
  try {
    Buffer& b = self_buffer(self);
    return b.sample(v[0], nullptr, v[1] ? v[1] : Py_None, v[2] ? v[2] : Py_None).release().ptr();
  } catch (...) {
    set_error_from_exception();
    return nullptr;
  }
}

// _sample_prioritized(batch_size, beta=0.4, *, out=None, tasks=None)
PyObject* sample_prioritized(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  static const FastArgs spec{"sample", {"batch_size", "beta", "out", "tasks"}, 2, 1};
  static PyObject* default_beta = PyFloat_FromDouble(0.4);  // immortal for the module's life
  PyObject* v[4];
  if (!spec.parse(args, nargs, kwnames, v)) return nullptr;
  try {
    Buffer& b = self_buffer(self);
    if (!b.prioritized()) b.per("sample");
    return b.sample(v[0], v[1] ? v[1] : default_beta, v[2] ? v[2] : Py_None, v[3] ? v[3] : Py_None).release().ptr();
  } catch (...) {
    set_error_from_exception();
    return nullptr;
  }
}

// `o` as numpy if it is a torch tensor (CPU or GPU: .detach().cpu().numpy()), else `o` itself (the implementation
// checks it).
py::object numpy_if_tensor(py::object o) {
  if (PyArray_Check(o.ptr()) || !PyObject_HasAttrString(o.ptr(), "detach")) return o;
  return o.attr("detach")().attr("cpu")().attr("numpy")();
}

// update_priorities(indices, priorities, generations=None): a Batch as `indices` gives its indices and (unless
// given) its generations; stale rows are skipped or raise as the buffer's `stale` option (self._raise_stale) says.
PyObject* update_priorities(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  static const FastArgs spec{"update_priorities", {"indices", "priorities", "generations"}, 3, 2};
  static PyObject* raise_stale_name = PyUnicode_InternFromString("_raise_stale");
  PyObject* v[3];
  if (!spec.parse(args, nargs, kwnames, v)) return nullptr;
  try {
    Buffer& b = self_buffer(self);
    py::object indices = py::reinterpret_borrow<py::object>(v[0]);
    py::object generations = py::reinterpret_borrow<py::object>(v[2] ? v[2] : Py_None);
    if (is_batch(v[0])) {
      if (generations.is_none()) generations = batch_generations(v[0]);
      indices = batch_indices(v[0]);
    }
    py::object priorities = numpy_if_tensor(py::reinterpret_borrow<py::object>(v[1]));
    indices = numpy_if_tensor(std::move(indices));
    py::object stale = py::reinterpret_steal<py::object>(PyObject_GetAttr(self, raise_stale_name));
    if (!stale) throw py::error_already_set();
    const int raise_stale = PyObject_IsTrue(stale.ptr());
    if (raise_stale < 0) throw py::error_already_set();
    return PyLong_FromSize_t(b.update_priorities(indices, priorities, generations, raise_stale != 0));
  } catch (...) {
    set_error_from_exception();
    return nullptr;
  }
}

PyMethodDef g_update_priorities = {
    "update_priorities", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(update_priorities)),
    METH_FASTCALL | METH_KEYWORDS,
    "update_priorities($self, indices, priorities, generations=None)\n--\n\n"
    "Set the priorities of the transitions at ``indices`` (int[B]) to ``priorities`` (float[B], finite, >= 0,\n"
    "and small enough that the leaf ``(p + eps) ** alpha`` is at most ``2**1022 / capacity``, which keeps the sum\n"
    "of all leaves finite: ValueError otherwise).\n\n"
    "Typically ``|td_error|``; stored as ``(p + eps) ** alpha``. With duplicate indices the last one wins.\n"
    "Stale rows, whose slot was overwritten since they were sampled, are skipped (or raise, see ``stale``).\n"
    "They are recognised by the batch's generations, and only by them: pass the Batch itself\n"
    "(``update_priorities(batch, td)``), or any form of its indices (the array, a copy, a list, a tensor) with\n"
    "``generations=batch.generations`` (uint64[B]). Indices alone carry no generations, so nothing is\n"
    "checked then. Everything is validated first: a rejected call changes nothing. Accepts numpy arrays,\n"
    "sequences and CPU/GPU torch tensors. Returns the number of rows skipped as stale."};

PyMethodDef g_sample_uniform = {
    "sample", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(sample_uniform)),
    METH_FASTCALL | METH_KEYWORDS,
    "sample($self, batch_size, *, out=None, tasks=None)\n--\n\n"
    "Draw batch_size transitions uniformly at random (with replacement) and copy their rows into a Batch\n"
    "that owns its memory: batch[name] is field_dtype[batch_size, *field_shape], batch.indices int64[B]\n"
    "(batch.weights and batch.generations are None). With out=batch (a Batch from an earlier call), its\n"
    "arrays are refilled in place instead. Raises ValueError if batch_size <= 0 or the buffer is empty."};

PyMethodDef g_sample_prioritized = {
    "sample", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(sample_prioritized)),
    METH_FASTCALL | METH_KEYWORDS,
    "sample($self, batch_size, beta=0.4, *, out=None, tasks=None)\n--\n\n"
    "Stratified proportional sample: the total priority mass is cut into batch_size equal strata and one\n"
    "transition drawn in each. batch.weights is float32[B]: (N*P(i))**-beta divided by the largest such\n"
    "weight over all stored transitions, i.e. (p_min / p_i)**beta, in (0, 1]. batch.generations is\n"
    "uint64[B] (pass the batch to update_priorities). Other arrays as in ReplayBuffer.sample."};

}  // namespace

void init_fast_methods(py::handle cls) {
  add_fast_method(cls, &g_sample_uniform);
  add_fast_method(cls, &g_sample_prioritized, "_sample_prioritized");  // PrioritizedReplayBuffer.sample
  add_fast_method(cls, &g_update_priorities, "_update_priorities_fast");  // PrioritizedReplayBuffer.update_priorities
}

}  // namespace fastreplay_py
