// The _Prefetcher class: C++ threads sampling batches ahead of the consumer (fastreplay/prefetch.h).
#include <atomic>
#include <memory>

#include "bindings/buffer.h"
#include "fastreplay/prefetch.h"

namespace fastreplay_py {

namespace {

class BatchPrefetcher {
 public:
  BatchPrefetcher(py::object buffer, py::handle batch_size, py::handle depth, py::handle threads, py::handle beta_arg)
      : buffer_(std::move(buffer)), buf_(&buffer_.cast<Buffer&>()), beta_(std::make_shared<std::atomic<double>>(0.0)) {
    const std::size_t n = batch_size_arg(batch_size.ptr(), "prefetch");
    const long long d = as_int(depth.ptr(), "prefetch: depth");
    const long long t = as_int(threads.ptr(), "prefetch: threads");
    fr::Prefetcher<fr::BatchBlock*>::check_sizes(d, t);
    const double beta = real_arg(beta_arg.ptr(), "prefetch", "beta");
    beta_->store(beta);
    if (buf_->prioritized()) fr::PrioritizedCore::check_beta("prefetch", beta);
    layout_ = buf_->layout(n);
    Buffer* buf = buf_;
    const fr::BatchLayout L = layout_;
    auto beta_now = beta_;
    auto produce = [buf, L, beta_now]() { return buf->sample_block(L, beta_now->load(std::memory_order_relaxed)).release(); };
    auto discard = [](fr::BatchBlock* b) { delete b; };
    pf_ = std::make_unique<fr::Prefetcher<fr::BatchBlock*>>(produce, discard, static_cast<std::size_t>(d),
                                                             static_cast<std::size_t>(t));
  }
  ~BatchPrefetcher() {
    ReleaseGil nogil;
    pf_.reset();  // joins the workers before buffer_ may go
  }

  py::object next() {
    if (!pf_) throw py::stop_iteration();
    fr::BatchBlock* b = nullptr;
    if (!pf_->try_next(b)) {  // only wait (without the GIL) if no batch is ready
      try {
        ReleaseGil nogil;
        b = pf_->next();
      } catch (const fr::PrefetcherClosed&) {
        throw py::stop_iteration();
      }
    }
    return wrap(std::unique_ptr<fr::BatchBlock>(b), buf_->batch_fields(), false);
  }
  void close() {
    if (!pf_) return;
    ReleaseGil nogil;
    pf_->close();
  }
  double beta() const { return beta_->load(); }
  void set_beta(py::handle beta) {
    const double b = real_arg(beta.ptr(), "prefetch", "beta");
    fr::PrioritizedCore::check_beta("prefetch", b);
    beta_->store(b);
  }
  std::size_t ready() const { return pf_ ? pf_->ready_count() : 0; }
  bool closed() const { return !pf_ || pf_->closed(); }

 private:
  py::object buffer_;  // keeps the buffer (and its core) alive while workers run
  Buffer* buf_;
  fr::BatchLayout layout_;
  std::shared_ptr<std::atomic<double>> beta_;
  std::unique_ptr<fr::Prefetcher<fr::BatchBlock*>> pf_;
};

}  // namespace

}  // namespace fastreplay_py

namespace pybind11 {
namespace detail {

// A prefetcher made by Prefetcher.__new__ (its __init__ never ran): TypeError from every method (see buffer.h).
struct PrefetcherUninitialized {
  [[noreturn]] static void raise(PyObject* self) {
    fastreplay_py::throw_uninitialized(self, "prefetcher", "calling buffer.prefetch(...)");
  }
};
template <>
class type_caster<fastreplay_py::BatchPrefetcher>
    : public init_checked_caster<fastreplay_py::BatchPrefetcher, PrefetcherUninitialized> {};

}  // namespace detail
}  // namespace pybind11

namespace fastreplay_py {

void init_prefetch(py::module_& m) {
  py::class_<BatchPrefetcher>(m, "_Prefetcher", "Batches sampled ahead by C++ threads; see ReplayBuffer.prefetch.")
      .def(py::init<py::object, py::handle, py::handle, py::handle, py::handle>(), py::arg("buffer"),
           py::arg("batch_size"), py::arg("depth"), py::arg("threads"), py::arg("beta"))
      .def("__next__", &BatchPrefetcher::next)
      .def("close", &BatchPrefetcher::close)
      .def_property("beta", &BatchPrefetcher::beta, &BatchPrefetcher::set_beta)
      .def_property_readonly("ready", &BatchPrefetcher::ready)
      .def_property_readonly("closed", &BatchPrefetcher::closed);
}

}  // namespace fastreplay_py
