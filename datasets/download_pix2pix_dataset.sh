#!/usr/bin/env bash
# Fetch a paired dataset in the pix2pix layout (train/, val/, test/ with A|B side by side).
# Usage: bash ./datasets/download_pix2pix_dataset.sh NAME
set -u
. "$(dirname "$0")/fetch.sh"
fetch_dataset download_pix2pix_dataset.sh "${1:-}" \
  "cityscapes night2day edges2handbags edges2shoes facades maps" \
  "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/${1:-}.tar.gz" tar.gz
