// Checkpoint and memory-mapped storage methods of _Buffer: the ring's state as plain values and its restoration,
// reopening mapped files, flushing them, and raw views for restoring columns. None may run concurrently with
// other calls on the same buffer.
#include "bindings/buffer.h"

namespace fastreplay_py {

py::dict Buffer::export_state() const {
  py::dict d;
  const auto st = core().ring().state();
  d["cursor"] = st.cursor;
  d["base"] = st.base;
  d["stream"] = core().stream();
  d["seed"] = core().seed();
  const auto cap = core().capacity();
  py::object seq = new_array(static_cast<npy_intp>(cap), NPY_UINT64);
  auto* o = data_of<std::uint64_t>(seq);
  for (std::size_t i = 0; i < cap; ++i) o[i] = core().ring().seq(i);
  d["seq"] = seq;
  if (per_) {
    d["max_all_time"] = per_->max_all_time();
    d["priorities"] = priorities();
  }
  return d;
}

// Priorities to restore: float64[len(buffer)].
py::object Buffer::priority_array(py::handle priorities) const {
  py::object pr = exact_array(priorities, NPY_FLOAT64, "restore: priorities");
  PyArrayObject* a = as_array(pr);
  if (PyArray_NDIM(a) != 1 || static_cast<std::size_t>(PyArray_SIZE(a)) != core().size())
    fr::throw_invalid("restore: priorities must have one entry per stored transition");
  return pr;
}

void Buffer::restore_state(std::uint64_t cursor, std::uint64_t base, std::uint64_t stream, py::handle seq,
                           py::handle priorities, double max_all_time) {
  if (seq.is_none()) {  // already read into the ring's memory through _seq_view
    core().restore_ring({cursor, base}, nullptr);
  } else {
    py::object s = exact_array(seq, NPY_UINT64, "restore: seq");
    PyArrayObject* sp = as_array(s);
    if (PyArray_NDIM(sp) != 1 || static_cast<std::size_t>(PyArray_SIZE(sp)) != core().capacity())
      fr::throw_invalid("restore: seq must have one entry per slot");
    core().restore_ring({cursor, base}, data_of<const std::uint64_t>(s));
  }
  core().set_stream(stream);
  if (per_) restore_priorities(priorities, max_all_time);
}

std::size_t Buffer::reopen(std::uint64_t base) { return core().reopen(base); }

void Buffer::flush() {
  ReleaseGil nogil;
  for (auto& m : mapped_) fr::sync_mapping(m.first.get(), m.second);
}

void Buffer::restore_priorities(py::handle priorities, double max_all_time) {
  fr::PrioritizedCore& core = per("restore");
  py::object pr = priority_array(priorities);
  core.restore_priorities(data_of<const double>(pr), core.size(), max_all_time);
}

py::object Buffer::episode_view(py::handle self, int j) const {
  fr::EpisodeIndex& ep = episodes("_episode_view");
  const auto cap = static_cast<npy_intp>(core().capacity());
  if (j < 0) {
    auto descr = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(PyArray_DescrFromType(NPY_UINT64)));
    return make_view(reinterpret_cast<PyArray_Descr*>(descr.ptr()), {cap}, ep.start_data(), self.ptr(), true);
  }
  if (static_cast<std::size_t>(j) >= ep.finals_count()) fr::throw_index("_episode_view: no finals column " + std::to_string(j));
  const Field& f = stored_.at(ep.spec().obs_col[static_cast<std::size_t>(j)]);
  std::vector<npy_intp> dims(f.shape);
  dims.insert(dims.begin(), cap);
  return make_view(f.descr(), dims, ep.finals_data(static_cast<std::size_t>(j)), self.ptr(), true);
}

py::object Buffer::raw_view(py::handle self, std::size_t i, std::size_t n) const {
  const Field& f = stored_.at(i);
  if (n > core().capacity()) fr::throw_index("raw view beyond capacity");
  std::vector<npy_intp> dims(f.shape);
  dims.insert(dims.begin(), static_cast<npy_intp>(n));
  const fr::Column& c = core().column(i);
  return make_view(f.descr(), dims, c.data(), self.ptr(), true, c.contiguous() ? 0 : static_cast<npy_intp>(c.stride()));
}

void init_state(py::class_<Buffer>& cls) {
  cls.def("_export_state", &Buffer::export_state)
      .def("_restore_state", &Buffer::restore_state, py::arg("cursor"), py::arg("base"), py::arg("stream"),
           py::arg("seq"), py::arg("priorities"), py::arg("max_all_time"))
      .def("_reopen", &Buffer::reopen, py::arg("base"))
      .def("_flush", &Buffer::flush)
      .def("_restore_priorities", &Buffer::restore_priorities, py::arg("priorities"), py::arg("max_all_time"))
      // Writable view of the first n rows of field i, for restoring checkpoints only (no other use is safe).
      .def("_raw_view",
           [](py::object self, std::size_t i, std::size_t n) { return self.cast<Buffer&>().raw_view(self, i, n); },
           py::arg("field"), py::arg("n"))
      // Writable uint64[capacity] view of the ring's sequence numbers, for loading a checkpoint's seq straight into
      // them; _restore_state(..., seq=None, ...) then checks them. No other use is safe.
      .def("_seq_view",
           [](py::object self) {
             Buffer& b = self.cast<Buffer&>();
             auto descr = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(PyArray_DescrFromType(NPY_UINT64)));
             return make_view(reinterpret_cast<PyArray_Descr*>(descr.ptr()),
                              {static_cast<npy_intp>(b.core().capacity())}, b.core().raw_seq(), self.ptr(), true);
           })
      // (add calls started, True if none is running now): save compares it before and after writing, so a file
      // written while transitions were being added is never put in place.
      .def("_writes", [](const Buffer& b) {
        const auto q = b.core().ring().quiet_begin();
        return py::make_tuple(q.begun, q.quiet);
      });
}

}  // namespace fastreplay_py
