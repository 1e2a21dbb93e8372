// Batch recycling: a small batch that nobody holds any more is refilled by the next sample instead of rebuilt.
//
// A fresh Batch costs about 0.5 us of Python objects around its block (a dict, one array per field, three
// attribute arrays, a capsule, and their frees), a fifth of a whole sample(256) of CartPole rows. The recycler
// keeps the last few small batches a buffer handed out. When one of them is referenced by nobody but the recycler
// (the batch, each of its arrays and its capsule at their minimum reference counts) and is exactly as it was built
// (same class, keys, array objects, data pointers, dtypes, shapes, flags, no weak references), then no Python code
// can reach its memory any more: the next sample writes into it and returns the same object. This is the same
// promise as the pool's, which hands a freed block to the next batch anyway; a batch or array that anyone still
// holds (a variable, a view, a torch tensor, a memoryview) is never touched. Anything else, including a batch the
// user changed, is left alone and a fresh batch is built.
//
// Only batches whose block is at most kMaxBytes are kept (image batches are dominated by their copy, and keeping
// them would hold megabytes per buffer). Under free-threaded Python reference counts are not a safe test, and
// recycling is off. Every method needs the GIL.
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <vector>

#include "bindings/batch_object.h"
#include "fastreplay/batch.h"

namespace fastreplay_py {

class BatchRecycler {
 public:
  static constexpr std::size_t kEntries = 4;
  static constexpr std::size_t kMaxBytes = std::size_t(1) << 20;

  // A batch of n rows over `fields`: a recycled one that nobody else holds, or a fresh one over the block of
  // make_layout() (remembered if small). The Target's pointers are where the sample writes.
  template <class MakeLayout>
  Target acquire(const std::shared_ptr<fr::BlockPool>& pool, std::size_t n, MakeLayout&& make_layout,
                 const std::vector<Field>& fields, bool with_generations) {
    if (Target t = recycled(n, fields, with_generations); t.batch) return t;
    return fresh(pool, make_layout(), fields, with_generations);
  }

 private:
  struct Entry {
    py::object batch, capsule;
    const fr::BatchBlock* block = nullptr;  // owned by the capsule
    bool with_generations = false;
    std::vector<PyObject*> arrays;  // BatchParts::arrays
    std::vector<PyArray_Descr*> descrs;  // each array's dtype and flags as built
    std::vector<int> flags;
  };
  static bool reusable(const Entry& e, std::size_t n, const std::vector<Field>& fields, bool with_generations);
  static bool enabled();
  // A remembered batch that nobody else holds (t.batch empty if none), and a fresh one.
  Target recycled(std::size_t n, const std::vector<Field>& fields, bool with_generations) const;
  Target fresh(const std::shared_ptr<fr::BlockPool>& pool, const fr::BatchLayout& layout,
               const std::vector<Field>& fields, bool with_generations);
  std::array<Entry, kEntries> ring_;
  std::size_t next_ = 0;  // the entry a fresh batch replaces
};

}  // namespace fastreplay_py
