#!/usr/bin/env bash
# The daemonless image tools, from Debian's packages: buildah builds the Dockerfiles, mmdebstrap makes the
# local base where the public one cannot be pulled, skopeo copies OCI archives to registries, podman with
# runc runs the built images in the image tier. Idempotent: does nothing when every tool is present.
set -euo pipefail
tools=(buildah podman skopeo mmdebstrap runc)
missing=()
for tool in "${tools[@]}"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing ${missing[*]} (apt-get)" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# uidmap: buildah's user namespaces; fuse-overlayfs/slirp4netns: podman's storage and network when rootless.
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" uidmap fuse-overlayfs slirp4netns \
    containernetworking-plugins >/dev/null
