// Multi-task buffers: a Buffer with one child Buffer per task routes adds, samples, gets and priority updates to
// its tasks' cores (fastreplay/tasks.h has the rules that span tasks). Global slot = task offset + the task's slot.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "bindings/buffer.h"
#include "bindings/numpy_util.h"
#include "fastreplay/gather.h"
#include "fastreplay/rng.h"
#include "fastreplay/tasks.h"

namespace fastreplay_py {

py::object Buffer::task_view(std::size_t t) const {
  if (!multi()) fr::throw_type("_task_view needs a multi-task buffer");
  if (t >= tasks_.size()) fr::throw_index("_task_view: no task " + std::to_string(t));
  return task_objs_[t];
}

std::size_t Buffer::size() const {
  if (!multi()) return core().size();
  std::size_t n = 0;
  for (const auto& t : tasks_) n += t->size();
  return n;
}

std::size_t Buffer::capacity() const { return multi() ? offsets_.back() : core().capacity(); }

std::uint64_t Buffer::total_added() const {
  if (!multi()) return core().ring().total_added();
  std::uint64_t n = 0;
  for (const auto& t : tasks_) n += t->total_added();
  return n;
}

void Buffer::clear() {
  if (!multi()) return core().clear();
  for (auto& t : tasks_) t->clear();
}

std::size_t Buffer::task_of(std::int64_t slot) const {
  // offsets_ is sorted; the task is the last offset <= slot (K is small: a linear scan beats a binary search)
  std::size_t t = 0;
  while (t + 1 < tasks_.size() && static_cast<std::size_t>(slot) >= offsets_[t + 1]) ++t;
  return t;
}

void Buffer::check_task_slot(const char* fn, std::size_t t, std::int64_t local, std::int64_t slot,
                             std::size_t pos) const {
  const std::size_t held = tasks_[t]->core_->ring().reserved_size();
  if (static_cast<std::size_t>(local) >= held)
    fr::throw_index(std::string(fn) + ": index " + std::to_string(slot) + " at position " + std::to_string(pos) +
                    " is slot " + std::to_string(local) + " of task " + std::to_string(t) + ", which holds " +
                    std::to_string(held) + " transitions");
}

void Buffer::add_tasks(PyObject* task, const std::vector<Source>& src, std::size_t rows) {
  const std::size_t k = tasks_.size();
  auto bad = [&](std::int64_t t, std::size_t pos, bool many) {
    fr::throw_invalid("add: task " + std::to_string(t) + (many ? " at row " + std::to_string(pos) : std::string()) +
                      " is out of range: the buffer has tasks 0.." + std::to_string(k - 1));
  };
  const std::string want = "add: task must be an int or one int per row";
  if (PyBool_Check(task)) fr::throw_type(want + ", got bool");
  if (PyLong_Check(task) || PyArray_IsScalar(task, Integer)) {  // one task for every row: the whole add goes there
    const std::int64_t t = as_int(task, "task");
    if (t < 0 || static_cast<std::size_t>(t) >= k) bad(t, 0, false);
    std::vector<const void*> ptrs(src.size());
    for (std::size_t i = 0; i < src.size(); ++i) ptrs[i] = src[i].ptr;
    fr::ReplayCore& core = *tasks_[static_cast<std::size_t>(t)]->core_;
    ReleaseGil nogil;
    core.add(ptrs.data(), rows);
    return;
  }
  {
    py::object any = py::module_::import("numpy").attr("asarray")(py::handle(task));
    const char kind = PyArray_DESCR(as_array(any))->kind;
    if (kind != 'i' && kind != 'u')
      fr::throw_type(want + ", got dtype " + py::str(any.attr("dtype").attr("str")).cast<std::string>());
    if (PyArray_NDIM(as_array(any)) != 1 || static_cast<std::size_t>(PyArray_SIZE(as_array(any))) != rows)
      fr::throw_invalid(want + " (" + std::to_string(rows) + "), got shape " +
                        py::str(any.attr("shape")).cast<std::string>());
  }
  py::object ta = index_array("add", task);  // int64, C-contiguous
  const auto* tv = data_of<const std::int64_t>(ta);
  for (std::size_t r = 0; r < rows; ++r)
    if (tv[r] < 0 || static_cast<std::size_t>(tv[r]) >= k) bad(tv[r], r, true);
  if (const fr::EpisodeIndex* ep = tasks_[0]->core_->episodes()) {  // each task's add takes all its lanes at once
    std::vector<std::size_t> per(k, 0);
    for (std::size_t r = 0; r < rows; ++r) ++per[static_cast<std::size_t>(tv[r])];
    for (std::size_t t = 0; t < k; ++t)
      if (per[t] != 0 && per[t] != ep->lanes())
        fr::throw_invalid("add: task " + std::to_string(t) + " gets " + std::to_string(per[t]) + " rows, but each "
                          "task of a buffer with num_envs=" + std::to_string(ep->lanes()) + " takes exactly " +
                          std::to_string(ep->lanes()) + " rows per add (one per lane)");
  }
  // Rows of each task, in order, copied together (every value has `rows` rows: add checked that).
  std::vector<std::vector<std::uint8_t>> staged(src.size());
  std::vector<const void*> ptrs(src.size());
  for (std::size_t t = 0; t < k; ++t) {
    std::size_t m = 0;
    for (std::size_t r = 0; r < rows; ++r) m += static_cast<std::size_t>(tv[r]) == t;
    if (m == 0) continue;
    for (std::size_t i = 0; i < src.size(); ++i) {
      const std::size_t rb = fields_[i].row_bytes;
      staged[i].resize(m * rb);
      std::size_t j = 0;
      for (std::size_t r = 0; r < rows; ++r) {
        if (static_cast<std::size_t>(tv[r]) != t) continue;
        const auto* from = static_cast<const std::uint8_t*>(src[i].ptr) + r * rb;
        std::memcpy(staged[i].data() + (j++) * rb, from, rb);
      }
      ptrs[i] = staged[i].data();
    }
    fr::ReplayCore& core = *tasks_[t]->core_;
    ReleaseGil nogil;
    core.add(ptrs.data(), m);
  }
}

std::vector<double> Buffer::task_weights(py::handle tasks) const {
  const std::size_t k = tasks_.size();
  std::vector<double> w(k, 0.0);
  const char* fn = "sample";
  auto name = [](std::size_t t) { return "task " + std::to_string(t); };
  auto need_rows = [&](std::size_t t) {
    if (tasks_[t]->size() == 0)
      fr::throw_invalid(std::string(fn) + ": " + name(t) + " holds no transitions, but the tasks argument gives it rows");
  };
  if (tasks.is_none() || (PyUnicode_Check(tasks.ptr()) && tasks.cast<std::string>() == "proportional"))
    return {};  // empty: by stored size, read when the batch is drawn (fill_tasks)
  if (PyUnicode_Check(tasks.ptr())) {
    const std::string mode = tasks.cast<std::string>();
    if (mode != "balanced")
      fr::throw_invalid(std::string(fn) + ": tasks must be 'balanced', 'proportional', a list of tasks or a dict "
                        "{task: weight}, got '" + mode + "'");
    for (std::size_t t = 0; t < k; ++t) need_rows(t), w[t] = 1.0;
    return w;
  }
  auto task_index = [&](py::handle o) {
    if (!(PyLong_Check(o.ptr()) || PyArray_IsScalar(o.ptr(), Integer)) || PyBool_Check(o.ptr()))
      fr::throw_type(std::string(fn) + ": tasks are ints, got " + py::repr(o).cast<std::string>());
    const std::int64_t t = as_int(o.ptr(), "task");
    if (t < 0 || static_cast<std::size_t>(t) >= k)
      fr::throw_invalid(std::string(fn) + ": task " + std::to_string(t) + " is out of range: the buffer has tasks 0.." +
                        std::to_string(k - 1));
    return static_cast<std::size_t>(t);
  };
  if (PyDict_Check(tasks.ptr())) {
    for (auto item : tasks.cast<py::dict>()) {
      const std::size_t t = task_index(item.first);
      const double v = real_arg(item.second.ptr(), fn, "task weight");
      if (!(v >= 0.0) || !std::isfinite(v))
        fr::throw_invalid(std::string(fn) + ": the weight of " + name(t) + " must be finite and >= 0, got " +
                          fr::format_real(v));
      w[t] = v;
    }
  } else if (PyList_Check(tasks.ptr()) || PyTuple_Check(tasks.ptr())) {
    for (py::handle o : tasks) w[task_index(o)] = 1.0;  // balanced over the tasks listed
  } else {
    fr::throw_type(std::string(fn) + ": tasks must be 'balanced', 'proportional', a list of tasks or a dict "
                   "{task: weight}, got " + py::repr(tasks).cast<std::string>());
  }
  double total = 0.0;
  for (std::size_t t = 0; t < k; ++t) {
    if (w[t] > 0.0) need_rows(t);
    total += w[t];
  }
  if (!(total > 0.0)) fr::throw_invalid(std::string(fn) + ": tasks gives no task a positive weight");
  return w;
}

void Buffer::fill_tasks(Target& t, double beta, const std::vector<double>& weights) {
  const std::size_t k = tasks_.size();
  std::vector<double> w = weights;
  std::vector<std::size_t> counts(k);
  if (w.empty()) {  // proportional: by the sizes now
    w.resize(k);
    double total = 0.0;
    for (std::size_t i = 0; i < k; ++i) total += (w[i] = static_cast<double>(tasks_[i]->size()));
    if (!(total > 0.0)) fr::throw_invalid("sample: the buffer is empty; add transitions first");
  }
  fr::Rng rng(seed_, calls_.fetch_add(1, std::memory_order_relaxed));
  fr::stratified_counts(w.data(), k, t.n, rng.uniform(), counts.data());
  double wsum = 0.0;
  for (double v : w) wsum += v;
  const std::size_t nf = out_.size() - 1;  // the children's batch fields; the last one is "task"
  auto fill_task_column = [&] {
    auto* col = reinterpret_cast<std::int64_t*>(t.rows()[nf]);
    std::size_t r = 0;
    for (std::size_t i = 0; i < k; ++i)
      for (std::size_t j = 0; j < counts[i]; ++j) col[r++] = static_cast<std::int64_t>(i);
  };
  if (!prioritized_ && !tasks_[0]->core_->episodes() && !task_cols_.empty()) {
    // Uniform plain tasks in memory: every row drawn first, then one gather over the columns that span all tasks
    // (a gather per task would restart its prefetching each time), checked as one core checks its own: if no add
    // ran in any task meanwhile, every row is whole; otherwise the per-task path below draws the batch again.
    std::vector<fr::Ring::Quiet> q(k);
    bool quiet = true;
    for (std::size_t i = 0; i < k; ++i) quiet = (q[i] = tasks_[i]->core_->ring().quiet_begin()).quiet && quiet;
    if (quiet) {
      std::size_t r = 0;
      for (std::size_t i = 0; i < k; ++i) {
        const std::size_t size = tasks_[i]->core_->size();
        if (counts[i] && size == 0) fr::throw_invalid("sample: task " + std::to_string(i) + " holds no transitions");
        for (std::size_t j = 0; j < counts[i]; ++j)
          t.indices[r++] = static_cast<std::int64_t>(offsets_[i] + rng.bounded(size));
      }
      fr::gather_batch(task_cols_.data(), nf, t.indices, t.n, t.rows());
      bool still = true;
      for (std::size_t i = 0; i < k; ++i) still = tasks_[i]->core_->ring().quiet_end(q[i]) && still;
      if (still) {  // (uniform batches skip generations, as one buffer's do: an extra random read per row)
        fill_task_column();
        return;
      }
    }
  }
  std::vector<std::uint8_t*> rows(nf);
  std::vector<double> prob(k), mass(k, 0.0), minleaf(k, 0.0), factor(k, 1.0);
  std::size_t row = 0;
  for (std::size_t i = 0; i < k; ++i) {
    const std::size_t c = counts[i];
    prob[i] = w[i] / wsum;
    if (c == 0) continue;
    for (std::size_t f = 0; f < nf; ++f) rows[f] = t.rows()[f] + row * row_bytes_[f];
    Buffer& child = *tasks_[i];
    if (prioritized_) {
      child.per_->sample(c, beta, t.indices + row, t.weights + row, t.generations ? t.generations + row : nullptr,
                         rows.data());
    } else {
      child.core_->sample(c, t.indices + row, nullptr, rows.data());
    }
    for (std::size_t j = 0; j < c; ++j) t.indices[row + j] += static_cast<std::int64_t>(offsets_[i]);
    row += c;
  }
  fill_task_column();
  if (prioritized_ && task_global_) {  // each task's own weights, rescaled to the global maximum (tasks.h)
    for (std::size_t i = 0; i < k; ++i) {
      if (prob[i] <= 0.0 || tasks_[i]->size() == 0) continue;
      mass[i] = tasks_[i]->per_->tree().total();
      minleaf[i] = tasks_[i]->per_->tree().min();
    }
    fr::global_weight_factors(prob.data(), mass.data(), minleaf.data(), k, factor.data());
    row = 0;
    for (std::size_t i = 0; i < k; ++i) {
      const auto f = static_cast<float>(std::pow(factor[i], beta));
      for (std::size_t j = 0; j < counts[i]; ++j)
        t.weights[row + j] = std::max(t.weights[row + j] * f, std::numeric_limits<float>::denorm_min());
      row += counts[i];
    }
  }
}

py::object Buffer::get_tasks(py::object arr) {
  const auto n = static_cast<std::size_t>(PyArray_SIZE(as_array(arr)));
  Target t = new_batch(pool_, layout(n), out_, true);
  std::memcpy(t.indices, data_of<const std::int64_t>(arr), n * sizeof(std::int64_t));
  const std::int64_t* idx = t.indices;
  std::vector<std::size_t> task(n);
  std::vector<std::int64_t> local(n);
  for (std::size_t k = 0; k < n; ++k) {  // everything checked first
    if (idx[k] < 0 || static_cast<std::size_t>(idx[k]) >= capacity())
      fr::throw_index("get: index " + std::to_string(idx[k]) + " at position " + std::to_string(k) +
                      " is outside the buffer's " + std::to_string(capacity()) + " slots");
    task[k] = task_of(idx[k]);
    local[k] = idx[k] - static_cast<std::int64_t>(offsets_[task[k]]);
    check_task_slot("get", task[k], local[k], idx[k], k);
  }
  const std::size_t nf = out_.size() - 1;
  std::vector<std::uint8_t*> rows(nf);
  {
    ReleaseGil nogil;
    for (std::size_t k = 0; k < n; ++k) {
      for (std::size_t f = 0; f < nf; ++f) rows[f] = t.rows()[f] + k * row_bytes_[f];
      tasks_[task[k]]->core_->get(&local[k], 1, t.generations + k, rows.data());
      *reinterpret_cast<std::int64_t*>(t.rows()[nf] + k * row_bytes_[nf]) = static_cast<std::int64_t>(task[k]);
    }
    if (t.weights) std::fill(t.weights, t.weights + n, 1.0f);
  }
  return t.batch;
}

std::size_t Buffer::update_priorities_tasks(const std::int64_t* idx, const double* pr, std::size_t n,
                                            const std::uint64_t* gens, bool raise_stale) {
  const char* fn = "update_priorities";
  const std::size_t k = tasks_.size();
  std::vector<std::vector<std::int64_t>> li(k);
  std::vector<std::vector<double>> lp(k);
  std::vector<std::vector<std::uint64_t>> lg(k);
  for (std::size_t j = 0; j < n; ++j) {  // every row checked before any task changes (as the core does for one)
    if (idx[j] < 0 || static_cast<std::size_t>(idx[j]) >= capacity())
      fr::throw_index(std::string(fn) + ": index " + std::to_string(idx[j]) + " at position " + std::to_string(j) +
                      " is outside the buffer's " + std::to_string(capacity()) + " slots");
    const std::size_t t = task_of(idx[j]);
    const std::int64_t s = idx[j] - static_cast<std::int64_t>(offsets_[t]);
    check_task_slot(fn, t, s, idx[j], j);
    if (!std::isfinite(pr[j]) || pr[j] < 0.0)
      fr::throw_invalid(std::string(fn) + ": priorities must be finite and >= 0, got " + std::to_string(pr[j]) +
                        " at position " + std::to_string(j));
    const fr::PrioritizedCore& c = *tasks_[t]->per_;
    if (!(std::pow(pr[j] + c.eps(), c.alpha()) <= c.leaf_limit()))
      fr::throw_invalid(std::string(fn) + ": priority " + fr::format_real(pr[j]) + " at position " +
                        std::to_string(j) + " gives a leaf (p + eps)**alpha above the limit 2**1022 / capacity");
    if (gens && raise_stale && tasks_[t]->core_->ring().generation(static_cast<std::size_t>(s)) != gens[j])
      fr::throw_invalid(std::string(fn) + ": index " + std::to_string(idx[j]) + " at position " + std::to_string(j) +
                        " is stale: its slot was overwritten after it was sampled");
    li[t].push_back(s);
    lp[t].push_back(pr[j]);
    if (gens) lg[t].push_back(gens[j]);
  }
  std::size_t stale = 0;
  ReleaseGil nogil;
  for (std::size_t t = 0; t < k; ++t)
    if (!li[t].empty())
      stale += tasks_[t]->per_->update_priorities(li[t].data(), lp[t].data(), li[t].size(),
                                                  gens ? lg[t].data() : nullptr, raise_stale);
  return stale;
}

}  // namespace fastreplay_py
