"""Generated protobuf and gRPC stubs for the algomesh.v1 contract (see proto/generate.py)."""
