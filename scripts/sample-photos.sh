#!/usr/bin/env bash
# Real photographs to try a model on, from PyPI (the only image source these machines reach):
# the sample images inside the scikit-image wheel (astronaut, cat, coffee, rocket, motorcycles,
# ...; public domain or CC0, see scikit-image's data/README). Only the photographs are kept, not
# the synthetic test patterns.
#
#   scripts/sample-photos.sh [DIR]     # default out/photos
set -euo pipefail
OUT="${1:-out/photos}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download --quiet --no-deps --only-binary=:all: "scikit-image==0.24.0" -d "$tmp"
photos=(astronaut.png chelsea.png coffee.png rocket.jpg motorcycle_left.png motorcycle_right.png
        hubble_deep_field.jpg retina.jpg camera.png brick.png grass.png gravel.png coins.png
        moon.png horse.png ihc.png cell.png clock_motion.png)
for p in "${photos[@]}"; do
  unzip -q -o -j "$tmp"/scikit_image-*.whl "skimage/data/$p" -d "$OUT"
done
echo "wrote ${#photos[@]} photographs to $OUT"
