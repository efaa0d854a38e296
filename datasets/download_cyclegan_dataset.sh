#!/usr/bin/env bash
# Fetch an unpaired dataset in the CycleGAN layout (trainA, trainB, testA, testB).
# Usage: bash ./datasets/download_cyclegan_dataset.sh NAME
set -u
NAME="${1:-}"
VALID="apple2orange summer2winter_yosemite horse2zebra monet2photo cezanne2photo ukiyoe2photo vangogh2photo maps cityscapes facades iphone2dslr_flower mini mini_pix2pix mini_colorization ae_photos grumpifycat"
if [ -z "$NAME" ] || ! printf '%s\n' $VALID | grep -qx "$NAME"; then
  echo "download_cyclegan_dataset.sh: error: choose one of: $VALID" >&2
  exit 2
fi
if [ "$NAME" = "cityscapes" ]; then
  echo "Cityscapes cannot be redistributed: download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip from https://www.cityscapes-dataset.com and arrange them as trainA/trainB/testA/testB (labels in A, photos in B)." >&2
  exit 2
fi
DIR="$(cd "$(dirname "$0")" && pwd)"
URL="http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/$NAME.zip"
ZIP="$DIR/$NAME.zip"
if [ -e "$DIR/$NAME" ]; then
  echo "download_cyclegan_dataset.sh: error: $DIR/$NAME already exists; remove it first" >&2
  exit 2
fi
if ! curl -fsL --connect-timeout 20 -o "$ZIP.part" "$URL"; then
  rm -f "$ZIP.part"
  echo "download_cyclegan_dataset.sh: error: could not download $URL (no network or the server refused)" >&2
  exit 2
fi
mv "$ZIP.part" "$ZIP"
unzip -q "$ZIP" -d "$DIR" && rm "$ZIP"
echo "dataset in $DIR/$NAME"
