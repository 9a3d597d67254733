#pragma once

namespace algomesh::detail {

struct ThrowTrace {
  static constexpr int kMaxFrames = 64;
  const void* object = nullptr;  // the thrown object (its most-derived address)
  const void* type = nullptr;    // its std::type_info
  void* frames[kMaxFrames];
  int depth = 0;
};

// This thread's most recent throw.
const ThrowTrace& last_throw_trace();

}  // namespace algomesh::detail
