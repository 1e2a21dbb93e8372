// The casting rule of `add`: how one Python value becomes contiguous rows of a field's dtype.
//
// numpy arrays and numpy scalars must cast to the field's dtype under numpy's 'same_kind' rule; plain Python
// values (int, float, bool, lists) go by kind, in the spirit of NEP 50's weak Python scalars: bool anywhere,
// integers into integer/float/complex fields, floats into float/complex, complex into complex; a Python int must
// fit the field's range. A value has the field's row shape (one row) or a leading axis N (N rows).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "bindings/numpy_util.h"

namespace fastreplay_py {

// One stored field, as the bindings see it.
struct Field {
  std::string name;
  py::str key;                  // interned name: the Batch key
  std::vector<npy_intp> shape;  // row shape
  py::object dtype;             // numpy.dtype (native byte order)
  int type_num = 0;
  char kind = 0;
  std::size_t itemsize = 0;
  std::size_t row_bytes = 0;

  Field(std::string field_name, py::handle row_shape, py::handle field_dtype);
  PyArray_Descr* descr() const { return reinterpret_cast<PyArray_Descr*>(dtype.ptr()); }
  std::string shape_text() const;          // "(4,)"
  std::string batched_shape_text() const;  // "(N, 4)"
};

// One converted value: a pointer to `rows` contiguous rows of the field's dtype.
struct Source {
  const void* ptr = nullptr;
  npy_intp rows = 1;
  bool batched = false;
  py::object keep;  // owns converted memory, if any
  alignas(16) unsigned char scalar[16];  // one value of at most 16 bytes (the fast paths check the field's itemsize)
};

// Convert `v` for field `f` into `s`, checking shape and dtype; `fn` names the call in errors. GIL held.
void convert(const char* fn, const Field& f, PyObject* v, Source& s);

}  // namespace fastreplay_py
