#!/usr/bin/env bash
# make lint's check of the GitHub Actions workflows: actionlint at the version pinned in
# tests/cluster/versions.env, built once through the Go module proxy into
# ${KUBETUNE_CACHE:-~/.cache/kubetune}/actionlint-<version>/bin, like the control plane's binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=../tests/cluster/versions.env
source tests/cluster/versions.env
bin="${KUBETUNE_CACHE:-$HOME/.cache/kubetune}/actionlint-$ACTIONLINT_VERSION/bin"
if [[ ! -x "$bin/actionlint" ]]; then
    echo "building actionlint $ACTIONLINT_VERSION (go install)" >&2
    GOBIN="$bin" GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local \
        go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
fi
exec "$bin/actionlint" -no-color "$@"
