#!/usr/bin/env bash
# The runner conformance algorithm for the exec runner (tests/conformance/README.md), in
# bash: one JSON request per line on stdin, one JSON answer per line on stdout (docs/exec.md).
# Needs jq (runners/exec/setup.sh installs it), coreutils' base64 and perl (for reversing
# bytes; perl-base is always there on Debian).
set -uo pipefail

# load(): once per process, before the first call.
LOADS=0
LOADS=$((LOADS + 1))
echo '{"ready":true}'

# The bash call stack (bash's own backtrace facility), one frame a line.
backtrace() {
  local i
  for ((i = 1; i < ${#FUNCNAME[@]}; i++)); do
    printf '  at %s (%s:%s)\n' "${FUNCNAME[i]}" "${BASH_SOURCE[i]:-?}" "${BASH_LINENO[i - 1]}"
  done
}

raise() { # raise ID MESSAGE: an error answer with the message and the stack trace
  jq -cn --argjson id "$1" --arg message "$2" --arg trace "$(backtrace)" \
    '{id: $id, error: {message: $message, type: "RuntimeError", stacktrace: ("RuntimeError: " + $message + "\n" + $trace)}}'
}

reverse_bytes() { # the base64 in .data of the request line, reversed, as base64
  jq -j .data <<<"$1" | base64 -d | perl -0777 -pe '$_ = reverse $_' | base64 -w0
}

pipe() { # pipe ID REQUEST: pipe .data.input to .data.target, answer {"via": "exec", "result": r}
  local id=$1 request=$2 reply
  jq -c '{pipe: {id: 1, target: .data.target, type: "json", data: .data.input}}' <<<"$request"
  IFS= read -r reply || exit 1
  # An error from the pipe goes back as it came ("status" keeps its reason), with this
  # script's stack trace where it has none.
  jq -c --argjson id "$id" --arg trace "$(backtrace)" \
    'if .pipe.error then {id: $id, error: (.pipe.error | if (.stacktrace // "") == "" then .stacktrace = $trace else . end)}
     else {id: $id, type: "json", data: {via: "exec", result: .pipe.data}} end' <<<"$reply"
}

apply() { # apply REQUEST
  local request=$1 id type op ms
  IFS=$'\t' read -r id type op < <(jq -r '[.id, .type,
      (if .type == "json" and (.data | type) == "object" and (.data | has("op")) then .data.op | tostring else "" end)
    ] | @tsv' <<<"$request")
  case "$type" in
    text) jq -c '{id, type: "text", data}' <<<"$request"; return ;;
    binary) printf '{"id":%s,"type":"binary","data":"%s"}\n' "$id" "$(reverse_bytes "$request")"; return ;;
  esac
  case "$op" in
    echo) jq -c '{id, type: "json", data: .data.value}' <<<"$request" ;;
    text) jq -c '{id, type: "text", data: (.data.value | tostring)}' <<<"$request" ;;
    bytes) jq -c '{id, type: "binary", data: (.data.value | @base64)}' <<<"$request" ;;
    loads) printf '{"id":%s,"type":"json","data":%d}\n' "$id" "$LOADS" ;;
    raise) raise "$id" "$(jq -r .data.message <<<"$request")" ;;
    crash) exit 3 ;;
    print) jq -c '{id, type: "json", data: "printed", stdout: (.data.value + "\n")}' <<<"$request" ;;
    pipe) pipe "$id" "$request" ;;
    sleep)
      ms=$(jq -r '.data.ms' <<<"$request")
      sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
      printf '{"id":%s,"type":"json","data":"slept"}\n' "$id" ;;
    *) jq -c '{id, type: "json", data}' <<<"$request" ;;
  esac
}

while IFS= read -r line; do
  apply "$line"
done
