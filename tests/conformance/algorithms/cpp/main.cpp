// The runner conformance algorithm in C++ (tests/conformance/README.md).
#include <algomesh/runner.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

std::atomic<int> loads{0};

struct Conformance : algomesh::Algorithm {
  void load() override { ++loads; }

  algomesh::Value apply(algomesh::Call& call, const algomesh::Value& input) override {
    if (input.is_text()) return input;
    if (input.is_binary()) {
      const std::string& b = input.as_bytes();
      return algomesh::Value::from_bytes(std::string(b.rbegin(), b.rend()));
    }
    const algomesh::json& j = input.as_json();
    if (!j.is_object() || !j.contains("op")) return input;
    const std::string op = j["op"].is_string() ? j["op"].get<std::string>() : "";
    if (op == "echo") return j["value"];
    if (op == "text") return j["value"].get<std::string>();
    if (op == "bytes") return algomesh::Value::from_bytes(j["value"].get<std::string>());
    if (op == "loads") return loads.load();
    if (op == "raise") throw std::runtime_error(j["message"].get<std::string>());
    if (op == "crash") {
      std::cout.flush();
      std::fflush(stdout);
      std::_Exit(3);
    }
    if (op == "print") {
      std::cout << j["value"].get<std::string>() << std::endl;
      return algomesh::Value::from_json("printed");
    }
    if (op == "pipe") {
      algomesh::Value result = call.pipe(j["target"].get<std::string>(), j["input"]);
      return algomesh::json{{"via", "cpp"}, {"result", result.is_text() ? algomesh::json(result.as_text()) : result.as_json()}};
    }
    if (op == "sleep") {
      std::this_thread::sleep_for(std::chrono::milliseconds(j["ms"].get<long>()));
      return algomesh::Value::from_json("slept");
    }
    return input;
  }
};

}  // namespace

int main() {
  Conformance algorithm;
  return algomesh::serve(algorithm);
}
