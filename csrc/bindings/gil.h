// ReleaseGil: the bindings' one way to release the GIL around a core call, safe for daemon threads at exit.
//
// pybind11's gil_scoped_release re-takes the GIL in its (noexcept) destructor. While the interpreter finalizes,
// CPython up to 3.13 ends every thread but the finalizing one that tries to take the GIL, with pthread_exit. Its
// forced unwind met the noexcept frame and called std::terminate: a daemon thread inside sample() at exit aborted
// the whole process (status 134). Letting the unwind continue is no better: the binding's frames above would drop
// Python references without the GIL, while the main thread collects garbage.
// ReleaseGil catches that unwind where it starts and parks the thread for good instead: it holds no lock and no
// GIL, touches no Python object, and the process ends with the interpreter. (CPython 3.14 parks such threads
// itself.) The finalizing thread, which may run destructors of prefetchers, re-takes the GIL as usual.
#pragma once

#include <pybind11/pybind11.h>

#include <chrono>
#include <thread>

namespace fastreplay_py {

class ReleaseGil {
 public:
  ReleaseGil() : state_(PyEval_SaveThread()) {}
  ~ReleaseGil() {
    try {
      PyEval_RestoreThread(state_);
    } catch (...) {  // the forced unwind of CPython's pthread_exit (abi::__forced_unwind): never rethrown
      park();
    }
  }
  ReleaseGil(const ReleaseGil&) = delete;
  ReleaseGil& operator=(const ReleaseGil&) = delete;

 private:
  [[noreturn]] static void park() {
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
  }

  PyThreadState* state_;
};

}  // namespace fastreplay_py
