// Where an exception was thrown: C++ unwinds the stack before a catch sees the exception,
// so the runner records the stack at the throw itself by standing in front of the C++ ABI's
// __cxa_throw (the executable's definition interposes libstdc++'s), then calls the real one.
// One record per thread: the most recent throw, with the object it threw.
#include <dlfcn.h>
#include <execinfo.h>

#include <typeinfo>

#include "throw_hook.hpp"

namespace algomesh::detail {

thread_local ThrowTrace last_throw;

const ThrowTrace& last_throw_trace() { return last_throw; }

}  // namespace algomesh::detail

extern "C" {

using cxa_throw_fn = void (*)(void*, std::type_info*, void (*)(void*));

[[noreturn]] void __cxa_throw(void* thrown, std::type_info* type, void (*destroy)(void*)) {
  static cxa_throw_fn real = reinterpret_cast<cxa_throw_fn>(dlsym(RTLD_NEXT, "__cxa_throw"));
  auto& t = algomesh::detail::last_throw;
  t.object = thrown;
  t.type = type;
  t.depth = backtrace(t.frames, algomesh::detail::ThrowTrace::kMaxFrames);
  real(thrown, type, destroy);
  __builtin_unreachable();
}

}  // extern "C"
