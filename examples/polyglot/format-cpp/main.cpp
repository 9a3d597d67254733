// poly/format-cpp, stage 7 (the last) of examples/polyglot (C++): the record from
// poly/fingerprint-exec in; the final record out: the same facts, with the compound score
// rounded to 3 decimals and a one-line summary, "positive +0.94 (strong): love, great".
// A text with no words left after cleaning has nothing to summarise: std::invalid_argument,
// which reaches the client through every stage before this one, as ALGORITHM_ERROR.
#include <algomesh/runner.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string summary(const algomesh::json& record) {
  char score[32];
  std::snprintf(score, sizeof score, "%+.2f", record.at("compound").get<double>());
  std::string out = record.at("label").get<std::string>() + " " + score + " (" +
                    record.at("strength").get<std::string>() + "): ";
  const algomesh::json& keywords = record.at("keywords");
  if (keywords.empty()) return out + "no sentiment words";
  for (std::size_t i = 0; i < keywords.size(); ++i) out += (i ? ", " : "") + keywords[i].get<std::string>();
  return out;
}

struct Format : algomesh::Algorithm {
  std::string me;

  void load() override { me = env("ALGOMESH_ALGORITHM") + "@" + env("ALGOMESH_VERSION") + " (c++ " + __VERSION__ + ")"; }

  algomesh::Value apply(algomesh::Call&, const algomesh::Value& input) override {
    if (!input.is_json() || !input.as_json().is_object()) {
      throw std::invalid_argument("poly/format-cpp takes the record of poly/fingerprint-exec (a JSON object)");
    }
    algomesh::json record = input.as_json();
    if (record.value("tokens", algomesh::json::array()).empty()) {
      throw std::invalid_argument("nothing to format: no words left after cleaning \"" +
                                  record.value("text", std::string()) + "\"");
    }
    record["compound"] = std::round(record.at("compound").get<double>() * 1000) / 1000;
    record["summary"] = summary(record);
    record["stages"].push_back(me);
    return record;
  }
};

}  // namespace

int main() {
  Format algorithm;
  return algomesh::serve(algorithm);
}
