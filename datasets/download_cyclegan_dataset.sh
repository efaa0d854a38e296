#!/usr/bin/env bash
# Fetch an unpaired dataset in the CycleGAN layout (trainA, trainB, testA, testB).
# Usage: bash ./datasets/download_cyclegan_dataset.sh NAME
set -u
NAME="${1:-}"
if [ "$NAME" = "cityscapes" ]; then
  echo "Cityscapes cannot be redistributed: download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip from https://www.cityscapes-dataset.com and arrange them as trainA/trainB/testA/testB (labels in A, photos in B)." >&2
  exit 2
fi
. "$(dirname "$0")/fetch.sh"
fetch_dataset download_cyclegan_dataset.sh "$NAME" \
  "apple2orange summer2winter_yosemite horse2zebra monet2photo cezanne2photo ukiyoe2photo vangogh2photo maps cityscapes facades iphone2dslr_flower mini mini_pix2pix mini_colorization ae_photos grumpifycat" \
  "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/$NAME.zip" zip
