// Batch objects: the Python Batch over a pooled core BatchBlock (zero-copy arrays kept alive by a capsule), and
// the arrays of a Batch the caller passes back as `out=`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "bindings/convert.h"
#include "fastreplay/batch.h"

namespace fastreplay_py {

// Where one sample writes: a batch's arrays, as raw pointers.
struct Target {
  py::object batch;
  std::size_t n = 0;
  std::int64_t* indices = nullptr;
  std::uint64_t* generations = nullptr;
  float* weights = nullptr;  // prioritized buffers only
  std::uint8_t* const* block_rows = nullptr;  // per field, into the block (fresh batches)
  std::vector<std::uint8_t*> own_rows;        // per field (a caller's batch)
  // A caller's batch: a reference to every array written, so that each outlives the sample even if another thread
  // replaces it in the batch meanwhile (the batch then keeps the new array, and the old one receives the rows).
  std::vector<py::object> keep;
  std::uint8_t* const* rows() const { return block_rows ? block_rows : own_rows.data(); }
};

// The pointers of a block's arrays (the batch object is left empty).
Target target_of(const fr::BatchBlock& block);

// What wrap() built, borrowed from the batch that holds it: the capsule that owns the block, and the arrays in the
// order fields..., indices, generations, weights (nullptr where the attribute is None).
struct BatchParts {
  PyObject* capsule = nullptr;
  std::vector<PyObject*> arrays;
};

// The Batch over a filled block: batch[name] field_dtype[n, *shape], batch.indices int64[n], batch.generations
// uint64[n] (if `with_generations` or the block has weights, else None), batch.weights float32[n] (if the block
// has weights, else None). The block returns to its pool when the last array is gone. `parts`, if given, receives
// what was built. GIL held.
py::object wrap(std::unique_ptr<fr::BatchBlock> block, const std::vector<Field>& fields, bool with_generations,
                BatchParts* parts = nullptr);

// The registered Batch class (nullptr before the package registers it), and the objects in a Batch's attribute
// slots (kSlotIndices, kSlotGenerations, kSlotWeights; borrowed, nullptr if unset), read without an attribute
// lookup. `batch` must be an instance of exactly that class. GIL held.
PyTypeObject* batch_type();
bool batch_slots_known();
enum BatchSlot { kSlotIndices = 0, kSlotGenerations = 1, kSlotWeights = 2 };
PyObject* batch_slot(PyObject* batch, BatchSlot slot);

// A fresh batch of n rows with its pointers (the batch object is `target.batch`).
Target new_batch(std::shared_ptr<fr::BlockPool> pool, const fr::BatchLayout& layout, const std::vector<Field>& fields,
                 bool with_generations);

// The arrays of `out`, a Batch from an earlier call that the caller keeps: each must have the field's dtype and
// shape [n, *shape], be writeable and C-contiguous; prioritized batches also need generations and weights.
Target reuse_batch(const char* fn, py::handle out, const std::vector<Field>& fields, std::size_t n, bool prioritized);

// Whether `o` is a Batch (an instance of the registered Batch class or a subclass), and a Batch's indices and
// generations attributes. GIL held.
bool is_batch(PyObject* o);
py::object batch_indices(PyObject* batch);
py::object batch_generations(PyObject* batch);

// Module functions: _set_batch_type (called by the package at import) and the cleanup at interpreter exit.
void init_batch_object(py::module_& m);

}  // namespace fastreplay_py
