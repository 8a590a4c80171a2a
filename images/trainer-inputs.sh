#!/usr/bin/env bash
# The trainer image's heavy inputs, as one digest: its Dockerfile and scripts, the pinned dependencies
# (pyproject.toml), the local base's recipe and the build script. Not operator/: kubetune's own code is the
# image's last, quick layer. images/trainer-verified records the digest of the last set a session built and
# tested (`make test-images IMAGES="operator trainer"`, then `images/trainer-inputs.sh --record`).
#
#   images/trainer-inputs.sh            the digest of the inputs as they are now
#   images/trainer-inputs.sh --changed  prints "trainer" when they differ from the recorded ones
#   images/trainer-inputs.sh --record   records them as verified
set -euo pipefail
cd "$(dirname "$0")/.."
record=images/trainer-verified

digest() {
    git ls-files -z --cached --others --exclude-standard -- images/trainer images/base images/build.sh pyproject.toml \
        | sort -z | while IFS= read -r -d '' file; do [ -f "$file" ] && sha256sum "$file"; done \
        | sha256sum | cut -c1-16
}

case "${1:-}" in
    --changed) [ "$(digest)" = "$(cat "$record" 2>/dev/null)" ] || echo trainer ;;
    --record) digest > "$record" ;;
    "") digest ;;
    *) echo "usage: $0 [--changed|--record]" >&2; exit 2 ;;
esac
