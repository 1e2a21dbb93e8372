// The _Buffer class: construction, add, sample, get, priorities, and its table of methods.
#include "bindings/buffer.h"

#include <algorithm>
#include <cstring>
#include <random>

namespace fastreplay_py {

namespace {

std::uint64_t random_seed() {
  std::random_device rd;
  return ((static_cast<std::uint64_t>(rd()) << 32) ^ rd()) >> 1;  // 63 bits: a valid `seed` argument too
}

// Memory-mapped blocks under `dir`: one file per column, then the episode index's blocks (`extra` bytes each), then
// the sequence numbers (the core's memory order).
std::vector<std::shared_ptr<std::uint8_t>> map_storage(const std::string& dir, const std::vector<fr::FieldSpec>& specs,
                                                       const std::vector<std::size_t>& extra, std::size_t capacity,
                                                       std::vector<std::pair<std::shared_ptr<std::uint8_t>, std::size_t>>& mapped) {
  std::vector<std::shared_ptr<std::uint8_t>> memory;
  const std::size_t nb = specs.size() + extra.size();
  for (std::size_t i = 0; i <= nb; ++i) {
    const bool seq = i == nb;
    const std::size_t row = seq ? 8 : i < specs.size() ? specs[i].row_bytes : extra[i - specs.size()];
    const std::size_t bytes = fr::checked_mul(capacity, row);
    memory.push_back(fr::map_file(seq ? fr::seq_file(dir) : fr::field_file(dir, i), bytes));
    mapped.push_back({memory.back(), bytes});
  }
  return memory;
}

std::vector<Field> layout_fields(const py::tuple& layout) {
  std::vector<Field> out;
  py::list names = layout[0], shapes = layout[1], dtypes = layout[2];
  for (std::size_t i = 0; i < names.size(); ++i) out.emplace_back(names[i].cast<std::string>(), shapes[i], dtypes[i]);
  return out;
}

std::size_t position(const std::vector<Field>& fields, const std::string& name) {
  for (std::size_t i = 0; i < fields.size(); ++i)
    if (fields[i].name == name) return i;
  throw std::logic_error("episode layout: no field " + name);
}

// The core's view of an episodic layout (names resolved to positions, frames to byte offsets).
fr::EpisodeSpec episode_spec(const py::dict& d, const std::vector<Field>& in, const std::vector<Field>& stored,
                             const std::vector<Field>& out) {
  fr::EpisodeSpec e;
  e.lanes = d["lanes"].cast<std::size_t>();
  e.dedup = d["dedup"].cast<bool>();
  e.stack = d["stack"].cast<std::size_t>();
  e.zero_pad = d["zero_pad"].cast<bool>();
  e.next_step = d["next_step"].cast<bool>();
  e.n_step = d["n_step"].cast<std::size_t>();
  e.gamma = d["gamma"].cast<double>();
  const bool stacked = d["stacked_input"].cast<bool>();
  std::vector<std::string> obs, nxt;
  for (py::handle h : py::list(d["obs"])) obs.push_back(h.cast<std::string>());
  for (py::handle h : py::list(d["next_obs"])) nxt.push_back(h.cast<std::string>());
  auto is_obs = [&](const std::string& n) { return std::find(obs.begin(), obs.end(), n) != obs.end(); };
  for (const Field& f : in) e.in_row_bytes.push_back(f.row_bytes);
  for (const Field& c : stored) {
    const std::size_t i = position(in, c.name);
    e.col_input.push_back(i);
    e.col_offset.push_back(stacked && is_obs(c.name) ? in[i].row_bytes - c.row_bytes : 0);
  }
  for (std::size_t j = 0; j < obs.size(); ++j) {
    const std::size_t oc = position(stored, obs[j]), ni = position(in, nxt[j]);
    e.obs_col.push_back(oc);
    e.next_input.push_back(ni);
    e.next_offset.push_back(in[ni].row_bytes - stored[oc].row_bytes);
    e.next_col.push_back(e.dedup ? 0 : position(stored, nxt[j]));
  }
  e.reward_col = position(stored, "reward");
  e.reward_f64 = stored[e.reward_col].itemsize == 8;
  e.done_col = position(stored, "done");
  e.done_input = position(in, "done");
  for (std::size_t i = 0; i < stored.size(); ++i)
    if (stored[i].name == "truncated") {
      e.has_truncated = true;
      e.trunc_col = i;
      e.trunc_input = position(in, "truncated");
    }
  for (const Field& f : out) {
    using K = fr::EpisodeSpec;
    const auto oi = std::find(obs.begin(), obs.end(), f.name), ni = std::find(nxt.begin(), nxt.end(), f.name);
    if (oi != obs.end())
      e.outs.push_back({K::Obs, static_cast<std::size_t>(oi - obs.begin())});
    else if (ni != nxt.end())
      e.outs.push_back({K::NextObs, static_cast<std::size_t>(ni - nxt.begin())});
    else if (f.name == "reward")
      e.outs.push_back({K::Reward, 0});
    else if (f.name == "done")
      e.outs.push_back({K::Done, 0});
    else if (f.name == "truncated")
      e.outs.push_back({K::Truncated, 0});
    else if (f.name == "discount")
      e.outs.push_back({K::Discount, 0});
    else
      e.outs.push_back({K::Plain, position(stored, f.name)});
  }
  return e;
}

// The core reads these after the GIL is released, so no other thread may be able to write them.
// `a`'s elements where no other thread can change them: its own data if this call holds the only reference to an
// array that owns its memory (a fresh conversion), else a copy in `copy` (a memcpy, no numpy object).
template <class T>
const T* private_data(const py::object& a, std::vector<T>& copy) {
  const T* p = data_of<const T>(a);
  if (Py_REFCNT(a.ptr()) == 1 && PyArray_CHKFLAGS(as_array(a), NPY_ARRAY_OWNDATA)) return p;
  copy.assign(p, p + PyArray_SIZE(as_array(a)));
  return copy.data();
}

}  // namespace

bool buffer_initialized(py::handle self) {
  if (!py::isinstance<Buffer>(self)) fr::throw_type("expected a ReplayBuffer, got " + type_name(self.ptr()));
  auto* inst = reinterpret_cast<py::detail::instance*>(self.ptr());
  return inst->get_value_and_holder(py::detail::get_type_info(typeid(Buffer))).holder_constructed();
}

void throw_uninitialized(PyObject* self, const char* what, const char* how) {
  const std::string name = Py_TYPE(self)->tp_name;
  fr::throw_type(name + ": this " + what + " was never initialized (__init__ did not run, e.g. it was made by " + name +
                 ".__new__); create " + what + "s by " + (*how ? std::string(how) : "calling " + name + "(...)"));
}

// FNV-1a over everything that fixes a shared buffer's layout and meaning: capacity, kind, eps, the max-priority
// mode, the storage layout and each stored field's name and row bytes.
static std::uint64_t shared_fingerprint(std::size_t capacity, const std::vector<fr::FieldSpec>& specs, bool prioritized,
                                        double eps, bool stored_max, bool columnar) {
  std::string d = std::to_string(capacity) + (prioritized ? "/per/" : "/uniform/") + std::to_string(stored_max) +
                  (columnar ? "/columnar" : "");
  char e[32];
  std::snprintf(e, sizeof e, "/%a", eps);
  d += e;
  for (const fr::FieldSpec& f : specs) d += "/" + f.name + ":" + std::to_string(f.row_bytes);
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : d) h = (h ^ c) * 1099511628211ull;
  return h;
}

Buffer::Buffer(std::size_t capacity, const py::list& names, const py::list& shapes, const py::list& dtypes,
               py::object seed, bool prioritized, double alpha, double eps, bool stored_max,
               const std::string& storage_dir, py::object episodes, const std::string& shared, bool attach,
               py::object tasks, bool task_global, bool columnar,
               const std::vector<std::shared_ptr<std::uint8_t>>* task_memory,
               const std::vector<std::size_t>* task_strides)
    : pool_(std::make_shared<fr::BlockPool>()), prioritized_(prioritized) {
  for (std::size_t i = 0; i < names.size(); ++i) {
    fields_.emplace_back(names[i].cast<std::string>(), shapes[i], dtypes[i]);
    index_[fields_.back().key] = py::int_(i);
  }
  std::unique_ptr<fr::EpisodeSpec> ep;
  if (episodes.is_none()) {
    stored_ = out_ = fields_;
  } else {
    py::dict d = episodes;
    stored_ = layout_fields(d["stored"]);
    out_ = layout_fields(d["batch"]);
    ep.reset(new fr::EpisodeSpec(episode_spec(d, fields_, stored_, out_)));
  }
  std::vector<fr::FieldSpec> specs;
  for (const Field& f : stored_) specs.push_back({f.name, f.row_bytes, f.itemsize});
  const fr::Layout layout = columnar ? fr::Layout::Columnar : fr::Layout::Auto;
  for (const Field& f : out_) row_bytes_.push_back(f.row_bytes);
  std::uint64_t s = seed.is_none() ? random_seed() : static_cast<std::uint64_t>(as_int(seed.ptr(), "seed"));
  // The memory blocks a core takes from outside (ReplayCore's `memory`): one per stored field, then the episode
  // index's (start: 8 bytes a slot; finals: one per observation key, written rarely), then seq (8 bytes a slot).
  std::vector<std::size_t> extra;
  if (ep) {
    extra.push_back(8);
    if (ep->dedup)
      for (std::size_t c : ep->obs_col) extra.push_back(stored_[c].row_bytes);
  }
  if (!tasks.is_none()) {  // one child per task (the Python layer checked the quotas and refuses shared storage)
    if (!shared.empty()) fr::throw_invalid("multi-task buffers cannot use shared storage");
    seed_ = s;
    task_global_ = task_global;
    offsets_.push_back(0);
    for (py::handle q : tasks) offsets_.push_back(offsets_.back() + q.cast<std::size_t>());
    if (offsets_.size() < 2) fr::throw_invalid("a multi-task buffer needs at least one task");
    if (offsets_.back() != capacity) fr::throw_invalid("the tasks' quotas must add up to the capacity");
    // In memory, every block spans all tasks and each task's core gets its slice: one allocation per column (huge
    // pages for big ones, as for one buffer), task t's rows at [offset_t, offset_t + quota_t). Memory-mapped, each
    // task maps its own files in <storage_dir>/task-<t> (the Python layer checked and locked them).
    // Stored fields are laid out as one buffer's would be (packed records or columns, storage.h), over all slots.
    std::vector<std::pair<std::shared_ptr<std::uint8_t>, std::size_t>> whole;  // (block, bytes a slot)
    if (storage_dir.empty()) {
      const std::vector<fr::Column> cols = fr::allocate_columns(specs, fr::plan_storage(specs, layout), capacity, nullptr);
      for (const fr::Column& c : cols) whole.emplace_back(c.memory(), c.stride());
      for (std::size_t j = 0; j < extra.size(); ++j)
        whole.emplace_back(fr::allocate_zeroed(fr::checked_mul(capacity, extra[j]), j > 0), extra[j]);
      whole.emplace_back(fr::allocate_zeroed(fr::checked_mul(capacity, 8)), 8);
      task_cols_ = fr::column_refs(cols);  // the blocks outlive this vector: whole and the tasks' cores hold them
    }
    std::vector<std::size_t> strides;
    for (std::size_t f = 0; f < specs.size() && !whole.empty(); ++f) strides.push_back(whole[f].second);
    for (std::size_t t = 0; t + 1 < offsets_.size(); ++t) {
      std::vector<std::shared_ptr<std::uint8_t>> slice;
      for (const auto& [block, per_slot] : whole)  // aliasing: each slice keeps the whole block alive
        slice.emplace_back(block, block.get() + offsets_[t] * per_slot);
      // each task's generator: the buffer's seed mixed with the task number (splitmix64's constant)
      const std::uint64_t ts = (s + 0x9E3779B97F4A7C15ull * (t + 1)) & 0x7FFFFFFFFFFFFFFFull;  // a valid seed
      const std::string dir = storage_dir.empty() ? std::string() : storage_dir + "/task-" + std::to_string(t);
      std::unique_ptr<Buffer> child(new Buffer(offsets_[t + 1] - offsets_[t], names, shapes, dtypes, py::int_(ts),
                                               prioritized, alpha, eps, stored_max, dir, episodes, "", false,
                                               py::none(), true, columnar, storage_dir.empty() ? &slice : nullptr,
                                               storage_dir.empty() ? &strides : nullptr));
      tasks_.push_back(child.get());
      task_objs_.push_back(py::cast(std::move(child)));  // a Python _Buffer that owns it
    }
    py::module_ np = py::module_::import("numpy");
    out_.emplace_back("task", py::tuple(), np.attr("dtype")("int64"));
    row_bytes_.push_back(out_.back().row_bytes);
    return;
  }
  std::unique_ptr<fr::SharedRegion> region;
  if (!shared.empty()) {
    // Episodic and memory-mapped buffers are refused by the Python layer (fastreplay/buffer.py).
    if (ep || !storage_dir.empty()) fr::throw_invalid("shared storage holds plain buffers only");
    const std::uint64_t fp = shared_fingerprint(capacity, specs, prioritized, eps, stored_max, columnar);
    region.reset(new fr::SharedRegion(shared, !attach, fp));
    if (attach) {
      s = region->seed();
    } else {
      shared_name_ = std::make_shared<fr::SharedName>(shared);  // removes the name again if construction fails
    }
    shared_ = shared;
  }
  std::vector<std::shared_ptr<std::uint8_t>> memory;
  std::vector<std::size_t> strides;
  if (task_memory) memory = *task_memory;
  if (task_strides) strides = *task_strides;
  if (!storage_dir.empty()) memory = map_storage(storage_dir, specs, extra, capacity, mapped_);  // one file a column
  if (prioritized) {
    const auto mode = stored_max ? fr::PrioritizedCore::MaxMode::Stored : fr::PrioritizedCore::MaxMode::AllTime;
    per_ = new fr::PrioritizedCore(capacity, specs, s, alpha, eps, mode, memory, ep.get(), region.get(), layout,
                                   strides);
    core_.reset(per_);
  } else {
    core_.reset(new fr::ReplayCore(capacity, specs, s, memory, ep.get(), region.get(), layout, strides));
  }
  if (region) region->finish(s);
}

fr::EpisodeIndex& Buffer::episodes(const char* fn) const {
  if (!core().episodes()) fr::throw_type(std::string(fn) + " needs an episodic buffer (num_envs, frame_stack, n_step, ...)");
  return *core().episodes();
}

fr::PrioritizedCore& Buffer::per(const char* fn) const {
  if (multi() && prioritized_) fr::throw_type(std::string(fn) + " is per task in a multi-task buffer");
  if (!per_) fr::throw_type(std::string(fn) + " needs a PrioritizedReplayBuffer");
  return *per_;
}

fr::ReplayCore* Buffer::checked_core() const {
  if (!core_) fr::throw_type("this is not available for a multi-task buffer (yet): it has one core per task");
  return core_.get();
}

std::string Buffer::field_list() const {
  std::string s;
  for (std::size_t i = 0; i < fields_.size(); ++i) s += (i ? ", " : "") + fields_[i].name;
  return s;
}

void Buffer::add(const py::args& args, const py::kwargs& kwargs) {
  const std::size_t nf = fields_.size();
  // Owned references: a value found in a caller's dict (obs={...}) must outlive the copy even if another thread
  // (or Python code run by a conversion) removes it from that dict.
  std::vector<py::object> vals(nf);
  if (args.size() > nf)
    fr::throw_type("add: takes at most " + std::to_string(nf) + " positional values (one per field), got " +
                   std::to_string(args.size()));
  for (std::size_t i = 0; i < args.size(); ++i) vals[i] = args[i];
  PyObject *key, *value;
  PyObject* task = nullptr;  // multi-task buffers: the task=... keyword
  Py_ssize_t pos = 0;
  while (PyDict_Next(kwargs.ptr(), &pos, &key, &value)) {
    PyObject* idx = PyDict_GetItemWithError(index_.ptr(), key);
    if (!idx) {
      if (PyErr_Occurred()) throw py::error_already_set();
      if (multi() && PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, "task") == 0) {
        task = value == Py_None ? nullptr : value;  // task=None: as if not given
        continue;
      }
      if (PyDict_Check(value) && expand_dict(key, value, vals)) continue;
      fr::throw_type("add: unknown field '" + py::str(key).cast<std::string>() + "'; the fields are " + field_list());
    }
    const std::size_t i = PyLong_AsSize_t(idx);
    if (vals[i]) fr::throw_type("add: field '" + fields_[i].name + "' given twice");
    vals[i] = py::reinterpret_borrow<py::object>(value);
  }
  for (std::size_t i = 0; i < nf; ++i)
    if (!vals[i])
      fr::throw_type("add: missing field '" + fields_[i].name + "'; every add needs all of " + field_list());

  std::vector<Source> src(nf);
  for (std::size_t i = 0; i < nf; ++i) convert("add", fields_[i], vals[i].ptr(), src[i]);
  const npy_intp rows = src[0].rows;
  for (std::size_t i = 1; i < nf; ++i) {
    if (src[i].rows == rows) continue;
    auto desc = [](const Field& f, const Source& s) {
      return "'" + f.name + "' has " + (s.batched ? std::to_string(s.rows) + " rows" : std::string("a single row"));
    };
    fr::throw_invalid("add: fields disagree on the number of rows: " + desc(fields_[0], src[0]) + ", " +
                      desc(fields_[i], src[i]));
  }
  if (multi()) {
    if (!task) fr::throw_type("add: a multi-task buffer needs task=... (an int, or one per row)");
    return add_tasks(task, src, static_cast<std::size_t>(rows));
  }
  std::vector<const void*> ptrs(nf);
  for (std::size_t i = 0; i < nf; ++i) ptrs[i] = src[i].ptr;
  ReleaseGil nogil;
  core_->add(ptrs.data(), static_cast<std::size_t>(rows));
}

// A dict given for the name `key` supplies the fields `key.<k>`; a dict value whose key is not a field itself is
// expanded the same way, so a nested gymnasium Dict observation (obs={"inner": {"b": ...}}) fills `obs.inner.b`.
// Returns false when no field starts with `key.` (the caller then reports an unknown field). The recursion ends:
// each level adds a component to a prefix that some field name must start with.
bool Buffer::expand_dict(PyObject* key, PyObject* dict, std::vector<py::object>& vals) const {
  const std::string group = py::str(key).cast<std::string>();
  const std::string prefix = group + ".";
  auto has_prefix = [this](const std::string& p) {
    return std::any_of(fields_.begin(), fields_.end(),
                       [&](const Field& f) { return f.name.compare(0, p.size(), p) == 0; });
  };
  if (!has_prefix(prefix)) return false;
  PyObject *sub, *value;
  Py_ssize_t pos = 0;
  while (PyDict_Next(dict, &pos, &sub, &value)) {
    if (!PyUnicode_Check(sub))
      fr::throw_type("add: field '" + group + "' has key " + py::repr(sub).cast<std::string>() +
                     " that is not a field");
    py::str name(prefix + py::str(sub).cast<std::string>());
    PyObject* idx = PyDict_GetItemWithError(index_.ptr(), name.ptr());
    if (idx) {
      const std::size_t i = PyLong_AsSize_t(idx);
      if (vals[i]) fr::throw_type("add: field '" + fields_[i].name + "' given twice");
      vals[i] = py::reinterpret_borrow<py::object>(value);  // held: a conversion may run Python code
      continue;
    }
    if (PyErr_Occurred()) throw py::error_already_set();
    if (PyDict_Check(value) && expand_dict(name.ptr(), value, vals)) continue;
    if (has_prefix(name.cast<std::string>() + "."))  // a group given something other than a dict
      fr::throw_type("add: field '" + name.cast<std::string>() + "' must be a dict of its keys, got " +
                     py::type::handle_of(value).attr("__name__").cast<std::string>());
    fr::throw_type("add: field '" + group + "' has key '" + py::str(sub).cast<std::string>() + "' that is not a field");
  }
  for (std::size_t i = 0; i < fields_.size(); ++i)
    if (fields_[i].name.compare(0, prefix.size(), prefix) == 0 && !vals[i])
      fr::throw_type("add: field '" + group + "' is missing key '" + fields_[i].name.substr(prefix.size()) + "'");
  return true;
}

void Buffer::fill(Target& t, double beta) {
  if (multi()) return fill_tasks(t, beta, {});  // prefetch: no tasks argument, the default mode (no GIL needed)
  if (per_)
    per_->sample(t.n, beta, t.indices, t.weights, t.generations, t.rows());
  else  // generations only matter for priority updates: uniform batches skip that extra random read per row
    core_->sample(t.n, t.indices, nullptr, t.rows());
}

std::unique_ptr<fr::BatchBlock> Buffer::sample_block(const fr::BatchLayout& layout, double beta) {
  auto block = std::make_unique<fr::BatchBlock>(pool_, layout);
  Target t = target_of(*block);
  fill(t, beta);
  return block;
}

py::object Buffer::sample(py::handle batch_size, PyObject* beta_arg, py::handle out, py::handle tasks) {
  const std::size_t n = batch_size_arg(batch_size.ptr(), "sample");
  const double beta = beta_arg ? real_arg(beta_arg, "sample", "beta") : 0.0;  // its range: the core's check
  if (!tasks.is_none() && !multi()) fr::throw_type("sample: tasks=... needs a multi-task buffer (tasks=K)");
  std::vector<double> w;
  if (multi()) {
    if (beta_arg) fr::PrioritizedCore::check_beta("sample", beta);
    w = task_weights(tasks);  // checked before anything is allocated
  }
  Target t = out.is_none() ? recycler_.acquire(pool_, n, [&] { return layout(n); }, out_, false)
                           : reuse_batch("sample", out, out_, n, prioritized());
  {
    ReleaseGil nogil;
    if (multi())
      fill_tasks(t, beta, w);
    else
      fill(t, beta);
  }
  return t.batch;
}

py::object Buffer::get(py::handle indices) {
  py::object arr = index_array("get", indices);
  if (multi()) return get_tasks(arr);
  const auto n = static_cast<std::size_t>(PyArray_SIZE(as_array(arr)));
  // The batch's own copy of the indices is checked and then read without the GIL: never the caller's array.
  Target t = new_batch(pool_, layout(n), out_, true);
  std::memcpy(t.indices, data_of<const std::int64_t>(arr), n * sizeof(std::int64_t));
  const std::int64_t* idx = t.indices;
  core_->check_indices("get", idx, n);
  {
    ReleaseGil nogil;
    core_->get(idx, n, t.generations, t.rows());
    if (t.weights) std::fill(t.weights, t.weights + n, 1.0f);
  }
  return t.batch;
}

std::size_t Buffer::update_priorities(py::handle indices, py::handle priorities, py::handle generations,
                                      bool raise_stale) {
  const char* fn = "update_priorities";
  py::object ia = index_array(fn, indices);
  const auto n = static_cast<std::size_t>(PyArray_SIZE(as_array(ia)));
  // float32 priorities (a loss's TD errors) are widened straight into the private copy below, without the
  // intermediate float64 array that float_array would make.
  const bool f32 = PyArray_CheckExact(priorities.ptr()) && PyArray_NDIM(as_array(priorities.ptr())) == 1 &&
                   PyArray_TYPE(as_array(priorities.ptr())) == NPY_FLOAT32 &&
                   PyArray_ISCARRAY_RO(as_array(priorities.ptr())) && PyArray_ISNOTSWAPPED(as_array(priorities.ptr()));
  py::object pa = f32 ? py::reinterpret_borrow<py::object>(priorities) : float_array(fn, "priorities", priorities);
  const auto np_ = static_cast<std::size_t>(PyArray_SIZE(as_array(pa)));
  if (np_ != n)
    fr::throw_invalid(std::string(fn) + ": indices and priorities must have the same length, got " +
                      std::to_string(n) + " indices and " + std::to_string(np_) + " priorities");
  py::object ga;
  // Private copies (see private_data), per thread so that a call allocates nothing once they have grown (up to
  // 64 Ki rows; larger ones are freed when the call ends). No call on this thread can start while one uses them:
  // the core calls no Python code.
  thread_local std::vector<std::int64_t> idx_copy;
  thread_local std::vector<double> prio_copy;
  thread_local std::vector<std::uint64_t> gens_copy;
  struct Trim {
    ~Trim() {
      constexpr std::size_t kKeep = std::size_t(1) << 16;
      if (idx_copy.capacity() > kKeep) std::vector<std::int64_t>().swap(idx_copy);
      if (prio_copy.capacity() > kKeep) std::vector<double>().swap(prio_copy);
      if (gens_copy.capacity() > kKeep) std::vector<std::uint64_t>().swap(gens_copy);
    }
  } trim;
  const std::uint64_t* gens = nullptr;
  if (!generations.is_none()) {
    ga = uint_array(fn, "generations", generations);
    const auto ng = static_cast<std::size_t>(PyArray_SIZE(as_array(ga)));
    if (ng != n)
      fr::throw_invalid(std::string(fn) + ": generations must have one entry per index, got " + std::to_string(ng) +
                        " for " + std::to_string(n));
    gens = private_data(ga, gens_copy);
  }
  const auto priorities_data = [&]() -> const double* {
    if (!f32) return private_data(pa, prio_copy);
    const float* p = data_of<const float>(pa);
    prio_copy.assign(p, p + n);
    return prio_copy.data();
  };
  if (multi()) {
    if (!prioritized_) fr::throw_type(std::string(fn) + " needs a PrioritizedReplayBuffer");
    const std::int64_t* idx = private_data(ia, idx_copy);
    const double* pr = priorities_data();
    return update_priorities_tasks(idx, pr, n, gens, raise_stale);
  }
  fr::PrioritizedCore& core = per(fn);
  // The core checks them after the GIL is released: they must not change after that check.
  const std::int64_t* idx = private_data(ia, idx_copy);
  const double* pr = priorities_data();
  ReleaseGil nogil;
  return core.update_priorities(idx, pr, n, gens, raise_stale);
}

py::object Buffer::generations(py::handle indices) const {
  py::object ia = index_array("generations", indices);
  const auto n = static_cast<std::size_t>(PyArray_SIZE(as_array(ia)));
  const auto* idx = data_of<const std::int64_t>(ia);
  if (multi()) {
    for (std::size_t k = 0; k < n; ++k)
      if (idx[k] < 0 || static_cast<std::size_t>(idx[k]) >= capacity())
        fr::throw_index("generations: index " + std::to_string(idx[k]) + " at position " + std::to_string(k) +
                        " is outside the buffer's " + std::to_string(capacity()) + " slots");
  } else {
    core_->check_slots("generations", idx, n);
  }
  py::object out = new_array(static_cast<npy_intp>(n), NPY_UINT64);
  auto* o = data_of<std::uint64_t>(out);
  for (std::size_t k = 0; k < n; ++k) {
    if (multi()) {
      const std::size_t t = task_of(idx[k]);
      o[k] = tasks_[t]->core_->ring().generation(static_cast<std::size_t>(idx[k]) - offsets_[t]);
    } else {
      o[k] = core_->ring().generation(static_cast<std::size_t>(idx[k]));
    }
  }
  return out;
}

py::object Buffer::storage_view(py::handle self, std::size_t i) const {
  const Field& f = stored_.at(i);
  std::vector<npy_intp> dims(f.shape);
  dims.insert(dims.begin(), static_cast<npy_intp>(core().size()));
  const fr::Column& c = core().column(i);
  return make_view(f.descr(), dims, c.data(), self.ptr(), false, c.contiguous() ? 0 : static_cast<npy_intp>(c.stride()));
}

py::object Buffer::leaves() const {
  const fr::PrioritizedCore& core = per("_leaves");
  py::object out = new_array(static_cast<npy_intp>(core.capacity()), NPY_FLOAT64);
  auto* o = data_of<double>(out);
  for (std::size_t i = 0; i < core.capacity(); ++i) o[i] = core.tree().leaf(i);
  return out;
}

// The tree leaves (p + eps)**alpha at `indices` (float64[n]); for sharded replay (fastreplay.ray), whose learner
// computes importance weights from the leaves of every shard. Single-task prioritized buffers only.
py::object Buffer::leaves_at(py::handle indices) const {
  const fr::PrioritizedCore& core = per("_leaves_at");
  py::object ia = index_array("_leaves_at", indices);
  const auto n = static_cast<std::size_t>(PyArray_SIZE(as_array(ia)));
  const auto* idx = data_of<const std::int64_t>(ia);
  core_->check_slots("_leaves_at", idx, n);
  py::object out = new_array(static_cast<npy_intp>(n), NPY_FLOAT64);
  auto* o = data_of<double>(out);
  for (std::size_t k = 0; k < n; ++k) o[k] = core.tree().leaf(static_cast<std::size_t>(idx[k]));
  return out;
}

py::object Buffer::priorities() const {
  const fr::PrioritizedCore& core = per("_priorities");
  py::object out = new_array(static_cast<npy_intp>(core.size()), NPY_FLOAT64);
  auto* o = data_of<double>(out);
  for (std::size_t i = 0; i < core.size(); ++i) o[i] = core.priority(i);
  return out;
}

void init_buffer(py::module_& m) {
  py::class_<Buffer> cls(m, "_Buffer", "Columnar ring buffer core; see fastreplay.ReplayBuffer.");
  cls.def(py::init<std::size_t, py::list, py::list, py::list, py::object, bool, double, double, bool, std::string,
                   py::object, std::string, bool, py::object, bool, bool>(),
          py::arg("capacity"), py::arg("names"), py::arg("shapes"), py::arg("dtypes"), py::arg("seed"),
          py::arg("prioritized"), py::arg("alpha"), py::arg("eps"), py::arg("stored_max"),
          py::arg("storage_dir") = "", py::arg("episodes") = py::none(), py::arg("shared") = "",
          py::arg("attach") = false, py::arg("tasks") = py::none(), py::arg("task_global") = true,
          py::arg("columnar") = false)
      .def("add", &Buffer::add,
           "add(*values, **fields) -> None\n\nStore one transition (each field of its row shape) or N transitions "
           "(each field with a leading axis N). Every field must be given, positionally in field order or by name.")
      .def("get", &Buffer::get, py::arg("indices"),
           "get(indices) -> Batch\n\nThe transitions at the given slots (int[B], each in [0, len(self))), copied,\n"
           "with batch.generations uint64[B].")
      .def("_update_priorities", &Buffer::update_priorities, py::arg("indices"), py::arg("priorities"),
           py::arg("generations"), py::arg("raise_stale"))
      .def("_storage_view", [](py::object self, std::size_t i) { return self.cast<Buffer&>().storage_view(self, i); },
           py::arg("field"))
      // True once __init__ has run (the Python classes refuse a second __init__, which pybind11 would ignore).
      .def("_initialized", [](py::handle self) { return buffer_initialized(self); })
      .def("__len__", [](const Buffer& b) { return b.size(); })
      .def_property_readonly("capacity", [](const Buffer& b) { return b.capacity(); },
                             "Maximum number of transitions stored (int).")
      .def_property_readonly("next_index", [](const Buffer& b) { return b.core().ring().next_index(); },
                             "Slot the next transition is written to (int).")
      .def_property_readonly("total_added", [](const Buffer& b) { return b.total_added(); },
                             "Transitions added since creation or the last clear() (int).")
      .def_property_readonly("_shared_name", [](const Buffer& b) { return b.shared_name(); })
      .def_property_readonly("seed", [](const Buffer& b) { return b.multi() ? b.task_seed() : b.core().seed(); },
                             "Seed of the buffer's generator (int).")
      .def_property("_stream", [](const Buffer& b) { return b.core().stream(); },
                    [](Buffer& b, std::uint64_t s) { b.core().set_stream(s); })
      .def("generations", &Buffer::generations, py::arg("indices"),
           "generations(indices) -> uint64[B]: the generation of each slot (int[B] in [0, capacity)): the lap of\n"
           "the ring in which it was last written, counted from 1 (0: never written). It changes whenever the slot\n"
           "is overwritten, and clear() starts a new lap, so a batch's generations tell whether its rows are still\n"
           "stored.")
      .def("clear", [](Buffer& b) { b.clear(); }, "Remove every transition (memory is kept).")
      // Prioritized buffers only.
      .def_property("_alpha", [](const Buffer& b) { return b.any_per("alpha").alpha(); },
                    [](Buffer& b, double a) {
                      std::vector<fr::PrioritizedCore*> cores;
                      if (!b.multi()) cores.push_back(&b.per("alpha"));
                      for (std::size_t t = 0; t < b.num_tasks(); ++t) cores.push_back(&b.task(t).per("alpha"));
                      ReleaseGil nogil;  // O(capacity): the trees are rebuilt
                      for (fr::PrioritizedCore* c : cores) c->set_alpha(a);  // every task (each checks its bound)
                    })
      .def_property_readonly("_eps", [](const Buffer& b) { return b.any_per("eps").eps(); })
      .def_property_readonly("_max_priority",
                             [](const Buffer& b) {
                               if (!b.multi()) return b.per("max_priority").max_priority();
                               double m = 0.0;  // the largest of the tasks' own (each task has its own)
                               for (std::size_t t = 0; t < b.num_tasks(); ++t)
                                 m = std::max(m, b.task(t).per("max_priority").max_priority());
                               return m;
                             })
      // Multi-task buffers only.
      .def("_task_view", &Buffer::task_view, py::arg("task"))
      .def_property("_task_stream",
                    [](const Buffer& b) {
                      if (!b.multi()) fr::throw_type("_task_stream needs a multi-task buffer");
                      return b.task_stream();
                    },
                    [](Buffer& b, std::uint64_t s) {
                      if (!b.multi()) fr::throw_type("_task_stream needs a multi-task buffer");
                      b.set_task_stream(s);
                    })
      .def_property_readonly("_task_sizes",
                             [](const Buffer& b) {
                               py::list v;
                               for (std::size_t t = 0; t < b.num_tasks(); ++t) v.append(b.task(t).size());
                               return v;
                             })
      .def("_task_buffer_stat",
           [](const Buffer& b, std::size_t t, const std::string& what) {
             if (t >= b.num_tasks()) fr::throw_index("_task_buffer_stat: no task " + std::to_string(t));
             const fr::PrioritizedCore& c = b.task(t).per(what.c_str());
             if (what == "total") return c.tree().total();
             if (what == "min") return c.tree().min();
             if (what == "max_priority") return c.max_priority();
             fr::throw_invalid("_task_buffer_stat: unknown statistic " + what);
           })
      .def_property_readonly("_total", [](const Buffer& b) { return b.per("_total").tree().total(); })
      .def_property_readonly("_min", [](const Buffer& b) { return b.per("_min").tree().min(); })
      // Episodic buffers only.
      .def_property("_n_step", [](const Buffer& b) { return b.any_episodes("n_step").n_step(); },
                    [](Buffer& b, std::size_t n) {
                      if (!b.multi()) return b.episodes("n_step").set_n_step(n);
                      // the same value for every task: the first refuses a bad one before any task changed
                      for (std::size_t t = 0; t < b.num_tasks(); ++t) b.task(t).episodes("n_step").set_n_step(n);
                    })
      .def_property("_gamma", [](const Buffer& b) { return b.any_episodes("gamma").gamma(); },
                    [](Buffer& b, double g) {
                      if (!b.multi()) return b.episodes("gamma").set_gamma(g);
                      for (std::size_t t = 0; t < b.num_tasks(); ++t) b.task(t).episodes("gamma").set_gamma(g);
                    })
      .def("_episode_view",
           [](py::object self, int j) { return self.cast<Buffer&>().episode_view(self, j); }, py::arg("key"))
      .def("_leaves", &Buffer::leaves)
      .def("_priorities", &Buffer::priorities)
      .def("_leaves_at", &Buffer::leaves_at);
  init_state(cls);
  init_sequences(cls);
  init_fast_methods(cls);  // sample and _sample_prioritized (bindings/fastcall.cpp)
}

}  // namespace fastreplay_py
