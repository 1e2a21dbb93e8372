// The casting rule of `add` (see convert.h).
#include "bindings/convert.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>

namespace fastreplay_py {

namespace {

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

[[noreturn]] void out_of_range(const char* fn, const Field& f, const std::string& value) {
  fr::throw_invalid(std::string(fn) + ": field '" + f.name + "' expects dtype " + dtype_str(f.descr()) + ", got " +
                    value + ", which is out of its range");
}

[[noreturn]] void wrong_dtype(const char* fn, const Field& f, const std::string& got, bool numpy_value) {
  fr::throw_type(std::string(fn) + ": field '" + f.name + "' expects dtype " + dtype_str(f.descr()) +
                 (numpy_value ? " (or one that casts to it under numpy's 'same_kind' rule)"
                              : " (Python values of a compatible kind)") +
                 ", got " + got);
}

template <class T>
void put(Source& s, T v) {
  static_assert(sizeof(T) <= sizeof(Source::scalar), "a scalar must fit Source::scalar");
  std::memcpy(s.scalar, &v, sizeof(T));
}

// x into an integer field of type T, if it fits.
template <class T>
void put_int(const char* fn, const Field& f, long long x, Source& s) {
  using L = std::numeric_limits<T>;
  const bool fits = std::is_signed<T>::value
                        ? (x >= static_cast<long long>(L::min()) && x <= static_cast<long long>(L::max()))
                        : (x >= 0 && static_cast<unsigned long long>(x) <= static_cast<unsigned long long>(L::max()));
  if (!fits) out_of_range(fn, f, std::to_string(x));
  put<T>(s, static_cast<T>(x));
}

// A Python float/int/bool into a scalar field; false to take the general path. Every value written here is at
// most 8 bytes (fields wider than Source::scalar, such as clongdouble, go the general path).
bool scalar_fast(const char* fn, const Field& f, PyObject* v, Source& s) {
  if (f.itemsize > sizeof(s.scalar)) return false;
  s.rows = 1;
  s.batched = false;
  s.ptr = s.scalar;
  if (PyBool_Check(v)) {
    const bool b = v == Py_True;
    switch (f.type_num) {
      case NPY_BOOL: put<npy_bool>(s, b); return true;
      case NPY_FLOAT: put<float>(s, b); return true;
      case NPY_DOUBLE: put<double>(s, b); return true;
      case NPY_LONG:
      case NPY_LONGLONG:
        if (f.itemsize != 8) return false;
        put<std::int64_t>(s, b);
        return true;
      default: return false;
    }
  }
  if (PyFloat_CheckExact(v)) {
    const double d = PyFloat_AS_DOUBLE(v);
    switch (f.type_num) {
      case NPY_FLOAT: put<float>(s, static_cast<float>(d)); return true;
      case NPY_DOUBLE: put<double>(s, d); return true;
      default:
        if (f.kind == 'f' || f.kind == 'c') return false;
        fr::throw_type(std::string(fn) + ": field '" + f.name + "' expects dtype " + dtype_str(f.descr()) +
                       ", got a Python float");
    }
  }
  // A Python int: it must fit the field's integer type.
  if (f.kind == 'b')
    fr::throw_type(std::string(fn) + ": field '" + f.name + "' expects dtype bool, got a Python int (use True/False)");
  int overflow = 0;
  const long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
  if (overflow) return false;
  if (f.kind == 'i') {
    switch (f.itemsize) {
      case 1: put_int<std::int8_t>(fn, f, x, s); return true;
      case 2: put_int<std::int16_t>(fn, f, x, s); return true;
      case 4: put_int<std::int32_t>(fn, f, x, s); return true;
      case 8: put_int<std::int64_t>(fn, f, x, s); return true;
      default: return false;
    }
  }
  if (f.kind == 'u') {
    switch (f.itemsize) {
      case 1: put_int<std::uint8_t>(fn, f, x, s); return true;
      case 2: put_int<std::uint16_t>(fn, f, x, s); return true;
      case 4: put_int<std::uint32_t>(fn, f, x, s); return true;
      case 8: put_int<std::uint64_t>(fn, f, x, s); return true;
      default: return false;
    }
  }
  if (f.type_num == NPY_FLOAT) { put<float>(s, static_cast<float>(x)); return true; }
  if (f.type_num == NPY_DOUBLE) { put<double>(s, static_cast<double>(x)); return true; }
  return false;
}

// A numpy scalar into a scalar field; false to take the general path.
bool numpy_scalar_fast(const char* fn, const Field& f, PyObject* v, Source& s) {
  PyArray_Descr* d = PyArray_DescrFromScalar(v);
  if (!d) throw py::error_already_set();
  py::object hold = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(d));
  // Both the scalar and the field's value must fit Source::scalar: a 32-byte clongdouble field (or source) takes
  // the general path, which converts into an array it owns.
  if (PyDataType_ELSIZE(d) > sizeof(s.scalar) || f.itemsize > sizeof(s.scalar) || !std::strchr("biufc", d->kind))
    return false;
  s.rows = 1;
  s.batched = false;
  s.ptr = s.scalar;
  if (d->type_num == f.type_num && PyArray_ISNBO(d->byteorder)) {
    PyArray_ScalarAsCtype(v, s.scalar);
    return true;
  }
  if (!PyArray_CanCastTypeTo(d, f.descr(), NPY_SAME_KIND_CASTING)) wrong_dtype(fn, f, dtype_str(d), true);
  if (PyArray_CastScalarToCtype(v, s.scalar, f.descr()) < 0) throw py::error_already_set();
  return true;
}

// True if `arr` is an object array whose every element is a Python int (numpy builds one for ints that fit no
// 64-bit type): such values are integers of unbounded size, and the kind rule treats them as integers.
bool python_big_ints(PyArrayObject* arr) {
  if (PyArray_DESCR(arr)->type_num != NPY_OBJECT || PyArray_SIZE(arr) == 0) return false;
  py::object flat = py::reinterpret_steal<py::object>(PyArray_Ravel(arr, NPY_CORDER));
  if (!flat) throw py::error_already_set();
  auto** items = static_cast<PyObject**>(PyArray_DATA(as_array(flat)));
  for (npy_intp k = 0; k < PyArray_SIZE(as_array(flat)); ++k)
    if (!PyLong_CheckExact(items[k])) return false;
  return true;
}

// Every value of an integer array made from Python ints must fit field f's integer type.
void check_int_range(const char* fn, const Field& f, PyArrayObject* arr) {
  if (PyArray_SIZE(arr) == 0) return;
  py::object lo = py::reinterpret_steal<py::object>(PyArray_Min(arr, NPY_RAVEL_AXIS, nullptr));
  py::object hi = py::reinterpret_steal<py::object>(PyArray_Max(arr, NPY_RAVEL_AXIS, nullptr));
  if (!lo || !hi) throw py::error_already_set();
  py::object info = py::module_::import("numpy").attr("iinfo")(f.dtype);
  for (const py::object& v : {lo, hi}) {
    py::int_ x(v);
    if (x < info.attr("min") || x > info.attr("max")) out_of_range(fn, f, py::str(x).cast<std::string>());
  }
}

}  // namespace

Field::Field(std::string field_name, py::handle row_shape, py::handle field_dtype)
    : name(std::move(field_name)), dtype(py::reinterpret_borrow<py::object>(field_dtype)) {
  key = py::reinterpret_steal<py::str>(PyUnicode_InternFromString(name.c_str()));
  if (!key) throw py::error_already_set();
  for (auto d : row_shape.cast<py::tuple>()) shape.push_back(d.cast<npy_intp>());
  PyArray_Descr* d = descr();
  type_num = d->type_num;
  kind = d->kind;
  itemsize = static_cast<std::size_t>(PyDataType_ELSIZE(d));
  std::size_t elems = 1;
  for (npy_intp s : shape) elems = fr::checked_mul(elems, static_cast<std::size_t>(s));
  row_bytes = fr::checked_mul(elems, itemsize);
}

std::string Field::shape_text() const { return shape_str(shape.data(), static_cast<int>(shape.size())); }

std::string Field::batched_shape_text() const {
  std::vector<npy_intp> d(shape);
  d.insert(d.begin(), -1);
  return "(N" + shape_str(d.data(), static_cast<int>(d.size())).substr(3);
}

void convert(const char* fn, const Field& f, PyObject* v, Source& s) {
  const int rnd = static_cast<int>(f.shape.size());
  if (rnd == 0 && (PyFloat_CheckExact(v) || PyLong_CheckExact(v) || PyBool_Check(v)) && scalar_fast(fn, f, v, s))
    return;
  // numpy scalars: what argmax, vector envs and reductions hand out.
  if (rnd == 0 && PyArray_IsScalar(v, Generic) && numpy_scalar_fast(fn, f, v, s)) return;

  const bool numpy_value = PyArray_Check(v) || PyArray_IsScalar(v, Generic);
  py::object holder;
  PyArrayObject* arr = nullptr;
  if (PyArray_Check(v)) {
    arr = as_array(v);
  } else {
    holder = py::reinterpret_steal<py::object>(PyArray_FromAny(v, nullptr, 0, 0, 0, nullptr));
    if (!holder) {
      PyErr_Clear();
      fr::throw_type(std::string(fn) + ": field '" + f.name + "' expects an array of " + dtype_str(f.descr()) +
                     " with shape " + f.shape_text() + " or " + f.batched_shape_text() + ", got " + type_name(v) +
                     " that numpy cannot convert");
    }
    arr = as_array(holder);
  }
  // Shape: one row, or N rows.
  const int nd = PyArray_NDIM(arr);
  const npy_intp* dims = PyArray_DIMS(arr);
  if (nd == rnd && std::equal(f.shape.begin(), f.shape.end(), dims)) {
    s.rows = 1;
    s.batched = false;
  } else if (nd == rnd + 1 && std::equal(f.shape.begin(), f.shape.end(), dims + 1)) {
    s.rows = dims[0];
    s.batched = true;
  } else {
    fr::throw_invalid(std::string(fn) + ": field '" + f.name + "' expects shape " + f.shape_text() + " or " +
                      f.batched_shape_text() + ", got " + shape_str(dims, nd));
  }
  // Dtype: used in place when it already matches, else converted under the rule above.
  PyArray_Descr* from = PyArray_DESCR(arr);
  if (from->type_num == f.type_num && PyArray_ISCARRAY_RO(arr) && PyArray_ISNOTSWAPPED(arr)) {
    s.ptr = PyArray_DATA(arr);
    s.keep = holder;
    return;
  }
  const char from_kind = !numpy_value && python_big_ints(arr) ? 'i' : from->kind;
  const bool castable = numpy_value ? PyArray_CanCastTypeTo(from, f.descr(), NPY_SAME_KIND_CASTING)
                                    : python_kind_castable(from_kind, f.kind);
  if (!castable) wrong_dtype(fn, f, dtype_str(from), numpy_value);
  if (!numpy_value && (from_kind == 'i' || from_kind == 'u') && (f.kind == 'i' || f.kind == 'u'))
    check_int_range(fn, f, arr);  // Python ints must fit, as in the scalar fast path
  Py_INCREF(f.descr());
  PyObject* c = PyArray_FromArray(arr, f.descr(), NPY_ARRAY_CARRAY_RO | NPY_ARRAY_FORCECAST);
  if (!c) throw py::error_already_set();
  s.keep = py::reinterpret_steal<py::object>(c);
  s.ptr = PyArray_DATA(as_array(c));
}

}  // namespace fastreplay_py
