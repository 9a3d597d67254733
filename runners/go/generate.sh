#!/usr/bin/env bash
# Regenerate the committed Go stubs (gen/algomesh/v1) from proto/algomesh/v1/*.proto.
# Needs protoc (apt-get install protobuf-compiler) and the two plugins:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
set -euo pipefail
cd "$(dirname "$0")"
PATH="$(go env GOPATH)/bin:$PATH"
protoc -I ../../proto --go_out=. --go_opt=module=algomesh.dev \
  --go-grpc_out=. --go-grpc_opt=module=algomesh.dev ../../proto/algomesh/v1/*.proto
