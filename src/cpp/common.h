// Types shared by every kernel. No Python here: kernels see raw pointers and sizes.
#pragma once
#include <cstdint>

namespace fastnn {

using index_t = std::int64_t;

}  // namespace fastnn
