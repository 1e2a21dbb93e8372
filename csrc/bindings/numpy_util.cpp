// numpy helpers of the bindings (see numpy_util.h).
#include "bindings/numpy_util.h"

#include <climits>
#include <cmath>
#include <cstring>
#include <sstream>

namespace fastreplay_py {

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

long long as_int(PyObject* o, const char* what, const char* what_suffix) {
  int overflow = 0;
  if (PyLong_CheckExact(o)) {  // the common case: a plain Python int
    const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (!overflow) return v;
  }
  if (PyBool_Check(o) || !(PyLong_Check(o) || PyIndex_Check(o)))
    fr::throw_type(std::string(what) + what_suffix + " must be an int, got " + type_name(o));
  py::object idx = py::reinterpret_steal<py::object>(PyNumber_Index(o));
  if (!idx) throw py::error_already_set();
  const long long v = PyLong_AsLongLongAndOverflow(idx.ptr(), &overflow);
  if (overflow)
    fr::throw_invalid(std::string(what) + what_suffix + " is out of range, got " + py::str(o).cast<std::string>());
  return v;
}

std::size_t batch_size_arg(PyObject* o, const char* fn) {
  const long long n = as_int(o, fn, ": batch_size");
  if (n <= 0) fr::throw_invalid(std::string(fn) + ": batch_size must be positive, got " + std::to_string(n));
  return static_cast<std::size_t>(n);
}

double real_arg(PyObject* o, const char* fn, const char* name) {
  if (PyFloat_CheckExact(o)) return PyFloat_AS_DOUBLE(o);
  const PyNumberMethods* nb = Py_TYPE(o)->tp_as_number;
  // As the reference: __float__ or __index__, and not complex (which has __float__ up to Python 3.9).
  if (!nb || (!nb->nb_float && !nb->nb_index) || PyComplex_Check(o))
    fr::throw_type(std::string(fn) + ": " + name + " must be a real number, got " + type_name(o));
  const double v = PyFloat_AsDouble(o);
  if (v == -1.0 && PyErr_Occurred()) {
    if (!PyErr_ExceptionMatches(PyExc_OverflowError)) throw py::error_already_set();
    PyErr_Clear();  // an int past float's range: infinite, which the caller's range check then names
    return PyObject_RichCompareBool(o, py::int_(0).ptr(), Py_LT) == 1 ? -HUGE_VAL : HUGE_VAL;
  }
  return v;
}

namespace {

// `v` as a numpy array of at most one dimension whose dtype kind is in `kinds` (any dtype when empty), converted
// to `type_num`; errors say "<fn>: <what>" and `expected` names the kinds.
py::object one_d(const char* fn, const char* what, const char* kinds, const char* expected, py::handle v,
                 int type_num) {
  // The hot path (a Batch's indices and generations, float64 priorities): already a 1-d, aligned, C-contiguous
  // array of that dtype in native byte order, which the conversion below would return as it is.
  if (PyArray_CheckExact(v.ptr())) {
    PyArrayObject* arr = as_array(v.ptr());
    if (PyArray_NDIM(arr) == 1 && PyArray_TYPE(arr) == type_num && PyArray_ISCARRAY_RO(arr) && PyArray_ISNOTSWAPPED(arr))
      return py::reinterpret_borrow<py::object>(v);
  }
  const std::string text = std::string(fn) + ": " + what;
  py::object a = py::reinterpret_steal<py::object>(PyArray_FromAny(v.ptr(), nullptr, 0, 0, 0, nullptr));
  if (!a) {
    PyErr_Clear();
    fr::throw_type(text + " must be a 1-d array of " + expected + ", got " + type_name(v.ptr()));
  }
  PyArrayObject* arr = as_array(a);
  if (PyArray_NDIM(arr) > 1)
    fr::throw_invalid(text + " must be 1-d, got shape " + shape_str(PyArray_DIMS(arr), PyArray_NDIM(arr)));
  if (!std::strchr(kinds, PyArray_DESCR(arr)->kind) && PyArray_SIZE(arr) != 0)
    fr::throw_type(text + " must be " + expected + ", got dtype " + dtype_str(PyArray_DESCR(arr)));
  // The extreme value of an integer array that may not survive the conversion, if any.
  if (PyArray_SIZE(arr) && ((type_num == NPY_INT64 && PyArray_DESCR(arr)->kind == 'u' && PyArray_ITEMSIZE(arr) == 8) ||
                            (type_num == NPY_UINT64 && PyArray_DESCR(arr)->kind == 'i'))) {
    const bool too_big = type_num == NPY_INT64;
    py::object x = py::reinterpret_steal<py::object>(too_big ? PyArray_Max(arr, NPY_RAVEL_AXIS, nullptr)
                                                             : PyArray_Min(arr, NPY_RAVEL_AXIS, nullptr));
    if (!x) throw py::error_already_set();
    if (too_big && py::cast<unsigned long long>(x) > static_cast<unsigned long long>(LLONG_MAX))
      fr::throw_index(text.substr(0, text.find(':')) + ": index " + py::str(x).cast<std::string>() + " is out of range");
    if (!too_big && py::int_(x) < py::int_(0))
      fr::throw_invalid(text + " must be non-negative, got " + py::str(x).cast<std::string>());
  }
  if (PyArray_SIZE(arr) == 0) return new_array(0, type_num);  // no values: nothing to cast (nor to warn about)
  PyObject* c = PyArray_FromAny(a.ptr(), PyArray_DescrFromType(type_num), 0, 1,
                                NPY_ARRAY_CARRAY_RO | NPY_ARRAY_FORCECAST, nullptr);
  if (!c) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(c);
}

}  // namespace

py::object index_array(const char* fn, py::handle v) {
  return one_d(fn, "indices", "iu", "integers", v, NPY_INT64);
}

py::object float_array(const char* fn, const char* what, py::handle v) {
  return one_d(fn, what, "biuf", "real numbers", v, NPY_FLOAT64);
}

py::object uint_array(const char* fn, const char* what, py::handle v) {
  return one_d(fn, what, "iu", "non-negative integers", v, NPY_UINT64);
}

py::object exact_array(py::handle v, int type_num, const std::string& what) {
  if (!PyArray_Check(v.ptr()) || PyArray_DESCR(as_array(v.ptr()))->type_num != type_num) {
    PyArray_Descr* d = PyArray_DescrFromType(type_num);
    const std::string name = dtype_str(d);
    Py_DECREF(d);
    fr::throw_type(what + " must be a numpy array of " + name);
  }
  PyObject* c = PyArray_FromAny(v.ptr(), PyArray_DescrFromType(type_num), 0, 0, NPY_ARRAY_CARRAY_RO, nullptr);
  if (!c) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(c);
}

py::object new_array(npy_intp n, int type_num) {
  PyObject* a = PyArray_SimpleNew(1, &n, type_num);
  if (!a) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(a);
}

py::object make_view(PyArray_Descr* descr, const std::vector<npy_intp>& dims, void* data, PyObject* base,
                     bool writeable, npy_intp row_stride) {
  std::vector<npy_intp> strides;
  if (row_stride != 0 && !dims.empty()) {
    strides.assign(dims.size(), 0);
    npy_intp inner = PyDataType_ELSIZE(descr);
    for (std::size_t d = dims.size(); d-- > 1;) {
      strides[d] = inner;
      inner *= dims[d];
    }
    strides[0] = row_stride;
  }
  int flags = strides.empty() ? (writeable ? NPY_ARRAY_CARRAY : NPY_ARRAY_CARRAY_RO)
                              : (writeable ? NPY_ARRAY_ALIGNED | NPY_ARRAY_WRITEABLE : NPY_ARRAY_ALIGNED);
  Py_INCREF(descr);  // PyArray_NewFromDescr steals it
  PyObject* arr = PyArray_NewFromDescr(&PyArray_Type, descr, static_cast<int>(dims.size()),
                                       const_cast<npy_intp*>(dims.data()), strides.empty() ? nullptr : strides.data(),
                                       data, flags, nullptr);
  if (!arr) throw py::error_already_set();
  Py_INCREF(base);
  if (PyArray_SetBaseObject(as_array(arr), base) < 0) {
    Py_DECREF(arr);
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::object>(arr);
}

}  // namespace fastreplay_py
