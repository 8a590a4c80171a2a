#!/bin/sh
# add-user.sh NAME UID [ROOT]: the image's user NAME with uid and gid UID and a home directory. A user or
# group that already holds that uid or gid (nvidia/cuda's Ubuntu 24.04 images have `ubuntu`, 1000) is
# removed first: `useradd --uid 1000` would stop with "UID 1000 is not unique". ROOT (default /) is the
# system to change, for the test.
set -eu
name=$1 uid=$2 root=${3:-/}
existing=$(awk -F: -v id="$uid" '$3 == id {print $1}' "$root/etc/passwd")
# userdel's 12: the home directory could not be removed (the user is gone).
if [ -n "$existing" ] && [ "$existing" != "$name" ]; then userdel --prefix "$root" --remove "$existing" || [ $? -eq 12 ]; fi
group=$(awk -F: -v id="$uid" '$3 == id {print $1}' "$root/etc/group")
if [ -n "$group" ] && [ "$group" != "$name" ]; then groupdel --prefix "$root" "$group"; fi
id_exists=$(awk -F: -v n="$name" '$1 == n {print $1}' "$root/etc/passwd")
[ -n "$id_exists" ] || useradd --prefix "$root" --create-home --uid "$uid" --user-group --shell /bin/sh "$name"
