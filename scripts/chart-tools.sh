#!/usr/bin/env bash
# Builds the pinned chart tools from the tools/ module (helm, kubeconform, helm-unittest, k8s-schemas, podrun) and
# the offline Kubernetes JSON schemas, into a cache directory keyed by the tools module's content, so a rerun takes
# a second. Source it to get HELM, KUBECONFORM, HELM_UNITTEST, PODRUN and K8S_SCHEMAS, or run it to print them.
#
# Versions are pinned in tools/go.mod (helm v3.22.0, kubeconform v0.8.0, helm-unittest v1.1.2) and here
# (KUBERNETES_VERSION, whose module zip ships api/openapi-spec/). Nothing is downloaded but Go modules, through the
# Go module proxy, once; a cold build takes ~2-3 minutes and ~1.1 GB of RAM.
#
# Cache: $SLUICE_TOOLS_CACHE, default ~/.cache/sluice-tools.
set -euo pipefail

KUBERNETES_VERSION=v1.37.2

_ct_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_ct_cache="${SLUICE_TOOLS_CACHE:-${HOME:-/root}/.cache/sluice-tools}"
_ct_key="$(cd "$_ct_root/tools" && cat go.mod go.sum $(find cmd -type f -name '*.go' | LC_ALL=C sort) | sha256sum | cut -c1-16)"
_ct_dir="$_ct_cache/$_ct_key"

if [[ ! -x "$_ct_dir/bin/podrun" ]]; then
	echo "chart-tools: building pinned tools into $_ct_dir (first run only; ~2-3 min cold)" >&2
	_ct_start=$SECONDS
	mkdir -p "$_ct_dir/bin.tmp"
	(
		cd "$_ct_root/tools"
		GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -trimpath -o "$_ct_dir/bin.tmp/" \
			helm.sh/helm/v3/cmd/helm \
			github.com/yannh/kubeconform/cmd/kubeconform \
			github.com/helm-unittest/helm-unittest/cmd/helm-unittest \
			./cmd/k8s-schemas \
			./cmd/podrun
	)
	rm -rf "$_ct_dir/bin" && mv "$_ct_dir/bin.tmp" "$_ct_dir/bin"
	echo "chart-tools: built in $((SECONDS - _ct_start))s" >&2
fi

_ct_schemas="$_ct_dir/schemas-$KUBERNETES_VERSION"
if [[ ! -f "$_ct_schemas/.done" ]]; then
	echo "chart-tools: generating Kubernetes $KUBERNETES_VERSION schemas from the module's OpenAPI spec" >&2
	_ct_moddir="$(cd "$_ct_root/tools" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
	if [[ -z "$_ct_moddir" || ! -d "$_ct_moddir/api/openapi-spec/v3" ]]; then
		echo "chart-tools: could not get k8s.io/kubernetes@$KUBERNETES_VERSION from the module cache/proxy" >&2
		exit 1
	fi
	rm -rf "$_ct_schemas"
	"$_ct_dir/bin/k8s-schemas" -spec "$_ct_moddir/api/openapi-spec/v3" -out "$_ct_schemas" >&2
	touch "$_ct_schemas/.done"
fi

export HELM="$_ct_dir/bin/helm"
export KUBECONFORM="$_ct_dir/bin/kubeconform"
export HELM_UNITTEST="$_ct_dir/bin/helm-unittest"
export PODRUN="$_ct_dir/bin/podrun"
export K8S_SCHEMAS="$_ct_schemas"
export K8S_VERSION="${KUBERNETES_VERSION#v}"

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	printf 'HELM=%s\nKUBECONFORM=%s\nHELM_UNITTEST=%s\nPODRUN=%s\nK8S_SCHEMAS=%s\n' \
		"$HELM" "$KUBECONFORM" "$HELM_UNITTEST" "$PODRUN" "$K8S_SCHEMAS"
fi
