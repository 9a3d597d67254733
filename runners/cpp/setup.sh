#!/usr/bin/env bash
# The C++ runner's toolchain, from Debian 12: a C++17 compiler, CMake, gRPC C++ (headers,
# libraries, CMake config, grpc_cpp_plugin), protobuf (headers, protoc) and nlohmann-json.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/apt-install.sh c++ g++
bash tests/apt-install.sh cmake cmake
bash tests/apt-install.sh pkg-config pkg-config
bash tests/apt-install.sh /usr/include/grpcpp/grpcpp.h libgrpc++-dev
bash tests/apt-install.sh grpc_cpp_plugin protobuf-compiler-grpc
bash tests/apt-install.sh protoc protobuf-compiler
bash tests/apt-install.sh /usr/include/google/protobuf/message.h libprotobuf-dev
bash tests/apt-install.sh /usr/include/nlohmann/json.hpp nlohmann-json3-dev
