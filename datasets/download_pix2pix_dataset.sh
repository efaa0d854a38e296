#!/usr/bin/env bash
# Fetch a paired dataset in the pix2pix layout (train/, val/, test/ with A|B side by side).
# Usage: bash ./datasets/download_pix2pix_dataset.sh NAME
set -u
NAME="${1:-}"
VALID="cityscapes night2day edges2handbags edges2shoes facades maps"
if [ -z "$NAME" ] || ! printf '%s\n' $VALID | grep -qx "$NAME"; then
  echo "download_pix2pix_dataset.sh: error: choose one of: $VALID" >&2
  exit 2
fi
DIR="$(cd "$(dirname "$0")" && pwd)"
URL="http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/$NAME.tar.gz"
TAR="$DIR/$NAME.tar.gz"
if [ -e "$DIR/$NAME" ]; then
  echo "download_pix2pix_dataset.sh: error: $DIR/$NAME already exists; remove it first" >&2
  exit 2
fi
if ! curl -fsL --connect-timeout 20 -o "$TAR.part" "$URL"; then
  rm -f "$TAR.part"
  echo "download_pix2pix_dataset.sh: error: could not download $URL (no network or the server refused)" >&2
  exit 2
fi
mv "$TAR.part" "$TAR"
tar -xzf "$TAR" -C "$DIR" && rm "$TAR"
echo "dataset in $DIR/$NAME"
