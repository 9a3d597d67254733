# Sourced by the examples' demo scripts: start `algomesh up` on embedded defaults in a
# temporary data directory, wait until it is ready, and stop it (and remove the directory)
# when the script exits. Sets $address and exports $ALGOMESH_API_KEY (the new mesh's admin
# key). PORT=7700 picks the port (default: any free one); $MESH_NAME names the directory.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/algomesh-${MESH_NAME:-demo}-XXXXXX")
log=$scratch/up.log
python -m algomesh.cli up --port "${PORT:-0}" --data-dir "$scratch/data" >"$log" 2>&1 &
up=$!
stop() {
  if kill -0 "$up" 2>/dev/null; then
    kill -TERM "$up"
    wait "$up" || true
    echo "Mesh stopped."
  fi
  rm -rf "$scratch"
}
trap stop EXIT

echo "Starting the mesh (algomesh up --data-dir $scratch/data):"
for _ in $(seq 600); do
  if grep -q "Ctrl-C to stop" "$log"; then break; fi
  if ! kill -0 "$up" 2>/dev/null; then
    cat "$log" >&2
    echo "algomesh up exited before it was ready" >&2
    exit 1
  fi
  sleep 0.1
done
if ! grep -q "Ctrl-C to stop" "$log"; then
  cat "$log" >&2
  echo "algomesh up was not ready after 60 s" >&2
  exit 1
fi
address=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$log" | head -n 1)
ALGOMESH_API_KEY=$(sed -n 's/.*admin key \(amk_[^ ]*\).*/\1/p' "$log" | head -n 1)
export ALGOMESH_API_KEY
sed -e 's/\(admin key amk_.\{16\}\)[^ ]*/\1…/' "$log" | sed 's/^/  /'   # the key is in use; no need to show it all
