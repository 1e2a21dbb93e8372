// numpy helpers of the bindings: the numpy C API set up for several translation units, error text, argument
// parsing into contiguous arrays, and zero-copy views. Every failure throws through the core's error vocabulary
// (fastreplay/common.h), which module.cpp translates into Python exceptions.
#pragma once

#include <pybind11/pybind11.h>

// One numpy C-API table for the whole extension: module.cpp imports it, the other files only refer to it.
#define PY_ARRAY_UNIQUE_SYMBOL FASTREPLAY_NUMPY_API
#ifndef FASTREPLAY_NUMPY_IMPORT
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fastreplay/common.h"

namespace fastreplay_py {

namespace py = pybind11;
namespace fr = fastreplay;

// Text for messages.
std::string shape_str(const npy_intp* dims, int nd);     // "(3,)", "(2, 4)"
std::string dtype_str(PyArray_Descr* d);                  // "float32"
std::string type_name(PyObject* o);                       // Python type name
inline PyArrayObject* as_array(PyObject* o) { return reinterpret_cast<PyArrayObject*>(o); }
inline PyArrayObject* as_array(const py::object& o) { return as_array(o.ptr()); }

// A Python int (or numpy integer) as int64; TypeError "<what><what_suffix> must be an int, got <type>" otherwise
// (the text is only built for an error).
long long as_int(PyObject* o, const char* what, const char* what_suffix = "");
// A positive batch size: `as_int`, then ValueError "<fn>: batch_size must be positive, got <n>".
std::size_t batch_size_arg(PyObject* o, const char* fn);

// A real-number argument such as beta: a float, an int or anything with __float__/__index__ (numpy scalars,
// 0-d tensors), not complex; TypeError "<fn>: <name> must be a real number, got <type>" otherwise. An int past
// float's range is +-inf. Range rules are the core's.
double real_arg(PyObject* o, const char* fn, const char* name);

// `v` converted to a contiguous 1-d array of `type_num`: `what` names it in errors ("<fn>: indices ...").
// index_array: integer kinds only (int64); float_array: bool/int/float kinds (float64); uint_array: non-negative
// integers (uint64).
py::object index_array(const char* fn, py::handle v);
py::object float_array(const char* fn, const char* what, py::handle v);
py::object uint_array(const char* fn, const char* what, py::handle v);
// An aligned C-contiguous native array of exactly this dtype (converted in layout, never in type).
py::object exact_array(py::handle v, int type_num, const std::string& what);
// A fresh uint64/float64/... 1-d array of n elements.
py::object new_array(npy_intp n, int type_num);
template <class T>
T* data_of(const py::object& a) {
  return static_cast<T*>(PyArray_DATA(as_array(a)));
}

// An array of `dims` viewing `data`, kept alive by `base`: C-contiguous, or with `row_stride` (non-zero) bytes
// between two entries of the first axis (a field of packed records) and the rest of each row contiguous. Borrows
// `descr`.
py::object make_view(PyArray_Descr* descr, const std::vector<npy_intp>& dims, void* data, PyObject* base,
                     bool writeable, npy_intp row_stride = 0);

}  // namespace fastreplay_py
