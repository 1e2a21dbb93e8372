// Fastcall methods (see fastcall.h): argument parsing, error translation, and the hot methods themselves.
#include "bindings/fastcall.h"

#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

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

void add_fast_method(py::handle cls, PyMethodDef* def) {
  PyObject* descr = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cls.ptr()), def);
  if (!descr) throw py::error_already_set();
  const int rc = PyObject_SetAttrString(cls.ptr(), def->ml_name, descr);
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

PyMethodDef g_sample_uniform = {
    "sample", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(sample_uniform)),
    METH_FASTCALL | METH_KEYWORDS,
    "sample($self, batch_size, *, out=None, tasks=None)\n--\n\n"
    "Draw batch_size transitions uniformly at random (with replacement) and copy their rows into a Batch\n"
    "that owns its memory: batch[name] is field_dtype[batch_size, *field_shape], batch.indices int64[B]\n"
    "(batch.weights and batch.generations are None). With out=batch (a Batch from an earlier call), its\n"
    "arrays are refilled in place instead. Raises ValueError if batch_size <= 0 or the buffer is empty."};

PyMethodDef g_sample_prioritized = {
    "_sample_prioritized", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(sample_prioritized)),
    METH_FASTCALL | METH_KEYWORDS,
    "_sample_prioritized($self, batch_size, beta=0.4, *, out=None, tasks=None)\n--\n\n"
    "Stratified proportional sample: the total priority mass is cut into batch_size equal strata and one\n"
    "transition drawn in each. batch.weights is float32[B]: (N*P(i))**-beta divided by the largest such\n"
    "weight over all stored transitions, i.e. (p_min / p_i)**beta, in (0, 1]. batch.generations is\n"
    "uint64[B] (pass the batch to update_priorities). Other arrays as in ReplayBuffer.sample."};

}  // namespace

void init_fast_methods(py::handle cls) {
  add_fast_method(cls, &g_sample_uniform);
  add_fast_method(cls, &g_sample_prioritized);
}

}  // namespace fastreplay_py
