// The Python-facing buffer: fields, keyword expansion and conversion around a ReplayCore or PrioritizedCore.
//
// Pattern of every hot call: with the GIL, parse and validate all input and allocate outputs (nothing is written
// to the buffer until everything is checked), then release the GIL around the core call, which touches only raw
// pointers. Rules about values (beta, empty buffer, indices, priorities) are checked by the core, which throws;
// this layer checks only types, shapes and dtypes.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bindings/batch_object.h"
#include "bindings/batch_recycler.h"
#include "bindings/convert.h"
#include "bindings/gil.h"  // ReleaseGil: every GIL release of the bindings
#include "fastreplay/batch.h"
#include "fastreplay/pool.h"
#include "fastreplay/prioritized.h"
#include "fastreplay/replay.h"
#include "fastreplay/shared.h"

namespace fastreplay_py {

class Buffer {
 public:
  // Fields are (names[i], shapes[i], dtypes[i]); `storage_dir` non-empty maps the columns to files there.
  // Argument values were validated by the Python layer (fastreplay/_args.py).
  // `tasks` (None, or one quota per task adding up to capacity) makes it a multi-task buffer (tasks.cpp): one child
  // buffer per task, this one routes adds, samples, gets and priority updates; `task_global` picks how prioritized
  // tasks' weights are normalised (fastreplay/tasks.h). `task_memory` (C++ only): a task's slices of the
  // multi-task buffer's blocks, as ReplayCore takes them, and `task_strides` their strides (packed records).
  // `columnar`: every stored field in a column of its own, never packed into records (fastreplay/storage.h).
  // `shared` non-empty: all memory in the shared-memory object of that name (fastreplay/shared.h), created, or with
  // `attach` the one another process created with the same arguments (its seed is used).
  // `episodes` (None for a plain buffer) makes it episodic: a dict from fastreplay/buffer.py with the options
  // (lanes, dedup, stack, zero_pad, next_step, n_step, gamma, stacked_input), the observation field names (obs,
  // next_obs) and the stored and batch layouts (stored, batch: (names, shapes, dtypes)).
  Buffer(std::size_t capacity, const py::list& names, const py::list& shapes, const py::list& dtypes, py::object seed,
         bool prioritized, double alpha, double eps, bool stored_max, const std::string& storage_dir,
         py::object episodes, const std::string& shared, bool attach, py::object tasks = py::none(),
         bool task_global = true, bool columnar = false,
         const std::vector<std::shared_ptr<std::uint8_t>>* task_memory = nullptr,
         const std::vector<std::size_t>* task_strides = nullptr);

  // add(*values, **fields): positional values in field order, keywords by name; dict values expand into 'name.key'.
  // A value that already has the field's dtype and layout is copied in place, without the GIL: if another thread
  // writes that array meanwhile, the stored row may mix old and new values (the caller's race), but every object
  // it reads is kept alive for the whole call.
  void add(const py::args& args, const py::kwargs& kwargs);
  // sample(batch_size, out=None, tasks=None); prioritized buffers also take beta (nullptr for uniform buffers).
  py::object sample(py::handle batch_size, PyObject* beta, py::handle out, py::handle tasks = py::none());
  // get(indices): copies of the rows at the given slots, with their generations.
  py::object get(py::handle indices);
  // Returns the number of rows skipped as stale; `generations` None means no stale check. Indices, priorities and
  // generations are copied into memory no other thread can reach before the GIL is released.
  std::size_t update_priorities(py::handle indices, py::handle priorities, py::handle generations, bool raise_stale);
  py::object generations(py::handle indices) const;
  // Read-only view of the first len(buffer) rows of field i, aliasing storage.
  py::object storage_view(py::handle self, std::size_t i) const;
  py::object leaves() const;      // float64[capacity]: the sum tree's leaves (prioritized)
  py::object priorities() const;  // float64[len]: raw priorities (prioritized)
  py::object leaves_at(py::handle indices) const;  // float64[n]: tree leaves at indices (fastreplay.ray)

  // Checkpoints and memory-mapped storage (state.cpp).
  py::dict export_state() const;
  void restore_state(std::uint64_t cursor, std::uint64_t base, std::uint64_t stream, py::handle seq,
                     py::handle priorities, double max_all_time);
  std::size_t reopen(std::uint64_t base);
  void flush();
  void restore_priorities(py::handle priorities, double max_all_time);
  py::object raw_view(py::handle self, std::size_t i, std::size_t n) const;

  // Name of the shared-memory object ("" unless shared storage; attached buffers report it too).
  std::string shared_name() const { return shared_; }
  // The core; TypeError for a multi-task buffer, whose cores are its tasks' (every caller of core() is a method
  // that has no per-task meaning yet: checkpoints, storage views, ...).
  fr::ReplayCore& core() { return *checked_core(); }
  const fr::ReplayCore& core() const { return *checked_core(); }

  // --- multi-task buffers (tasks.cpp) -----------------------------------------------------------------------
  bool multi() const { return !tasks_.empty(); }
  std::size_t num_tasks() const { return tasks_.size(); }
  Buffer& task(std::size_t t) const { return *tasks_[t]; }
  // Task t's own buffer as a Python object (checkpoints of each task); IndexError for a task that does not exist.
  py::object task_view(std::size_t t) const;
  std::uint64_t task_stream() const { return calls_.load(std::memory_order_relaxed); }
  void set_task_stream(std::uint64_t s) { calls_.store(s, std::memory_order_relaxed); }
  std::size_t size() const;          // transitions stored, over all tasks
  std::size_t capacity() const;      // slots, over all tasks
  std::uint64_t total_added() const;
  void clear();
  std::uint64_t task_seed() const { return seed_; }
  // The prioritized core (task 0's in a multi-task buffer: alpha and eps are the same in every task).
  fr::PrioritizedCore& any_per(const char* fn) const { return multi() ? tasks_[0]->per(fn) : per(fn); }
  fr::EpisodeIndex& any_episodes(const char* fn) const { return multi() ? tasks_[0]->episodes(fn) : episodes(fn); }
  // The prioritized core; TypeError naming `fn` for uniform buffers.
  fr::PrioritizedCore& per(const char* fn = "this method") const;
  bool prioritized() const { return prioritized_; }
  // Fields of add's input, of the stored columns, and of batches (the same three lists for a plain buffer).
  const std::vector<Field>& fields() const { return fields_; }
  const std::vector<Field>& stored_fields() const { return stored_; }
  const std::vector<Field>& batch_fields() const { return out_; }
  // Episodic buffers: writable view of the episode starts (uint64[capacity]) or (j >= 0) of observation key j's
  // finals (capacity rows), for checkpoints only.
  py::object episode_view(py::handle self, int j) const;
  fr::EpisodeIndex& episodes(const char* fn) const;

  // Batches: layout of an n-row batch, and one sampled into a fresh block (no GIL needed: prefetch workers).
  fr::BatchLayout layout(std::size_t n) const { return fr::BatchLayout(n, row_bytes_, prioritized()); }
  std::unique_ptr<fr::BatchBlock> sample_block(const fr::BatchLayout& layout, double beta);

 private:
  fr::ReplayCore* checked_core() const;
  void fill(Target& t, double beta);  // a multi-task buffer: by stored size (the default tasks mode)
  // Multi-task: route rows of one add to their tasks; the whole batch across tasks; get and generations by slot.
  void add_tasks(PyObject* task, const std::vector<Source>& src, std::size_t rows);
  void fill_tasks(Target& t, double beta, const std::vector<double>& weights);
  std::vector<double> task_weights(py::handle tasks) const;
  py::object get_tasks(py::object indices);
  std::size_t update_priorities_tasks(const std::int64_t* idx, const double* pr, std::size_t n,
                                      const std::uint64_t* gens, bool raise_stale);
  // The task of global slot `slot` (< capacity()).
  std::size_t task_of(std::int64_t slot) const;
  // IndexError unless slot `local` of task t holds a transition (`slot`, `pos`: the global index and its position).
  void check_task_slot(const char* fn, std::size_t t, std::int64_t local, std::int64_t slot, std::size_t pos) const;
  bool expand_dict(PyObject* key, PyObject* dict, std::vector<py::object>& vals) const;
  std::string field_list() const;
  py::object priority_array(py::handle priorities) const;

  std::shared_ptr<fr::BlockPool> pool_;
  BatchRecycler recycler_;  // sample()'s small batches that nobody holds any more
  std::vector<Field> fields_, stored_, out_;
  std::vector<std::size_t> row_bytes_;  // of batch fields
  py::dict index_;  // interned name -> field position
  std::vector<std::pair<std::shared_ptr<std::uint8_t>, std::size_t>> mapped_;  // memory-mapped files, if any
  std::string shared_;                            // shared storage: the object's name
  std::shared_ptr<fr::SharedName> shared_name_;   // shared storage, creator only: removes the name at the end
  std::unique_ptr<fr::ReplayCore> core_;  // null in a multi-task buffer
  fr::PrioritizedCore* per_ = nullptr;  // non-null for prioritized single-task buffers (same object as core_)
  bool prioritized_ = false;
  std::vector<Buffer*> tasks_;                  // multi-task: one child buffer per task, owned by task_objs_
  std::vector<py::object> task_objs_;           // multi-task: the children as Python objects (_task_view)
  std::vector<std::size_t> offsets_;            // multi-task: first global slot of each task, then capacity
  std::vector<fr::ColumnRef> task_cols_;        // multi-task: each stored column over every task's slots
  bool task_global_ = true;                     // multi-task PER: weights normalised over all tasks
  std::uint64_t seed_ = 0;                      // multi-task: seed of the task counts' generator
  std::atomic<std::uint64_t> calls_{0};         // multi-task: its stream counter
};


// True once __init__ has constructed the C++ object of `self` (an instance of _Buffer or a subclass).
bool buffer_initialized(py::handle self);
// TypeError for an object whose __init__ never ran (made with ReplayBuffer.__new__, say): `what` names it ("buffer")
// and `how` says how such objects are made ("calling ReplayBuffer(...)"; empty: calling its class).
[[noreturn]] void throw_uninitialized(PyObject* self, const char* what = "buffer", const char* how = "");

// The _Buffer class and its methods.
void init_buffer(py::module_& m);
void init_fast_methods(py::handle cls);  // bindings/fastcall.cpp
// Checkpoint and memory-mapped storage methods of _Buffer (state.cpp).
void init_state(py::class_<Buffer>& cls);
// Sequence replay methods of _Buffer (sequences.cpp).
void init_sequences(py::class_<Buffer>& cls);
// The _Prefetcher class (prefetch.cpp).
void init_prefetch(py::module_& m);

}  // namespace fastreplay_py

namespace pybind11 {
namespace detail {

// How every method receives its object: a TypeError if __init__ never ran (an object made by
// ReplayBuffer.__new__), where pybind11's own caster would hand out uninitialised memory that it allocates on first
// use. `Uninitialized::raise(PyObject*)` throws that error.
template <class T, class Uninitialized>
class init_checked_caster : public type_caster_base<T> {
 public:
  bool load(handle src, bool convert) {
    return this->template load_impl<init_checked_caster<T, Uninitialized>>(src, convert);
  }
  void load_value(value_and_holder&& v_h) {  // called by load_impl
    if (!v_h.holder_constructed()) Uninitialized::raise(reinterpret_cast<PyObject*>(v_h.inst));
    type_caster_base<T>::load_value(std::move(v_h));
  }
};

struct BufferUninitialized {
  [[noreturn]] static void raise(PyObject* self) { fastreplay_py::throw_uninitialized(self); }
};

// Visible to every file that casts to Buffer, since they all include this header.
template <>
class type_caster<fastreplay_py::Buffer> : public init_checked_caster<fastreplay_py::Buffer, BufferUninitialized> {};

}  // namespace detail
}  // namespace pybind11
