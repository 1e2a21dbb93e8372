// The _RateLimiter class: fastreplay/rate_limiter.h for Python. Blocking waits release the GIL and wake every
// 50 ms to check for signals (so Ctrl-C interrupts a blocked add or sample); fastreplay.rate_limiter wraps it.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "bindings/gil.h"
#include "fastreplay/rate_limiter.h"

namespace py = pybind11;
namespace fr = fastreplay;

namespace fastreplay_py {

namespace {

using Side = fr::RateLimiter::Side;
using Result = fr::RateLimiter::Result;

// 0 acquired, 1 would block (timeout 0), 2 timed out, 3 cancelled. timeout < 0: no deadline.
int acquire(fr::RateLimiter& rl, Side side, std::int64_t n, double timeout) {
  if (std::isnan(timeout)) throw std::invalid_argument("RateLimiter: timeout must not be NaN");
  if (timeout == 0.0) {
    ReleaseGil nogil;  // the mutex may be held by a thread that waits for the GIL-free core: never hold the GIL here
    return static_cast<int>(rl.acquire(side, n, 0.0));
  }
  using clock = std::chrono::steady_clock;
  const bool forever = timeout < 0.0 || std::isinf(timeout);
  const auto deadline = clock::now() + std::chrono::duration_cast<clock::duration>(
                                           std::chrono::duration<double>(forever ? 0.0 : std::min(timeout, 1e9)));
  for (;;) {
    double slice = 0.05;
    if (!forever) {
      const double left = std::chrono::duration<double>(deadline - clock::now()).count();
      if (left <= 0.0) slice = 0.0;
      else slice = std::min(slice, left);
    }
    Result r;
    {
      ReleaseGil nogil;
      r = rl.acquire(side, n, slice);
    }
    if (r == Result::Ok || r == Result::Cancelled) return static_cast<int>(r);
    if (!forever && clock::now() >= deadline) return static_cast<int>(Result::TimedOut);
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }
}

}  // namespace

void init_rate_limiter(py::module_& m) {
  py::class_<fr::RateLimiter>(m, "_RateLimiter", "Samples-per-insert rate limiter core; see fastreplay.RateLimiter.")
      .def(py::init<double, std::int64_t, double, double>(), py::arg("samples_per_insert"), py::arg("min_size"),
           py::arg("min_diff"), py::arg("max_diff"))
      .def("_acquire",
           [](fr::RateLimiter& rl, bool insert, std::int64_t n, double timeout) {
             return acquire(rl, insert ? Side::Insert : Side::Sample, n, timeout);
           })
      .def("_can", [](const fr::RateLimiter& rl, bool insert, std::int64_t n) {
        ReleaseGil nogil;
        return rl.can_proceed(insert ? Side::Insert : Side::Sample, n);
      })
      .def("_release",
           [](fr::RateLimiter& rl, bool insert, std::int64_t n) {
             ReleaseGil nogil;
             rl.release(insert ? Side::Insert : Side::Sample, n);
           })
      .def("cancel", [](fr::RateLimiter& rl) {
        ReleaseGil nogil;
        rl.cancel();
      })
      .def_property_readonly("cancelled", [](const fr::RateLimiter& rl) {
        ReleaseGil nogil;
        return rl.cancelled();
      })
      .def("_counters", [](const fr::RateLimiter& rl) {
        fr::RateLimiter::Counters c;
        {
          ReleaseGil nogil;
          c = rl.counters();
        }
        return py::make_tuple(c.inserts, c.samples);
      })
      .def("_set_counters", [](fr::RateLimiter& rl, std::int64_t inserts, std::int64_t samples) {
        ReleaseGil nogil;
        rl.set_counters({inserts, samples});
      })
      .def("_set_spi", [](fr::RateLimiter& rl, double spi) {
        ReleaseGil nogil;
        rl.set_samples_per_insert(spi);
      })
      .def_property_readonly("_spi", [](const fr::RateLimiter& rl) {
        ReleaseGil nogil;
        return rl.samples_per_insert();
      })
      .def_property_readonly("min_size_to_sample", &fr::RateLimiter::min_size)
      .def_property_readonly("min_diff", &fr::RateLimiter::min_diff)
      .def_property_readonly("max_diff", &fr::RateLimiter::max_diff);
}

}  // namespace fastreplay_py
