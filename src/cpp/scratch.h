// Grow-only per-thread scratch memory for the ISA translation units (*_isa.cpp).
// 64-byte aligned, so that a vector load from the start of a row is never split
// across two cache lines; no allocation per call after warm-up. No library
// templates (std::vector): a template's copy compiled with one ISA's flags could
// be linked into another's code.
#pragma once

#include <cstddef>
#include <cstdlib>

#include "common.h"

#ifndef FASTNN_ISA_NS
#error "scratch.h is only for ISA translation units (FASTNN_ISA_NS must be defined)"
#endif

namespace fastnn {
namespace FASTNN_ISA_NS {
namespace {

class ScratchBuf {
 public:
  ScratchBuf() = default;
  ScratchBuf(const ScratchBuf&) = delete;
  ScratchBuf& operator=(const ScratchBuf&) = delete;
  ~ScratchBuf() { std::free(p_); }
  // At least `bytes` bytes (the contents of a smaller earlier request are not
  // kept), or nullptr if the allocation fails.
  void* get(std::size_t bytes) {
    if (bytes > cap_) {
      std::free(p_);
      cap_ = 0;
      const std::size_t rounded = (bytes + 4095) / 4096 * 4096;
      p_ = std::aligned_alloc(64, rounded);
      if (p_ != nullptr) cap_ = rounded;
    }
    return p_;
  }
  template <class T>
  T* get_array(index_t count) {
    return static_cast<T*>(get(static_cast<std::size_t>(count) * sizeof(T)));
  }

 private:
  void* p_ = nullptr;
  std::size_t cap_ = 0;
};

}  // namespace
}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
