// Calling algomesh from C++ (docs/clients.md): algomesh.v1.Mesh/Call on `algomesh up`'s public
// port, and one Registry RPC (ListAlgorithms), with stubs generated from proto/ by protoc and
// grpc_cpp_plugin (CMakeLists.txt). grpc::Status::error_details() is the
// grpc-status-details-bin trailer: a google.rpc.Status with an ErrorInfo and a DebugInfo.
//
//   algomesh-client [--address HOST:PORT] [--key API_KEY] [--timeout SECONDS] call TARGET INPUT_JSON
//   algomesh-client [--address HOST:PORT] [--key API_KEY] list
//
// --address defaults to $ALGOMESH_ADDRESS, then localhost:7700; --key to $ALGOMESH_API_KEY.
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "algomesh/v1/mesh.grpc.pb.h"
#include "algomesh/v1/registry.grpc.pb.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace {

struct Options {
  std::string address = "localhost:7700";
  std::string key;
  double timeout = 300;
  std::vector<std::string> rest;
};

[[noreturn]] void usage(const std::string& message = "") {
  if (!message.empty()) std::cerr << "algomesh-client: " << message << "\n";
  std::cerr << "usage: algomesh-client [--address HOST:PORT] [--key API_KEY] [--timeout SECONDS] call TARGET INPUT_JSON\n"
               "       algomesh-client [--address HOST:PORT] [--key API_KEY] list\n";
  std::exit(2);
}

Options parse_args(int argc, char** argv) {
  Options opts;
  if (const char* a = std::getenv("ALGOMESH_ADDRESS"); a && *a) opts.address = a;
  if (const char* k = std::getenv("ALGOMESH_API_KEY")) opts.key = k;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--address" || arg == "--key" || arg == "--timeout") {
      if (i + 1 >= argc) usage(arg + " needs a value");
      std::string value = argv[++i];
      if (arg == "--address") {
        opts.address = value;
      } else if (arg == "--key") {
        opts.key = value;
      } else {
        char* end = nullptr;
        opts.timeout = std::strtod(value.c_str(), &end);
        if (end == value.c_str() || *end != '\0' || !(opts.timeout > 0)) usage("--timeout must be a positive number of seconds");
      }
    } else if (arg == "-h" || arg == "--help") {
      usage();
    } else {
      opts.rest.push_back(arg);
    }
  }
  return opts;
}

// The key, the deadline and (for Mesh.Call) the target, on a call's context.
void prepare(grpc::ClientContext& ctx, const Options& opts, const std::string& target) {
  if (!opts.key.empty()) ctx.AddMetadata("authorization", "Simple " + opts.key);
  if (!target.empty()) ctx.AddMetadata("algomesh-target", target);
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(opts.timeout)));
}

const char* code_name(grpc::StatusCode code) {
  static const char* names[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                                "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                                "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                                "UNAUTHENTICATED"};
  int i = static_cast<int>(code);
  return i >= 0 && i <= 16 ? names[i] : "UNKNOWN";
}

// A status without an ErrorInfo (the transport failed, nothing of algomesh answered) maps
// by its code, as the Python SDK does (docs/contract.md, "Errors").
std::string fallback(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::UNAVAILABLE: return "MESH_UNAVAILABLE";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "PAYLOAD_TOO_LARGE";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::NOT_FOUND: return "ALGORITHM_NOT_FOUND";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_INPUT";
    default: return "INTERNAL";
  }
}

std::string indent(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  std::string out = "  ";
  for (char c : text) {
    out += c;
    if (c == '\n') out += "  ";
  }
  return out;
}

// Prints the typed error and returns the exit code.
int print_error(const grpc::Status& status) {
  std::string reason, message = status.error_message(), stack;
  std::map<std::string, std::string> metadata;
  google::rpc::Status details;
  if (!status.error_details().empty() && details.ParseFromString(status.error_details())) {
    if (!details.message().empty()) message = details.message();
    for (const auto& any : details.details()) {
      google::rpc::ErrorInfo info;
      google::rpc::DebugInfo debug;
      if (any.Is<google::rpc::ErrorInfo>() && any.UnpackTo(&info) && info.domain() == "algomesh") {
        reason = info.reason();
        metadata.insert(info.metadata().begin(), info.metadata().end());
      } else if (any.Is<google::rpc::DebugInfo>() && any.UnpackTo(&debug)) {
        stack = debug.detail();
      }
    }
  }
  if (reason.empty()) reason = fallback(status.error_code());
  std::cerr << "error: " << reason << " (gRPC " << code_name(status.error_code()) << "): " << message << "\n";
  for (const auto& [key, value] : metadata) std::cerr << "  " << key << ": " << value << "\n";
  if (!stack.empty()) std::cerr << "stack trace:\n" << indent(stack) << "\n";
  if (auto id = metadata.find("trace_id"); id != metadata.end()) std::cout << "trace-id: " << id->second << "\n";
  return 1;
}

std::string trailer(const grpc::ClientContext& ctx, const std::string& key) {
  const auto& md = ctx.GetServerTrailingMetadata();
  auto it = md.find(key);
  return it == md.end() ? "" : std::string(it->second.data(), it->second.size());
}

std::string base64(const std::string& in) {
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    unsigned v = (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8 | (unsigned char)in[i + 2];
    out += {abc[v >> 18], abc[(v >> 12) & 63], abc[(v >> 6) & 63], abc[v & 63]};
  }
  if (i + 1 == in.size()) {
    unsigned v = (unsigned char)in[i] << 16;
    out += {abc[v >> 18], abc[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    unsigned v = (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8;
    out += {abc[v >> 18], abc[(v >> 12) & 63], abc[(v >> 6) & 63], '='};
  }
  return out;
}

void print_payload(const algomesh::v1::Payload& payload) {
  switch (payload.content_type()) {
    case algomesh::v1::CONTENT_TYPE_JSON: {
      auto value = nlohmann::json::parse(payload.data(), nullptr, /*allow_exceptions=*/false);
      std::cout << "result (json): " << (value.is_discarded() ? payload.data() : value.dump()) << "\n";
      break;
    }
    case algomesh::v1::CONTENT_TYPE_TEXT:
      std::cout << "result (text): " << payload.data() << "\n";
      break;
    default:
      std::cout << "result (binary, " << payload.data().size() << " bytes): " << base64(payload.data()) << "\n";
  }
}

int call(const Options& opts, const std::shared_ptr<grpc::Channel>& channel, const std::string& target,
         const std::string& input) {
  if (!nlohmann::json::accept(input)) usage("INPUT_JSON is not JSON; a text input is a JSON string, e.g. '\"hello\"'");
  auto mesh = algomesh::v1::Mesh::NewStub(channel);
  algomesh::v1::CallRequest request;
  request.mutable_input()->set_content_type(algomesh::v1::CONTENT_TYPE_JSON);
  request.mutable_input()->set_data(input);
  algomesh::v1::CallResponse response;
  grpc::ClientContext ctx;
  prepare(ctx, opts, target);
  grpc::Status status = mesh->Call(&ctx, request, &response);
  if (!status.ok()) return print_error(status);
  print_payload(response.output());
  std::cout << "algorithm: " << trailer(ctx, "algomesh-algorithm") << " " << trailer(ctx, "algomesh-version") << "\n";
  std::cout << "trace-id: " << trailer(ctx, "algomesh-trace-id") << "\n";
  return 0;
}

int list(const Options& opts, const std::shared_ptr<grpc::Channel>& channel) {
  auto registry = algomesh::v1::Registry::NewStub(channel);
  algomesh::v1::ListAlgorithmsResponse response;
  grpc::ClientContext ctx;
  prepare(ctx, opts, "");
  grpc::Status status = registry->ListAlgorithms(&ctx, algomesh::v1::ListAlgorithmsRequest(), &response);
  if (!status.ok()) return print_error(status);
  for (const auto& a : response.algorithms())
    std::cout << a.name() << "  " << a.latest_version() << "  " << a.description() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opts = parse_args(argc, argv);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 * 1024 * 1024);
  args.SetMaxSendMessageSize(64 * 1024 * 1024);
  auto channel = grpc::CreateCustomChannel(opts.address, grpc::InsecureChannelCredentials(), args);
  const auto& rest = opts.rest;
  if (rest.size() == 3 && rest[0] == "call") return call(opts, channel, rest[1], rest[2]);
  if (rest.size() == 1 && rest[0] == "list") return list(opts, channel);
  usage(rest.empty() ? "no command" : "bad arguments for " + rest[0]);
}
