// The algomesh C++ runner: serves algomesh.v1.Runner on $ALGOMESH_RUNNER_SOCKET for one
// algorithm (docs/runners.md, "C++"; the contract in docs/contract.md).
#include "algomesh/runner.hpp"

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <execinfo.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <iterator>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "algomesh/v1/mesh.grpc.pb.h"
#include "algomesh/v1/payload.pb.h"
#include "algomesh/v1/runner.grpc.pb.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "throw_hook.hpp"

namespace algomesh {

// Values ------------------------------------------------------------------------------

const nlohmann::json& Value::as_json() const {
  if (kind_ != Kind::Json) throw std::logic_error("the value is not JSON");
  return json_;
}

const std::string& Value::as_text() const {
  if (kind_ != Kind::Text) throw std::logic_error("the value is not text");
  return data_;
}

const std::string& Value::as_bytes() const {
  if (kind_ != Kind::Binary) throw std::logic_error("the value is not binary");
  return data_;
}

namespace {

constexpr int kMaxMessageBytes = 64 * 1024 * 1024;
constexpr int kMaxJsonDepth = 1000;
constexpr double kDefaultPipeSeconds = 300;
// gRPC caps trailing metadata at 8 KiB: the message travels twice, the stack trace once.
constexpr size_t kMessageBytes = 512, kStackBytes = 2560, kMetaBytes = 160;
const char* const kDomain = "algomesh";
const char* const kForwarded[] = {"algomesh-call", "traceparent", "tracestate"};

// UTF-8 ---------------------------------------------------------------------------------

// The length of the valid UTF-8 sequence at s[i] (0 if invalid), as Python's decoder judges.
size_t utf8_sequence(const std::string& s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n = s.size() - i;
  auto cont = [&](size_t k) { return k < n && (b(i + k) & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    unsigned char c1 = b(i + 1);
    if (c == 0xE0 && c1 < 0xA0) return 0;   // overlong
    if (c == 0xED && c1 >= 0xA0) return 0;  // surrogates
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    unsigned char c1 = b(i + 1);
    if (c == 0xF0 && c1 < 0x90) return 0;  // overlong
    if (c == 0xF4 && c1 >= 0x90) return 0;  // past U+10FFFF
    return 4;
  }
  return 0;
}

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_sequence(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// Invalid bytes become U+FFFD (proto3 strings must be UTF-8).
std::string sanitize_utf8(const std::string& s) {
  if (valid_utf8(s)) return s;
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_sequence(s, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      i += 1;
    } else {
      out.append(s, i, n);
      i += n;
    }
  }
  return out;
}

// At most `limit` bytes of `text` (valid UTF-8): its head, or its tail (a stack trace's end).
std::string cut(const std::string& raw, size_t limit, bool tail = false) {
  std::string text = sanitize_utf8(raw);
  if (text.size() <= limit) return text;
  auto continuation = [&](size_t k) { return (static_cast<unsigned char>(text[k]) & 0xC0) == 0x80; };
  if (tail) {
    size_t start = text.size() - limit;
    while (start < text.size() && continuation(start)) ++start;
    return "\xE2\x80\xA6(cut)\n" + text.substr(start);
  }
  size_t end = limit;
  while (end > 0 && continuation(end)) --end;
  return text.substr(0, end) + "\xE2\x80\xA6(cut)";
}

// Statuses ------------------------------------------------------------------------------

std::string status_details(int code, const std::string& reason, const std::string& message,
                           const std::string& stacktrace, const std::map<std::string, std::string>& metadata) {
  google::rpc::ErrorInfo info;
  info.set_reason(reason);
  info.set_domain(kDomain);
  for (const auto& [k, v] : metadata) (*info.mutable_metadata())[cut(k, 64)] = cut(v, kMetaBytes);
  google::rpc::Status status;
  status.set_code(code);
  status.set_message(cut(message, kMessageBytes));
  status.add_details()->PackFrom(info);
  if (!stacktrace.empty()) {
    google::rpc::DebugInfo debug;
    debug.set_detail(cut(stacktrace, kStackBytes, true));
    status.add_details()->PackFrom(debug);
  }
  return status.SerializeAsString();
}

Error make_error(grpc::StatusCode code, const std::string& reason, const std::string& message,
                 const std::string& stacktrace = "", const std::map<std::string, std::string>& metadata = {}) {
  return Error(code, reason, message, metadata, stacktrace,
               status_details(code, reason, message, stacktrace, metadata));
}

grpc::Status to_status(const Error& e) {
  return grpc::Status(static_cast<grpc::StatusCode>(e.code()), cut(e.what(), kMessageBytes), e.details());
}

grpc::Status status_of(grpc::StatusCode code, const std::string& reason, const std::string& message) {
  return to_status(make_error(code, reason, message));
}

// The typed error in a status from the mesh (a pipe's answer).
Error from_status(const grpc::Status& st) {
  const std::string& raw = st.error_details();
  google::rpc::Status status;
  if (!raw.empty() && status.ParseFromString(raw)) {
    std::string reason, stack;
    std::map<std::string, std::string> meta;
    bool typed = false;
    for (const auto& any : status.details()) {
      if (any.Is<google::rpc::ErrorInfo>()) {
        google::rpc::ErrorInfo info;
        if (any.UnpackTo(&info) && info.domain() == kDomain) {
          typed = true;
          reason = info.reason();
          meta.insert(info.metadata().begin(), info.metadata().end());
        }
      } else if (any.Is<google::rpc::DebugInfo>()) {
        google::rpc::DebugInfo debug;
        if (any.UnpackTo(&debug)) stack = debug.detail();
      }
    }
    if (typed) {
      std::string message = !status.message().empty() ? status.message() : st.error_message();
      return Error(st.error_code(), reason, message, meta, stack, raw);
    }
  }
  // A status without an algomesh ErrorInfo (a transport failure): typed by its code.
  std::string reason = "INTERNAL";
  switch (st.error_code()) {
    case grpc::StatusCode::DEADLINE_EXCEEDED: reason = "DEADLINE_EXCEEDED"; break;
    case grpc::StatusCode::UNAVAILABLE: reason = "MESH_UNAVAILABLE"; break;
    case grpc::StatusCode::RESOURCE_EXHAUSTED: reason = "PAYLOAD_TOO_LARGE"; break;
    case grpc::StatusCode::UNAUTHENTICATED: reason = "UNAUTHENTICATED"; break;
    case grpc::StatusCode::PERMISSION_DENIED: reason = "PERMISSION_DENIED"; break;
    case grpc::StatusCode::NOT_FOUND: reason = "ALGORITHM_NOT_FOUND"; break;
    case grpc::StatusCode::INVALID_ARGUMENT: reason = "INVALID_INPUT"; break;
    default: break;
  }
  std::string text = st.error_message().empty() ? "status " + std::to_string(st.error_code()) : st.error_message();
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE) text = "cannot reach the mesh: " + text;
  if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) text = "no answer within the call's timeout (" + text + ")";
  return make_error(st.error_code(), reason, text, "", {{"grpc_code", std::to_string(st.error_code())}});
}

// Stack traces --------------------------------------------------------------------------

std::string demangle(const char* name) {
  int status = 0;
  char* out = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  if (status != 0 || out == nullptr) return name;
  std::string s(out);
  std::free(out);
  return s;
}

// The executable's own function symbols (.symtab: also the functions of anonymous
// namespaces and static ones, which the dynamic symbol table lacks), read once from
// /proc/self/exe when the first stack trace is written.
class ExeSymbols {
 public:
  static const ExeSymbols& get() {
    static ExeSymbols symbols;
    return symbols;
  }

  // The name and offset of the function holding `address`, if the executable has it.
  bool find(uintptr_t address, std::string& name, uintptr_t& offset) const {
    if (!loaded_ || address < bias_) return false;
    uintptr_t rel = address - bias_;
    auto it = std::upper_bound(funcs_.begin(), funcs_.end(), rel,
                               [](uintptr_t a, const Func& f) { return a < f.start; });
    if (it == funcs_.begin()) return false;
    --it;
    if (rel >= it->start + std::max<uintptr_t>(it->size, 1)) return false;
    name = it->name;
    offset = rel - it->start;
    return true;
  }

 private:
  struct Func {
    uintptr_t start, size;
    std::string name;
  };

  ExeSymbols() {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&ExeSymbols::get), &info) == 0) return;
    std::ifstream f("/proc/self/exe", std::ios::binary);
    std::string elf((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (elf.size() < sizeof(Elf64_Ehdr) || std::memcmp(elf.data(), ELFMAG, SELFMAG) != 0) return;
    Elf64_Ehdr eh;
    std::memcpy(&eh, elf.data(), sizeof eh);
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_shoff == 0 ||
        eh.e_shoff + static_cast<size_t>(eh.e_shnum) * sizeof(Elf64_Shdr) > elf.size()) {
      return;
    }
    bias_ = eh.e_type == ET_DYN ? reinterpret_cast<uintptr_t>(info.dli_fbase) : 0;
    auto section = [&](size_t i) {
      Elf64_Shdr sh;
      std::memcpy(&sh, elf.data() + eh.e_shoff + i * sizeof(Elf64_Shdr), sizeof sh);
      return sh;
    };
    for (size_t i = 0; i < eh.e_shnum; ++i) {
      Elf64_Shdr sh = section(i);
      if (sh.sh_type != SHT_SYMTAB || sh.sh_link >= eh.e_shnum) continue;
      Elf64_Shdr strtab = section(sh.sh_link);
      if (sh.sh_offset + sh.sh_size > elf.size() || strtab.sh_offset + strtab.sh_size > elf.size()) continue;
      for (size_t k = 0; k + sizeof(Elf64_Sym) <= sh.sh_size; k += sizeof(Elf64_Sym)) {
        Elf64_Sym sym;
        std::memcpy(&sym, elf.data() + sh.sh_offset + k, sizeof sym);
        if (ELF64_ST_TYPE(sym.st_info) != STT_FUNC || sym.st_value == 0 || sym.st_name >= strtab.sh_size) continue;
        const char* name = elf.data() + strtab.sh_offset + sym.st_name;
        funcs_.push_back({sym.st_value, sym.st_size, std::string(name, strnlen(name, strtab.sh_size - sym.st_name))});
      }
    }
    std::sort(funcs_.begin(), funcs_.end(), [](const Func& a, const Func& b) { return a.start < b.start; });
    loaded_ = !funcs_.empty();
  }

  bool loaded_ = false;
  uintptr_t bias_ = 0;
  std::vector<Func> funcs_;
};

// One frame: "function+0xoffset (binary)".
std::string frame_line(void* frame) {
  // A return address: the call is the instruction before it.
  uintptr_t address = reinterpret_cast<uintptr_t>(frame) - 1;
  std::string name;
  uintptr_t offset = 0;
  Dl_info info{};
  bool have = dladdr(reinterpret_cast<void*>(address), &info) != 0;
  std::string object = have && info.dli_fname ? info.dli_fname : "?";
  if (ExeSymbols::get().find(address, name, offset)) {
    // found in the executable's own symbols
  } else if (have && info.dli_sname != nullptr) {
    name = info.dli_sname;
    offset = address - reinterpret_cast<uintptr_t>(info.dli_saddr);
  } else {
    std::ostringstream out;
    out << "?? [0x" << std::hex << (address + 1) << "] (" << object << ")";
    return out.str();
  }
  std::ostringstream out;
  out << demangle(name.c_str()) << "+0x" << std::hex << (offset + 1) << " (" << object << ")";
  return out.str();
}

// The frames from the throw (or here) down to the runner's own call of the algorithm.
std::string format_frames(void* const* frames, int depth, int skip) {
  std::ostringstream out;
  int n = 0;
  for (int i = skip; i < depth; ++i) {
    std::string line = frame_line(frames[i]);
    // Below the algorithm: the runner's dispatch, gRPC, the C library. Stop there.
    if (line.rfind("algomesh::detail::invoke_", 0) == 0) break;
    if (line.rfind("__cxa_throw", 0) == 0) continue;
    out << "  #" << n++ << " " << line << "\n";
  }
  return out.str();
}

std::string current_exception_type() {
  std::type_info* t = abi::__cxa_current_exception_type();
  return t ? demangle(t->name()) : "unknown";
}

// The stack where the exception being handled was thrown, if this thread recorded it; else
// (thrown on another thread and rethrown here) the stack where the runner caught it.
std::string exception_trace(const void* object, const std::string& type, const std::string& message) {
  const auto& t = detail::last_throw_trace();
  std::ostringstream out;
  out << type << ": " << message << "\n";
  // A std::exception is recognised by its address; anything else (throw 42) by its type.
  bool recorded = t.depth > 0 && (object != nullptr ? t.object == object
                                                     : t.type == abi::__cxa_current_exception_type());
  if (recorded) {
    out << "thrown at:\n" << format_frames(t.frames, t.depth, 0);
  } else {
    void* frames[detail::ThrowTrace::kMaxFrames];
    int depth = backtrace(frames, detail::ThrowTrace::kMaxFrames);
    out << "caught at (thrown on another thread, or rethrown):\n" << format_frames(frames, depth, 1);
  }
  return out.str();
}

// Captured output -----------------------------------------------------------------------

// One call's output: what call.out() and std::cout on the call's thread write.
class CaptureBuf : public std::streambuf {
 public:
  std::string take() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(data_);
  }
  void append(const char* s, std::streamsize n) {
    std::lock_guard<std::mutex> lock(mu_);
    data_.append(s, static_cast<size_t>(n));
  }

 protected:
  int overflow(int c) override {
    if (c != traits_type::eof()) {
      char ch = static_cast<char>(c);
      append(&ch, 1);
    }
    return traits_type::not_eof(c);
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    append(s, n);
    return n;
  }

 private:
  std::mutex mu_;
  std::string data_;
};

thread_local CaptureBuf* t_capture = nullptr;

// std::cout's buffer for the runner: a thread serving a call that asked for its output
// writes to that call's buffer; every other write goes to the real stdout (the instance log).
class RoutingBuf : public std::streambuf {
 public:
  explicit RoutingBuf(std::streambuf* real) : real_(real) {}

 protected:
  int overflow(int c) override {
    if (c == traits_type::eof()) return traits_type::not_eof(c);
    char ch = static_cast<char>(c);
    return xsputn(&ch, 1) == 1 ? c : traits_type::eof();
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    if (t_capture != nullptr) {
      t_capture->append(s, n);
      return n;
    }
    std::lock_guard<std::mutex> lock(mu_);
    return real_->sputn(s, n);
  }
  int sync() override {
    if (t_capture != nullptr) return 0;
    std::lock_guard<std::mutex> lock(mu_);
    return real_->pubsync();
  }

 private:
  std::streambuf* real_;
  std::mutex mu_;
};

// Payloads ------------------------------------------------------------------------------

struct InvalidInput : std::runtime_error {
  using std::runtime_error::runtime_error;
};

Value decode(const v1::Payload& payload) {
  const std::string& data = payload.data();
  switch (payload.content_type()) {
    case v1::CONTENT_TYPE_BINARY:
      return Value::from_bytes(data);
    case v1::CONTENT_TYPE_TEXT:
      if (!valid_utf8(data)) throw InvalidInput("text payload is not UTF-8");
      return Value::from_text(data);
    case v1::CONTENT_TYPE_JSON: {
      if (!valid_utf8(data)) throw InvalidInput("json payload is not UTF-8");
      try {
        // Nesting is bounded (as Python's decoder bounds it): writing it back out recurses.
        return Value::from_json(nlohmann::json::parse(data, [](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
          if (depth > kMaxJsonDepth) throw InvalidInput("payload declared JSON is nested too deep");
          return true;
        }));
      } catch (const nlohmann::json::exception& e) {
        throw InvalidInput(std::string("payload declared JSON is not valid JSON: ") + e.what());
      }
    }
    default:
      throw InvalidInput("unsupported content type " + std::to_string(payload.content_type()));
  }
}

// Throws nlohmann::json::type_error for JSON that cannot be written (e.g. invalid UTF-8).
v1::Payload encode(const Value& value) {
  v1::Payload p;
  switch (value.kind()) {
    case Value::Kind::Text:
      p.set_content_type(v1::CONTENT_TYPE_TEXT);
      p.set_data(value.as_text());
      break;
    case Value::Kind::Binary:
      p.set_content_type(v1::CONTENT_TYPE_BINARY);
      p.set_data(value.as_bytes());
      break;
    case Value::Kind::Json:
      p.set_content_type(v1::CONTENT_TYPE_JSON);
      p.set_data(value.as_json().dump());
      break;
  }
  return p;
}

std::string runtime_name() {
  return std::string("cpp g++ ") + __VERSION__ + ", gRPC " + grpc::Version();
}

}  // namespace

// Calls ---------------------------------------------------------------------------------

struct CallState {
  std::vector<std::pair<std::string, std::string>> forwarded;  // algomesh-call, traceparent, tracestate
  std::chrono::system_clock::time_point deadline;              // max(): none
  CaptureBuf* capture = nullptr;
  std::unique_ptr<std::ostream> out;
};

namespace {

std::once_flag g_channel_once;
std::shared_ptr<grpc::Channel> g_channel;
std::unique_ptr<v1::Mesh::Stub> g_mesh;

v1::Mesh::Stub& mesh() {
  std::call_once(g_channel_once, [] {
    const char* address = std::getenv("ALGOMESH_ADDRESS");
    if (address == nullptr || *address == '\0') return;
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxMessageBytes);
    args.SetMaxSendMessageSize(kMaxMessageBytes);
    args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
    g_channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
    g_mesh = v1::Mesh::NewStub(g_channel);
  });
  if (!g_mesh) {
    throw make_error(grpc::StatusCode::UNAVAILABLE, "MESH_UNAVAILABLE",
                     "ALGOMESH_ADDRESS is not set: pipes work inside the mesh only");
  }
  return *g_mesh;
}

}  // namespace

Value Call::pipe(const std::string& target, const Value& input) {
  v1::CallRequest request;
  try {
    *request.mutable_input() = encode(input);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("cannot send this value as JSON: ") + e.what());
  }
  grpc::ClientContext ctx;
  ctx.AddMetadata("algomesh-target", target);
  for (const auto& [k, v] : state_.forwarded) ctx.AddMetadata(k, v);
  if (state_.deadline != std::chrono::system_clock::time_point::max()) {
    ctx.set_deadline(state_.deadline);
  } else {
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(kDefaultPipeSeconds * 1000)));
  }
  v1::CallResponse response;
  grpc::Status st = mesh().Call(&ctx, request, &response);
  if (!st.ok()) throw from_status(st);
  try {
    return decode(response.output());
  } catch (const InvalidInput& e) {
    throw make_error(grpc::StatusCode::INVALID_ARGUMENT, "INVALID_INPUT",
                     target + " answered a payload that cannot be read: " + e.what());
  }
}

std::ostream& Call::out() { return state_.out ? *state_.out : std::cout; }

std::optional<std::chrono::milliseconds> Call::remaining() const {
  if (state_.deadline == std::chrono::system_clock::time_point::max()) return std::nullopt;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(state_.deadline - std::chrono::system_clock::now());
  return std::max(left, std::chrono::milliseconds(0));
}

// The service ---------------------------------------------------------------------------

namespace {

// A fixed set of threads for applies: up to ALGOMESH_CONCURRENCY at once.
class Workers {
 public:
  explicit Workers(int n) {
    for (int i = 0; i < n; ++i) {
      std::thread([this] { run(); }).detach();
    }
  }
  void submit(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return !tasks_.empty(); });
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
};

}  // namespace

// Where the runner calls the algorithm: stack traces stop here (external, never inlined).
namespace detail {
__attribute__((noinline)) void invoke_load(Algorithm& algorithm) { algorithm.load(); }
__attribute__((noinline)) Value invoke_apply(Algorithm& algorithm, Call& call, const Value& input) {
  return algorithm.apply(call, input);
}
}  // namespace detail

namespace {

// An exception from the algorithm's code, being handled: ALGORITHM_ERROR or ALGORITHM_LOAD_FAILED.
grpc::Status algorithm_error(std::exception_ptr eptr, bool in_load, const std::string& printed) {
  std::string type = current_exception_type(), message;
  const void* object = nullptr;
  try {
    std::rethrow_exception(eptr);
  } catch (const std::exception& e) {
    message = e.what();
    object = dynamic_cast<const void*>(&e);
  } catch (...) {
    message = "";
  }
  if (message.empty()) message = type;
  std::map<std::string, std::string> meta{{"error_type", type}};
  if (!printed.empty()) meta["stdout"] = printed;
  std::string trace = exception_trace(object, type, message);
  if (in_load) {
    return to_status(make_error(grpc::StatusCode::FAILED_PRECONDITION, "ALGORITHM_LOAD_FAILED",
                                type + ": " + message, trace, meta));
  }
  return to_status(make_error(grpc::StatusCode::UNKNOWN, "ALGORITHM_ERROR", message, trace, meta));
}

using RunnerBase = v1::Runner::WithCallbackMethod_Load<v1::Runner::WithRawCallbackMethod_Apply<v1::Runner::Service>>;

class RunnerService final : public RunnerBase {
 public:
  RunnerService(Algorithm& algorithm, int concurrency) : algorithm_(algorithm), workers_(concurrency) {}

  grpc::ServerUnaryReactor* Load(grpc::CallbackServerContext* ctx, const v1::LoadRequest*,
                                 v1::LoadResponse* response) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    std::thread([this, reactor, response] { reactor->Finish(load(response)); }).detach();
    return reactor;
  }

  grpc::ServerUnaryReactor* Apply(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    workers_.submit([this, ctx, request, response, reactor] { reactor->Finish(apply(ctx, request, response)); });
    return reactor;
  }

 private:
  grpc::Status load(v1::LoadResponse* response) {
    std::lock_guard<std::mutex> lock(load_mu_);
    if (!loaded_) {
      auto t0 = std::chrono::steady_clock::now();
      try {
        detail::invoke_load(algorithm_);
      } catch (...) {
        return algorithm_error(std::current_exception(), true, "");
      }
      load_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      loaded_.store(true);
    }
    response->set_duration(load_seconds_);
    response->set_runtime(runtime_name());
    return grpc::Status::OK;
  }

  grpc::Status apply(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* body, grpc::ByteBuffer* out) {
    if (!loaded_.load()) return status_of(grpc::StatusCode::INTERNAL, "INTERNAL", "Apply before Load");
    std::vector<grpc::Slice> slices;
    v1::CallRequest request;
    std::string raw;
    if (body->Dump(&slices).ok()) {
      raw.reserve(body->Length());
      for (const auto& s : slices) raw.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    if (!request.ParseFromString(raw)) {
      return status_of(grpc::StatusCode::INVALID_ARGUMENT, "INVALID_INPUT",
                       "the request body is not an algomesh.v1.CallRequest");
    }
    std::string().swap(raw);
    Value input;
    try {
      input = decode(request.input());
    } catch (const InvalidInput& e) {
      return status_of(grpc::StatusCode::INVALID_ARGUMENT, "INVALID_INPUT", e.what());
    }
    const bool capturing = request.capture_stdout();
    request.Clear();

    CallState state;
    for (const auto& [key, value] : ctx->client_metadata()) {
      for (const char* name : kForwarded) {
        if (key == name) {
          state.forwarded.emplace_back(std::string(key.data(), key.size()), std::string(value.data(), value.size()));
        }
      }
    }
    state.deadline = ctx->deadline();
    CaptureBuf capture;
    if (capturing) {
      state.capture = &capture;
      state.out = std::make_unique<std::ostream>(&capture);
    }
    Call call(state);
    CaptureBuf* previous = t_capture;
    t_capture = state.capture;  // std::cout on this thread: the call's buffer, or the real stdout
    Value result;
    auto t0 = std::chrono::steady_clock::now();
    grpc::Status failed;
    bool ok = false;
    try {
      result = detail::invoke_apply(algorithm_, call, input);
      ok = true;
    } catch (const Error& e) {
      // A typed error from one of its pipes that the algorithm let through: as it came.
      failed = e.reason() != "INTERNAL" ? to_status(e)
                                        : algorithm_error(std::current_exception(), false, capture.take());
    } catch (...) {
      failed = algorithm_error(std::current_exception(), false, capture.take());
    }
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    t_capture = previous;
    if (!ok) return failed;
    if (state.out) state.out->flush();

    v1::CallResponse response;
    try {
      *response.mutable_output() = encode(result);
    } catch (const nlohmann::json::exception& e) {
      return to_status(make_error(grpc::StatusCode::UNKNOWN, "ALGORITHM_ERROR",
                                  std::string("apply() returned a value that cannot be sent: ") + e.what(), "",
                                  {{"error_type", "nlohmann::json::type_error"}}));
    }
    if (capturing) response.set_stdout(sanitize_utf8(capture.take()));
    response.set_duration(seconds);
    std::string bytes = response.SerializeAsString();
    grpc::Slice slice(std::move(bytes));
    *out = grpc::ByteBuffer(&slice, 1);
    return grpc::Status::OK;
  }

  Algorithm& algorithm_;
  Workers workers_;
  std::mutex load_mu_;
  std::atomic<bool> loaded_{false};
  double load_seconds_ = 0;
};

[[noreturn]] void exit_now(int code) {
  std::cout.flush();
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  return (end != nullptr && *end == '\0' && n > 0 && n < 100000) ? static_cast<int>(n) : fallback;
}

}  // namespace

int serve(Algorithm& algorithm) {
  const char* socket = std::getenv("ALGOMESH_RUNNER_SOCKET");
  if (socket == nullptr || *socket == '\0') {
    std::cerr << "algomesh: ALGOMESH_RUNNER_SOCKET is not set; the mesh's sidecar starts this program\n";
    return 2;
  }
  // Exit with the sidecar: SIGTERM when it dies (even by SIGKILL), and now if it already has.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  const char* parent = std::getenv("ALGOMESH_PARENT_PID");
  const long parent_pid = parent != nullptr ? std::strtol(parent, nullptr, 10) : 0;
  if (parent_pid > 0 && getppid() != parent_pid) {
    std::cerr << "algomesh: parent process is gone; exiting\n";
    return 0;
  }
  // SIGTERM and SIGINT are taken by one thread (blocked in every other, which inherit the mask).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  static RoutingBuf routing(std::cout.rdbuf());
  std::cout.rdbuf(&routing);
  {
    void* frames[4];
    backtrace(frames, 4);  // loads libgcc's unwinder now, not at the first throw
  }

  unlink(socket);  // a stale socket from a previous process
  RunnerService service(algorithm, env_int("ALGOMESH_CONCURRENCY", 1));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(std::string("unix:") + socket, grpc::InsecureServerCredentials());
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    std::cerr << "algomesh: cannot serve on " << socket << "\n";
    return 1;
  }
  std::string socket_path(socket);
  std::thread([stop_signals, socket_path] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    unlink(socket_path.c_str());
    exit_now(0);  // applies still running (a call past its deadline) must not hold the process
  }).detach();
  if (parent_pid > 0) {
    std::thread([parent_pid] {
      for (;;) {  // where PR_SET_PDEATHSIG is not enough (it follows the parent thread)
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        if (getppid() != parent_pid) {
          std::cerr << "algomesh: parent process is gone; exiting\n";
          exit_now(0);
        }
      }
    }).detach();
  }
  server->Wait();
  return 0;
}

}  // namespace algomesh
