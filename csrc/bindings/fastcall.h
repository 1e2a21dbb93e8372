// Methods called with CPython's vectorcall convention (METH_FASTCALL | METH_KEYWORDS), for the hottest calls.
//
// pybind11's dispatcher builds each keyword's name from its C string and looks it up in the call's keywords at
// every call, and converts every argument through its type casters: about 1 us of a 1.3 us sample(1, out=batch)
// (perf, 2M calls: dict lookups, siphash, string decoding and interning, malloc). A fastcall method reads its
// arguments where CPython leaves them.
#pragma once

#include <initializer_list>

#include "bindings/numpy_util.h"

namespace fastreplay_py {

// The C++ exception being handled, set as the Python error pybind11 would have raised for it (TypeError for
// fastreplay::type_error, ValueError for std::invalid_argument, IndexError for std::out_of_range, ...). Call only
// inside a catch block.
void set_error_from_exception();

// Positional-or-keyword and keyword-only arguments of a fastcall method: parse(...) fills `values` (null: not
// given) and raises TypeError as CPython does for a wrong call.
struct FastArgs {
  const char* fn;                            // "sample"
  std::initializer_list<const char*> names;  // every parameter, positional ones first
  std::size_t positional;                    // how many may be given by position
  std::size_t required;                      // how many positional ones must be given
  // Returns false with a Python error set.
  bool parse(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, PyObject** values) const;
};

// Add `def` (METH_FASTCALL | METH_KEYWORDS) to the class `cls` as its attribute `attr` (null: def->ml_name, the
// name its docstring's signature and error messages use). `def` must live as long as the module (a static).
void add_fast_method(py::handle cls, PyMethodDef* def, const char* attr = nullptr);

}  // namespace fastreplay_py
