// Row copies between storage and private memory: plain memcpy, or relaxed atomic bytes under ThreadSanitizer.
//
// Storage rows are read by samplers while a writer may be rewriting them (the seqlock protocol in ring.h detects
// that and retries). In C++ such overlapping plain accesses are a data race even though the torn copy is thrown
// away, and ThreadSanitizer would report it. Under TSan every access to shared storage is therefore a relaxed
// atomic byte access, which TSan understands; in normal builds it is memcpy, which compiles to the same loads
// and stores that a relaxed atomic word copy would, only wider and vectorised.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "fastreplay/common.h"

namespace fastreplay {

// Copy out of shared storage (the source may be rewritten concurrently).
inline void load_shared(void* dst, const void* src, std::size_t bytes) {
#if FASTREPLAY_TSAN
  auto* d = static_cast<unsigned char*>(dst);
  auto* s = static_cast<const unsigned char*>(src);
  for (std::size_t i = 0; i < bytes; ++i) d[i] = __atomic_load_n(s + i, __ATOMIC_RELAXED);
#else
  std::memcpy(dst, src, bytes);
#endif
}

// Copy into shared storage (a sampler may be reading the destination concurrently).
inline void store_shared(void* dst, const void* src, std::size_t bytes) {
#if FASTREPLAY_TSAN
  auto* d = static_cast<unsigned char*>(dst);
  auto* s = static_cast<const unsigned char*>(src);
  for (std::size_t i = 0; i < bytes; ++i) __atomic_store_n(d + i, s[i], __ATOMIC_RELAXED);
#else
  std::memcpy(dst, src, bytes);
#endif
}

}  // namespace fastreplay
