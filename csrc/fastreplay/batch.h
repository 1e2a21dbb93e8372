// Batch memory: where each array of an n-row batch lives inside one pooled block, and the block that owns it.
//
// One batch is one 64-byte-aligned block from a BlockPool: indices int64[n], generations uint64[n], weights
// float32[n] (prioritized buffers only), then each field's n rows, every array starting on its own cache line.
// A BatchBlock returns its block to the pool when destroyed, so the pool outlives every block it handed out
// (blocks hold a shared_ptr). Nothing here touches Python: prefetch workers build batches without the GIL.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "fastreplay/common.h"
#include "fastreplay/pool.h"

namespace fastreplay {

struct BatchBlock;

// Offsets of a batch's arrays inside its block. O(fields)
struct BatchLayout {
  std::size_t n = 0, bytes = 0, indices = 0, generations = 0, weights = 0;
  bool has_weights = false;
  std::vector<std::size_t> fields;  // offset of each field's rows

  // Throws std::bad_alloc for a batch size whose block would not fit in size_t.
  BatchLayout(std::size_t n_rows, const std::vector<std::size_t>& row_bytes, bool with_weights)
      : n(n_rows), has_weights(with_weights), fields(row_bytes.size()) {
    checked_mul(n, 16);  // absurd batch sizes become MemoryError, never an overflowed size
    std::size_t at = 0;
    indices = at;
    at = align_up(at + n * 8);
    generations = at;
    at = align_up(at + n * 8);
    weights = at;
    if (has_weights) at = align_up(at + n * 4);
    for (std::size_t f = 0; f < row_bytes.size(); ++f) {
      if (row_bytes[f] && n > (std::numeric_limits<std::size_t>::max() / 2 - at) / row_bytes[f]) throw std::bad_alloc();
      fields[f] = at;
      at = align_up(at + n * row_bytes[f]);
    }
    bytes = at;
  }
  BatchLayout() = default;

  static std::size_t align_up(std::size_t x) { return (x + kCacheLine - 1) / kCacheLine * kCacheLine; }
};

// The memory of one batch: the block and where each array starts in it.
struct BatchBlock {
  std::shared_ptr<BlockPool> pool;
  std::uint8_t* block = nullptr;
  std::size_t bytes = 0;
  std::size_t n = 0;
  std::int64_t* indices = nullptr;
  std::uint64_t* generations = nullptr;
  float* weights = nullptr;  // null unless the layout has weights
  std::vector<std::uint8_t*> rows;  // per field

  // A block for `layout` from `pool`. Throws std::bad_alloc. O(fields)
  BatchBlock(std::shared_ptr<BlockPool> from, const BatchLayout& layout)
      : pool(std::move(from)), bytes(layout.bytes), n(layout.n) {
    block = static_cast<std::uint8_t*>(pool->acquire(bytes));
    indices = reinterpret_cast<std::int64_t*>(block + layout.indices);
    generations = reinterpret_cast<std::uint64_t*>(block + layout.generations);
    if (layout.has_weights) weights = reinterpret_cast<float*>(block + layout.weights);
    rows.resize(layout.fields.size());
    for (std::size_t f = 0; f < rows.size(); ++f) rows[f] = block + layout.fields[f];
  }
  ~BatchBlock() {
    if (block) pool->release(block, bytes);
  }
  BatchBlock(const BatchBlock&) = delete;
  BatchBlock& operator=(const BatchBlock&) = delete;
};

}  // namespace fastreplay
