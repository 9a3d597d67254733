#!/usr/bin/env bash
# Calling algomesh with NO generated stubs and no .proto files (docs/clients.md): grpcurl
# learns every message from the mesh's server reflection. This wrapper only builds the
# request JSON and prints the answer as the other clients do; each grpcurl command it runs is
# echoed to stderr with ALGOMESH_CLIENT_TRACE=1.
#
#   grpcurl.sh [--address HOST:PORT] [--key API_KEY] [--timeout SECONDS] call TARGET INPUT_JSON
#   grpcurl.sh [--address HOST:PORT] [--key API_KEY] list      (Registry.ListAlgorithms)
#   grpcurl.sh [--address HOST:PORT] services                   (what reflection serves)
#
# --address defaults to $ALGOMESH_ADDRESS, then localhost:7700; --key to $ALGOMESH_API_KEY.
# grpcurl: $GRPCURL, else the one examples/clients/setup.sh grpcurl installs, else PATH.
# Needs jq and base64.
set -euo pipefail

usage() {
  [ -n "${1:-}" ] && echo "grpcurl.sh: $1" >&2
  echo "usage: grpcurl.sh [--address HOST:PORT] [--key API_KEY] [--timeout SECONDS] call TARGET INPUT_JSON" >&2
  echo "       grpcurl.sh [--address HOST:PORT] [--key API_KEY] list" >&2
  echo "       grpcurl.sh [--address HOST:PORT] services" >&2
  exit 2
}

address=${ALGOMESH_ADDRESS:-localhost:7700}
key=${ALGOMESH_API_KEY:-}
timeout=300
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --address|--key|--timeout)
      [ $# -ge 2 ] || usage "$1 needs a value"
      case $1 in --address) address=$2 ;; --key) key=$2 ;; --timeout) timeout=$2 ;; esac
      shift 2 ;;
    -h|--help) usage ;;
    *) args+=("$1"); shift ;;
  esac
done
[ ${#args[@]} -gt 0 ] || usage "no command"

grpcurl=${GRPCURL:-${ALGOMESH_BUILD_CACHE:-$HOME/.cache/algomesh/build}/clients/bin/grpcurl}
if [ ! -x "$grpcurl" ]; then
  grpcurl=$(command -v grpcurl) || { echo "grpcurl.sh: no grpcurl; run examples/clients/setup.sh grpcurl" >&2; exit 2; }
fi
for tool in jq base64; do
  command -v "$tool" >/dev/null || { echo "grpcurl.sh: needs $tool" >&2; exit 2; }
done

# The public port is plaintext gRPC; 64 MiB is the transport's ceiling (the payload limit is the mesh's).
common=(-plaintext -max-msg-sz $((64 << 20)) -max-time "$timeout")
auth=()
[ -n "$key" ] && auth=(-H "authorization: Simple $key")

out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT

# run ARGS...: grpcurl with ARGS, stdout in $out and stderr in $err; returns grpcurl's code.
run() {
  [ "${ALGOMESH_CLIENT_TRACE:-}" = 1 ] && echo "+ grpcurl $*" >&2
  "$grpcurl" "$@" >"$out" 2>"$err"
}

# A status without an ErrorInfo (the transport failed, nothing of algomesh answered) maps by
# its code, as the Python SDK does (docs/contract.md, "Errors").
fallback() {
  case $1 in
    DEADLINE_EXCEEDED) echo DEADLINE_EXCEEDED ;; UNAVAILABLE) echo MESH_UNAVAILABLE ;;
    RESOURCE_EXHAUSTED) echo PAYLOAD_TOO_LARGE ;; UNAUTHENTICATED) echo UNAUTHENTICATED ;;
    PERMISSION_DENIED) echo PERMISSION_DENIED ;; NOT_FOUND) echo ALGORITHM_NOT_FOUND ;;
    INVALID_ARGUMENT) echo INVALID_INPUT ;; *) echo INTERNAL ;;
  esac
}
CODES=(OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS PERMISSION_DENIED
       RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS
       UNAUTHENTICATED)

# fail RC: print the typed error of a failed grpcurl run and exit 1. With -format-error,
# grpcurl writes the google.rpc.Status from grpc-status-details-bin to stderr as JSON (the
# Any details resolved by reflection) and exits with 64 + the status code.
fail() {
  local rc=$1 code reason
  if [ "$rc" -ge 64 ] && jq -e 'type == "object" and has("code")' "$err" >/dev/null 2>&1; then
    code=${CODES[$((rc - 64))]:-UNKNOWN}
    reason=$(jq -r '[.details[]? | select(."@type" == "type.googleapis.com/google.rpc.ErrorInfo" and .domain == "algomesh") | .reason][0] // empty' "$err")
    echo "error: ${reason:-$(fallback "$code")} (gRPC $code): $(jq -r '.message // ""' "$err")" >&2
    jq -r '.details[]? | select(."@type" == "type.googleapis.com/google.rpc.ErrorInfo") | .metadata // {} | to_entries | sort_by(.key)[] | "  \(.key): \(.value)"' "$err" >&2
    jq -r '[.details[]? | select(."@type" == "type.googleapis.com/google.rpc.DebugInfo") | .detail][0] // empty
           | select(. != "") | "stack trace:\n" + (sub("\\s+$"; "") | split("\n") | map("  " + .) | join("\n"))' "$err" >&2
    jq -r '[.details[]? | select(."@type" == "type.googleapis.com/google.rpc.ErrorInfo") | .metadata.trace_id // empty][0] // empty
           | "trace-id: \(.)"' "$err"
  elif grep -q "Failed to dial target host" "$err"; then
    echo "error: MESH_UNAVAILABLE (gRPC UNAVAILABLE): $(head -n 1 "$err")" >&2
  else
    echo "error: INTERNAL (grpcurl exited with $rc): $(cat "$err")" >&2
  fi
  exit 1
}

case "${args[0]}" in
  services)
    [ ${#args[@]} -eq 1 ] || usage "bad arguments for services"
    run "${common[@]}" "$address" list || fail $?
    cat "$out"
    for symbol in algomesh.v1.Mesh algomesh.v1.CallRequest algomesh.v1.Payload; do
      run "${common[@]}" "$address" describe "$symbol" || fail $?
      cat "$out"
    done
    ;;
  call)
    [ ${#args[@]} -eq 3 ] || usage "bad arguments for call"
    target=${args[1]} input=${args[2]}
    printf '%s' "$input" | jq -e . >/dev/null 2>&1 || usage "INPUT_JSON is not JSON; a text input is a JSON string, e.g. '\"hello\"'"
    request=$(jq -cn --arg data "$(printf '%s' "$input" | base64 -w0)" '{input: {content_type: "CONTENT_TYPE_JSON", data: $data}}')
    # -v prints the response's trailers (algomesh-trace-id); the message is between
    # "Response contents:" and "Response trailers received:".
    run "${common[@]}" -v -format-error "${auth[@]}" -H "algomesh-target: $target" -d "$request" \
        "$address" algomesh.v1.Mesh/Call || fail $?
    response=$(awk '/^Response contents:$/ {on=1; next} /^Response trailers received:$/ {on=0} on' "$out")
    trailer() { awk -v k="$1: " '/^Response trailers received:$/ {on=1; next} on && index($0, k) == 1 {print substr($0, length(k) + 1); exit}' "$out"; }
    ctype=$(jq -r '.output.content_type // "CONTENT_TYPE_UNSPECIFIED"' <<<"$response")
    data=$(jq -r '.output.data // ""' <<<"$response")
    case $ctype in
      CONTENT_TYPE_JSON) echo "result (json): $(base64 -d <<<"$data" | jq -c .)" ;;
      CONTENT_TYPE_TEXT) echo "result (text): $(base64 -d <<<"$data")" ;;
      *) echo "result (binary, $(base64 -d <<<"$data" | wc -c) bytes): $data" ;;
    esac
    echo "algorithm: $(trailer algomesh-algorithm) $(trailer algomesh-version)"
    echo "trace-id: $(trailer algomesh-trace-id)"
    ;;
  list)
    [ ${#args[@]} -eq 1 ] || usage "bad arguments for list"
    run "${common[@]}" -format-error "${auth[@]}" -d '{}' "$address" algomesh.v1.Registry/ListAlgorithms || fail $?
    jq -r '.algorithms[]? | "\(.name)  \(.latest_version // "")  \(.description // "")"' "$out"
    ;;
  *) usage "unknown command ${args[0]}" ;;
esac
