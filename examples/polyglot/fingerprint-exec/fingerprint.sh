#!/usr/bin/env bash
# poly/fingerprint-exec, stage 6 of examples/polyglot: a bash script on the exec runner
# (docs/exec.md: one JSON document per line on stdin and on stdout). The record from
# poly/label-java in; an "id" added, the first 16 hex digits of the SHA-256 of its
# normalised tokens joined by spaces (so "I LOVE it!!!" and "i loooove it !!!" share an
# id: a key for finding repeats), piped on to poly/format-cpp. Answers with what the rest
# of the pipeline answers; an error from there is passed on as it came. Needs jq.
set -uo pipefail

NEXT=poly/format-cpp
ME="$ALGOMESH_ALGORITHM@$ALGOMESH_VERSION (bash $BASH_VERSION)"

echo '{"ready":true}'

while IFS= read -r request; do
  IFS=$'\t' read -r id ok < <(jq -r '[(.id | tojson), .type == "json" and (.data.normalized | type) == "array"] | @tsv' <<<"$request")
  if [ "$ok" != true ]; then
    jq -cn --argjson id "$id" '{id: $id, error: {message: "poly/fingerprint-exec takes the record of poly/label-java (JSON with \"normalized\" tokens)", type: "TypeError"}}'
    continue
  fi
  digest=$(jq -j '.data.normalized | join(" ")' <<<"$request" | sha256sum | cut -c1-16)
  jq -c --arg digest "$digest" --arg me "$ME" --arg next "$NEXT" \
    '{pipe: {id: 1, target: $next, type: "json", data: (.data | .id = $digest | .stages += [$me])}}' <<<"$request"
  IFS= read -r reply || exit 1
  # The final record as it came, or the later stage's error as it came ("status" keeps its reason).
  jq -c --argjson id "$id" \
    'if .pipe.error then {id: $id, error: .pipe.error} else {id: $id, type: .pipe.type, data: .pipe.data} end' <<<"$reply"
done
