#!/usr/bin/env bash
# make images: builds images/<name>/Dockerfile for each name given (operator, trainer) with buildah, no
# Docker engine, and writes each as an OCI archive, build/images/<name>.oci.tar, tagged with the name the
# chart's defaults use (ghcr.io/kubetune/<name>:<version>); the image also stays in the local containers
# storage (podman runs it from there). The base is python:3.11-slim-bookworm where it can be pulled, else a
# stand-in built here (images/base/build.sh); KUBETUNE_BASE_IMAGE names another.
#
# KUBETUNE_IMAGES_ARCHIVE=no leaves the archives out (make test runs the images from the containers storage;
# writing the trainer's 3.4 GB archive takes minutes).
#
# Cached by a digest of the inputs: the Dockerfile's folder, this script, pyproject.toml, README.md,
# operator/, the base. An image whose digest is unchanged and whose archive exists is not built again. build/images/<name>.env
# records what was built: its tag, the digest of its inputs, its size and how long the build took.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${KUBETUNE_IMAGES_DIR:-build/images}
write_archive=${KUBETUNE_IMAGES_ARCHIVE:-yes}
ca_bundle=${KUBETUNE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
public_base=docker.io/library/python:3.11-slim-bookworm
version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
mkdir -p "$out"

# A digest of the files (tracked, or new and not ignored) under the given paths, and of the given words.
inputs_digest() {
    local words=$1; shift
    {
        echo "$words"
        git ls-files -z --cached --others --exclude-standard -- "$@" | sort -z \
            | while IFS= read -r -d '' file; do [ -f "$file" ] && sha256sum "$file"; done
    } | sha256sum | cut -c1-16
}

have_image() { buildah inspect --type image "$1" >/dev/null 2>&1; }

# The base every image builds FROM: the public image's digest, or the local stand-in keyed by its recipe.
choose_base() {
    if [ -n "${KUBETUNE_BASE_IMAGE:-}" ]; then echo "$KUBETUNE_BASE_IMAGE"; return; fi
    local digest
    if digest=$(timeout 30 skopeo inspect --retry-times 1 --format '{{.Digest}}' "docker://$public_base" 2>/dev/null); then
        echo "$public_base@$digest"; return
    fi
    local local_base
    local_base=localhost/kubetune/base:$(inputs_digest base images/base)
    if ! have_image "$local_base"; then
        echo "building the local base $local_base ($public_base cannot be pulled here)" >&2
        local start=$SECONDS
        images/base/build.sh "$local_base" > "$out/base.log" 2>&1 || { cat "$out/base.log" >&2; exit 1; }
        echo "local base built in $((SECONDS - start))s" >&2
    fi
    echo "$local_base"
}

# pip inside the RUN steps trusts the host's CA bundle (package traffic may pass a TLS-inspecting proxy).
pip_conf=$out/pip.conf
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$pip_conf"

base=$(choose_base)
base_id=$(buildah inspect --type image --format '{{.FromImageID}}' "$base" 2>/dev/null || echo "$base")

for name in "$@"; do
    dockerfile=images/$name/Dockerfile
    [ -f "$dockerfile" ] || { echo "no $dockerfile" >&2; exit 2; }
    tag=ghcr.io/kubetune/$name:$version
    key=$(inputs_digest "$base_id $version" "images/$name" images/build.sh pyproject.toml README.md operator .dockerignore)
    archive=$out/$name.oci.tar
    record=$out/$name.env
    if have_image "localhost/kubetune/$name:$key" && grep -qx "KEY=$key" "$record" 2>/dev/null \
        && { [ "$write_archive" = no ] || [ -f "$archive" ]; }; then
        buildah tag "localhost/kubetune/$name:$key" "$tag"
        echo "$tag: up to date (inputs $key)"
        continue
    fi
    echo "$tag: building from $dockerfile on $base (inputs $key)"
    start=$SECONDS
    if ! have_image "localhost/kubetune/$name:$key"; then
        buildah bud --isolation chroot --layers --quiet \
            --build-arg "PYTHON_IMAGE=$base" \
            --volume "$(realpath "$ca_bundle"):/etc/ssl/certs/ca-certificates.crt:ro" \
            --volume "$(realpath "$pip_conf"):/etc/pip.conf:ro" \
            --file "$dockerfile" --tag "$tag" --tag "localhost/kubetune/$name:$key" . >/dev/null
    fi
    build_seconds=$((SECONDS - start))
    buildah tag "localhost/kubetune/$name:$key" "$tag"
    rm -f "$archive"
    if [ "$write_archive" != no ]; then buildah push --quiet "$tag" "oci-archive:$archive:$tag"; fi
    # Earlier builds' tags go; `buildah rmi --prune` frees their layers.
    for old in $(buildah images --format '{{.Name}}:{{.Tag}}' | grep "^localhost/kubetune/$name:" | grep -v ":$key\$"); do
        buildah rmi "$old" >/dev/null || true
    done
    size=$(podman image inspect --format "{{.Size}}" "$tag")
    cat > "$record" <<RECORD
IMAGE=$tag
KEY=$key
BASE=$base
BUILD_SECONDS=$build_seconds
TOTAL_SECONDS=$((SECONDS - start))
IMAGE_BYTES=$size
ARCHIVE_BYTES=$(stat -c %s "$archive" 2>/dev/null || echo 0)
RECORD
    echo "$tag: built in ${build_seconds}s$([ -f "$archive" ] && echo ", archive written in $((SECONDS - start - build_seconds))s: $archive ($(du -h "$archive" | cut -f1))")"
done
