// The algomesh C++ runner (docs/runners.md, "C++").
//
//   #include <algomesh/runner.hpp>
//
//   struct Upper : algomesh::Algorithm {
//     void load() override { /* once per process, before any call */ }
//     algomesh::Value apply(algomesh::Call& call, const algomesh::Value& input) override {
//       call.out() << "got " << input.as_text() << "\n";  // captured when the caller asks
//       return input.as_text() + "!";                       // a std::string is text
//     }
//   };
//   int main() { Upper algorithm; return algomesh::serve(algorithm); }
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace algomesh {

using json = nlohmann::json;

// An input or an output: JSON (an nlohmann::json), text (a UTF-8 std::string) or binary
// (bytes, kept in a std::string). Implicitly made from a std::string or a string literal
// (text), a std::vector<std::uint8_t> (binary), and anything nlohmann::json is made from
// (JSON: numbers, bools, nullptr, maps, vectors, json values). Value::from_json(...),
// Value::from_text(...) and Value::from_bytes(...) say it explicitly
// (Value::from_json("s") is a JSON string).
class Value {
 public:
  enum class Kind { Json, Text, Binary };

  Value() = default;  // JSON null
  Value(std::nullptr_t) {}  // JSON null
  Value(nlohmann::json value) : kind_(Kind::Json), json_(std::move(value)) {}
  Value(std::string text) : kind_(Kind::Text), data_(std::move(text)) {}
  Value(const char* text) : kind_(Kind::Text), data_(text) {}
  Value(std::string_view text) : kind_(Kind::Text), data_(text) {}
  Value(std::vector<std::uint8_t> bytes) : kind_(Kind::Binary), data_(bytes.begin(), bytes.end()) {}

  template <class T,
            class D = std::decay_t<T>,
            std::enable_if_t<!std::is_same_v<D, Value> && !std::is_same_v<D, nlohmann::json> &&
                                 !std::is_same_v<D, std::nullptr_t> &&
                                 !std::is_convertible_v<T, std::string_view> &&
                                 !std::is_same_v<D, std::vector<std::uint8_t>> &&
                                 std::is_constructible_v<json, T>,
                             int> = 0>
  Value(T&& value) : kind_(Kind::Json), json_(std::forward<T>(value)) {}

  static Value from_json(nlohmann::json value) { return Value(std::move(value)); }
  static Value from_text(std::string text) { return Value(std::move(text)); }
  static Value from_bytes(std::string bytes) {
    Value v;
    v.kind_ = Kind::Binary;
    v.data_ = std::move(bytes);
    return v;
  }
  static Value from_bytes(const std::vector<std::uint8_t>& bytes) { return Value(bytes); }

  Kind kind() const { return kind_; }
  bool is_json() const { return kind_ == Kind::Json; }
  bool is_text() const { return kind_ == Kind::Text; }
  bool is_binary() const { return kind_ == Kind::Binary; }

  // The JSON value; throws std::logic_error for text or binary.
  const nlohmann::json& as_json() const;
  // The text; throws std::logic_error for JSON or binary.
  const std::string& as_text() const;
  // The bytes; throws std::logic_error for JSON or text.
  const std::string& as_bytes() const;

  // Shorthands for JSON input: input["key"] (throws std::logic_error if not JSON; a missing
  // key is an error of nlohmann::json's own, json::out_of_range).
  const nlohmann::json& operator[](const std::string& key) const { return as_json().at(key); }

 private:
  Kind kind_ = Kind::Json;
  nlohmann::json json_;
  std::string data_;
};

// A gRPC status from the mesh: what Call::pipe throws when the algorithm it calls fails or
// the mesh refuses the call. It keeps the code, the message and the status details it came
// with; an apply that lets it escape answers with that exact status, so its reason
// (ALGORITHM_NOT_FOUND, CALL_CYCLE, the failing stage's ALGORITHM_ERROR...) reaches the caller.
class Error : public std::runtime_error {
 public:
  Error(int code, std::string reason, const std::string& message, std::map<std::string, std::string> metadata,
        std::string stacktrace, std::string details)
      : std::runtime_error(message), code_(code), reason_(std::move(reason)), metadata_(std::move(metadata)),
        stacktrace_(std::move(stacktrace)), details_(std::move(details)) {}

  int code() const { return code_; }                      // the gRPC status code
  const std::string& reason() const { return reason_; }  // e.g. ALGORITHM_NOT_FOUND
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& stacktrace() const { return stacktrace_; }  // the failing algorithm's, if any
  const std::string& details() const { return details_; }        // the serialized google.rpc.Status

 private:
  int code_;
  std::string reason_;
  std::map<std::string, std::string> metadata_;
  std::string stacktrace_;
  std::string details_;
};

struct CallState;

// The call being served.
class Call {
 public:
  explicit Call(CallState& state) : state_(state) {}
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  // Call algorithm `target` ("owner/name" or "owner/name/VERSION") with `input` through this
  // instance's sidecar, as part of this call's pipeline and trace, within what remains of its
  // deadline. Throws algomesh::Error for an error status. Safe from any thread.
  Value pipe(const std::string& target, const Value& input);

  // This call's output stream: captured (returned with the response) when the caller asked
  // for stdout, else std::cout. std::cout itself is captured too, on the call's own thread.
  std::ostream& out();

  // The time left before the caller's deadline, if it set one.
  std::optional<std::chrono::milliseconds> remaining() const;

 private:
  CallState& state_;
};

class Algorithm {
 public:
  virtual ~Algorithm() = default;
  // Runs once per process, before the first call. An exception is ALGORITHM_LOAD_FAILED.
  virtual void load() {}
  // Runs once per call, possibly on several threads at once (scaling.concurrency). An
  // exception is ALGORITHM_ERROR with its what(), its type and the stack where it was thrown.
  virtual Value apply(Call& call, const Value& input) = 0;
};

// Serve `algorithm` on $ALGOMESH_RUNNER_SOCKET until SIGTERM or until the sidecar that
// started this process dies. Returns the process's exit code.
int serve(Algorithm& algorithm);

}  // namespace algomesh
