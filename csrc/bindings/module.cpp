// The fastreplay._core extension module: imports numpy, translates the core's errors, and registers each area.
#define FASTREPLAY_NUMPY_IMPORT  // this file imports numpy's C API for the whole extension
#include "bindings/buffer.h"
#include "fastreplay/copy_crew.h"

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
  m.def(
      "set_copy_threads",
      [](py::handle n) {
        const std::size_t max = fastreplay::CopyCrew::kMaxThreads;
        long long v = -1;
        if (PyLong_Check(n.ptr()) && !PyBool_Check(n.ptr())) {
          int overflow = 0;
          v = PyLong_AsLongLongAndOverflow(n.ptr(), &overflow);
          if (overflow) v = -1;
        } else {
          fastreplay::throw_type("set_copy_threads: n must be an int, got " + std::string(Py_TYPE(n.ptr())->tp_name));
        }
        if (v < 1 || static_cast<unsigned long long>(v) > max)
          fastreplay::throw_invalid("set_copy_threads: n must be in [1, " + std::to_string(max) + "], got " +
                                    py::str(n).cast<std::string>());
        fastreplay::CopyCrew::instance().set_threads(static_cast<std::size_t>(v));
      },
      py::arg("n"),
      "Threads that share each large batch copy (rows over 256 bytes, 256 KiB and more in all), the caller included.\n\n"
      "1 (the default) copies on the calling thread only. With n > 1, n - 1 helper threads (process-wide, started on\n"
      "the next large copy) copy parts of the batch alongside the caller: one sample(32) of Atari rows then moves up to\n"
      "about twice as fast, at the cost of the helpers' cores (keep it at 1 where environments or other samplers need\n"
      "every core). Applies to every buffer of the process.");
  m.def(
      "get_copy_threads", []() { return fastreplay::CopyCrew::instance().threads(); },
      "Threads that share each large batch copy (see set_copy_threads).");
}
