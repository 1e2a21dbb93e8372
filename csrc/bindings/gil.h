// ReleaseGil: the bindings' one way to release the GIL around a core call, safe for daemon threads at exit.
//
// pybind11's gil_scoped_release re-takes the GIL in its (noexcept) destructor. When the interpreter is
// finalizing, CPython up to 3.13 ends any other thread that tries to take the GIL with pthread_exit, whose forced
// unwind meets the noexcept frame and calls std::terminate: a daemon thread inside sample() at exit aborted the
// whole process (status 134). ReleaseGil instead parks such a thread for good (it holds no lock and touches no
// Python object) and lets the interpreter finish; CPython 3.14 parks such threads itself. The thread that runs
// the finalisation (the main thread: destructors of prefetchers collected at exit) re-takes the GIL as usual.
//
// The destructor is noexcept(false) so that, should finalisation start between the check and the re-take, the
// forced unwind of CPython's pthread_exit passes through it, as it does through the interpreter's own frames.
#pragma once

#include <pybind11/pybind11.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace fastreplay_py {

class ReleaseGil {
 public:
  ReleaseGil() : main_(is_main_thread()), state_(PyEval_SaveThread()) {}
  ~ReleaseGil() noexcept(false) {
#if PY_VERSION_HEX < 0x030E0000
    if (!main_ && finalizing()) park();
#endif
    PyEval_RestoreThread(state_);
  }
  ReleaseGil(const ReleaseGil&) = delete;
  ReleaseGil& operator=(const ReleaseGil&) = delete;

 private:
  static bool finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing() != 0;
#else
    return _Py_IsFinalizing() != 0;
#endif
  }
  // Called with the GIL held. Before 3.13, CPython's own test; on 3.13, the thread that imported threading's
  // main thread (the one that finalises) by identity; 3.14 does not need it.
  static bool is_main_thread() {
#if PY_VERSION_HEX < 0x030D0000
    return _PyOS_IsMainThread() != 0;
#elif PY_VERSION_HEX < 0x030E0000
    return PyThread_get_thread_ident() == main_thread_ident();
#else
    return true;
#endif
  }
#if PY_VERSION_HEX >= 0x030D0000 && PY_VERSION_HEX < 0x030E0000
  static unsigned long main_thread_ident() {
    // Computed on first use with the GIL held; no static-local guard, which could deadlock against the GIL.
    static std::atomic<unsigned long> ident{0};
    unsigned long v = ident.load(std::memory_order_relaxed);
    if (v == 0) {
      PyObject* threading = PyImport_ImportModule("threading");
      PyObject* main = threading ? PyObject_CallMethod(threading, "main_thread", nullptr) : nullptr;
      PyObject* id = main ? PyObject_GetAttrString(main, "ident") : nullptr;
      v = id ? PyLong_AsUnsignedLong(id) : 0;
      if (PyErr_Occurred()) PyErr_Clear();
      Py_XDECREF(id);
      Py_XDECREF(main);
      Py_XDECREF(threading);
      if (v != 0 && v != static_cast<unsigned long>(-1)) ident.store(v, std::memory_order_relaxed);
    }
    return v;
  }
#endif
  [[noreturn]] static void park() {
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
  }

  bool main_;
  PyThreadState* state_;
};

}  // namespace fastreplay_py
