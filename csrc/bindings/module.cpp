// The fastreplay._core extension module: imports numpy, translates the core's errors, and registers each area.
#define FASTREPLAY_NUMPY_IMPORT  // this file imports numpy's C API for the whole extension
#include "bindings/buffer.h"

namespace py = pybind11;
namespace fp = fastreplay_py;

namespace fastreplay_py {
void init_rate_limiter(py::module_& m);  // bindings/rate_limiter.cpp
}

PYBIND11_MODULE(_core, m) {
  if (_import_array() < 0) throw py::error_already_set();
  m.doc() = "fastreplay's compiled core. Use the classes re-exported by the fastreplay package.";
  // The core throws std::invalid_argument (ValueError) and std::out_of_range (IndexError), which pybind11
  // translates itself, and fastreplay::type_error, which becomes TypeError here.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fastreplay::type_error& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    }
  });
  fp::init_batch_object(m);
  fp::init_buffer(m);
  fp::init_prefetch(m);
  fp::init_rate_limiter(m);
}
