// numpy helpers of the bindings (see numpy_util.h).
#include "bindings/numpy_util.h"

#include <climits>
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

long long as_int(PyObject* o, const char* what) {
  if (PyBool_Check(o) || !(PyLong_Check(o) || PyIndex_Check(o)))
    fr::throw_type(std::string(what) + " must be an int, got " + type_name(o));
  py::object idx = py::reinterpret_steal<py::object>(PyNumber_Index(o));
  if (!idx) throw py::error_already_set();
  int overflow = 0;
  long long v = PyLong_AsLongLongAndOverflow(idx.ptr(), &overflow);
  if (overflow) fr::throw_invalid(std::string(what) + " is out of range, got " + py::str(o).cast<std::string>());
  return v;
}

std::size_t batch_size_arg(PyObject* o, const char* fn) {
  const long long n = as_int(o, (std::string(fn) + ": batch_size").c_str());
  if (n <= 0) fr::throw_invalid(std::string(fn) + ": batch_size must be positive, got " + std::to_string(n));
  return static_cast<std::size_t>(n);
}

namespace {

// `v` as a numpy array of at most one dimension; `what_text` is "<fn>: <what>" for errors.
py::object one_d(const std::string& what_text, const char* expected, py::handle v) {
  py::object a = py::reinterpret_steal<py::object>(PyArray_FromAny(v.ptr(), nullptr, 0, 0, 0, nullptr));
  if (!a) {
    PyErr_Clear();
    fr::throw_type(what_text + " must be a 1-d array of " + expected + ", got " + type_name(v.ptr()));
  }
  PyArrayObject* arr = as_array(a);
  if (PyArray_NDIM(arr) > 1)
    fr::throw_invalid(what_text + " must be 1-d, got shape " + shape_str(PyArray_DIMS(arr), PyArray_NDIM(arr)));
  return a;
}

py::object cast_to(const py::object& a, int type_num) {
  PyObject* c = PyArray_FromAny(a.ptr(), PyArray_DescrFromType(type_num), 0, 1,
                                NPY_ARRAY_CARRAY_RO | NPY_ARRAY_FORCECAST, nullptr);
  if (!c) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(c);
}

}  // namespace

py::object index_array(const char* fn, py::handle v) {
  const std::string what = std::string(fn) + ": indices";
  py::object a = one_d(what, "integers", v);
  PyArrayObject* arr = as_array(a);
  const char k = PyArray_DESCR(arr)->kind;
  if (!(k == 'i' || k == 'u') && PyArray_SIZE(arr) != 0)
    fr::throw_type(what + " must be integers, got dtype " + dtype_str(PyArray_DESCR(arr)));
  if (k == 'u' && PyArray_ITEMSIZE(arr) == 8 && PyArray_SIZE(arr)) {  // uint64 beyond int64 would wrap: check
    py::object mx = py::reinterpret_steal<py::object>(PyArray_Max(arr, NPY_RAVEL_AXIS, nullptr));
    if (!mx) throw py::error_already_set();
    if (py::cast<unsigned long long>(mx) > static_cast<unsigned long long>(LLONG_MAX))
      fr::throw_index(std::string(fn) + ": index " + py::str(mx).cast<std::string>() + " is out of range");
  }
  return cast_to(a, NPY_INT64);
}

py::object float_array(const char* fn, const char* what, py::handle v) {
  const std::string text = std::string(fn) + ": " + what;
  py::object a = one_d(text, "numbers", v);
  PyArrayObject* arr = as_array(a);
  const char k = PyArray_DESCR(arr)->kind;
  if (!(k == 'b' || k == 'i' || k == 'u' || k == 'f') && PyArray_SIZE(arr) != 0)
    fr::throw_type(text + " must be real numbers, got dtype " + dtype_str(PyArray_DESCR(arr)));
  return cast_to(a, NPY_FLOAT64);
}

py::object uint_array(const char* fn, const char* what, py::handle v) {
  const std::string text = std::string(fn) + ": " + what;
  py::object a = one_d(text, "non-negative integers", v);
  PyArrayObject* arr = as_array(a);
  const char k = PyArray_DESCR(arr)->kind;
  if (!(k == 'i' || k == 'u') && PyArray_SIZE(arr) != 0)
    fr::throw_type(text + " must be non-negative integers, got dtype " + dtype_str(PyArray_DESCR(arr)));
  if (k == 'i' && PyArray_SIZE(arr)) {
    py::object mn = py::reinterpret_steal<py::object>(PyArray_Min(arr, NPY_RAVEL_AXIS, nullptr));
    if (!mn) throw py::error_already_set();
    if (py::int_(mn) < py::int_(0))
      fr::throw_invalid(text + " must be non-negative, got " + py::str(mn).cast<std::string>());
  }
  return cast_to(a, NPY_UINT64);
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
                     bool writeable) {
  Py_INCREF(descr);  // PyArray_NewFromDescr steals it
  PyObject* arr = PyArray_NewFromDescr(&PyArray_Type, descr, static_cast<int>(dims.size()),
                                       const_cast<npy_intp*>(dims.data()), nullptr, data,
                                       writeable ? NPY_ARRAY_CARRAY : NPY_ARRAY_CARRAY_RO, nullptr);
  if (!arr) throw py::error_already_set();
  Py_INCREF(base);
  if (PyArray_SetBaseObject(as_array(arr), base) < 0) {
    Py_DECREF(arr);
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::object>(arr);
}

}  // namespace fastreplay_py
