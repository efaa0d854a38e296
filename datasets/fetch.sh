# Shared by the download scripts: check NAME, refuse to overwrite, fetch, unpack.
# Usage (sourced): fetch_dataset SCRIPT NAME "VALID NAMES" URL zip|tar.gz
# Every failure is one line on stderr and exit 2; a failed download leaves nothing behind.
fetch_dataset() {
  local script="$1" name="$2" valid="$3" url="$4" kind="$5"
  local dir archive
  if [ -z "$name" ] || ! printf '%s\n' $valid | grep -qx "$name"; then
    echo "$script: error: choose one of: $valid" >&2
    exit 2
  fi
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  archive="$dir/$name.$kind"
  if [ -e "$dir/$name" ]; then
    echo "$script: error: $dir/$name already exists; remove it first" >&2
    exit 2
  fi
  if ! curl -fsL --connect-timeout 20 -o "$archive.part" "$url"; then
    rm -f "$archive.part"
    echo "$script: error: could not download $url (no network or the server refused)" >&2
    exit 2
  fi
  mv "$archive.part" "$archive"
  if [ "$kind" = "zip" ]; then
    unzip -q "$archive" -d "$dir" && rm "$archive"
  else
    tar -xzf "$archive" -C "$dir" && rm "$archive"
  fi
  echo "dataset in $dir/$name"
}
