#!/usr/bin/env bash
# Build the local control plane's binaries from their upstream Go modules, at the versions pinned in
# e2e/versions.env, each in its own throwaway module (so their dependency graphs never mix) and cached
# by version. A second run finds every binary in the cache and builds nothing.
#
# Usage: e2e/tools/build.sh [component...]    components: kubernetes etcd kwok helm kstatus gateway-api kueue
# (default: all but kueue, which `make e2e` builds before the tests; e2e/kubeforge_e2e/kueue.py also
# builds it on first use). Prints the directory holding the binaries on its last line of stdout. `gateway-api` builds nothing: it copies the CRD manifests out of the
# pinned module into ${cache}/gateway-api/<version>/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../versions.env
source "${here}/../versions.env"

cache="${KUBEFORGE_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/kubeforge}"
bindir="${cache}/bin"
mkdir -p "${bindir}" "${cache}/build"

export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Run a long command while printing which component is building and for how long.
with_progress() {
  local what="$1"; shift
  local start=$SECONDS
  "$@" &
  local pid=$! last=$SECONDS
  while kill -0 "${pid}" 2>/dev/null; do
    sleep 2
    if kill -0 "${pid}" 2>/dev/null && (( SECONDS - last >= 30 )); then
      last=$SECONDS
      log "${what}: still building, $((SECONDS - start))s so far"
    fi
  done
  wait "${pid}"
  log "${what}: done in $((SECONDS - start))s"
}

# A fresh module directory for one component: nothing from a previous attempt leaks in.
new_module() {
  local name="$1"
  local dir="${cache}/build/${name}"
  rm -rf "${dir}"
  mkdir -p "${dir}"
  (cd "${dir}" && go mod init "kubeforge.local/build/${name}" >/dev/null 2>&1)
  echo "${dir}"
}

have() { # have <stamp-name> <binaries...>
  local stamp="${bindir}/.$1"
  shift
  [[ -f "${stamp}" ]] || return 1
  local b
  for b in "$@"; do [[ -x "${bindir}/${b}" ]] || return 1; done
}

build_kubernetes() {
  local v="${KUBERNETES_VERSION}" stamp="kubernetes-${KUBERNETES_VERSION}"
  if have "${stamp}" kube-apiserver kube-controller-manager kube-scheduler kubectl; then
    log "kubernetes ${v}: cached"; return
  fi
  local dir minor staging
  dir="$(new_module kubernetes)"
  minor="${v#v1.}"; minor="${minor%%.*}"
  staging="v0.${v#v1.}"
  # k8s.io/kubernetes points its staging modules at ./staging; outside its repo they must be
  # replaced by the matching v0.X.Y releases. The list comes from the release's own go.mod.
  local gomod
  gomod="$(cd "${dir}" && go mod download -json "k8s.io/kubernetes@${v}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    echo "require k8s.io/kubernetes ${v}"
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "${gomod}" | awk -v s="${staging}" '{print "replace " $1 " => " $1 " " s}'
  } >>"${dir}/go.mod"
  local pkg="k8s.io/kubernetes/cmd"
  (cd "${dir}" && go get "k8s.io/kubernetes@${v}" >/dev/null 2>&1 || true)
  local ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${p}.gitVersion=${v} -X ${p}.gitMajor=1 -X ${p}.gitMinor=${minor}"
    ldflags+=" -X ${p}.gitTreeState=clean -X ${p}.buildDate=1970-01-01T00:00:00Z"
  done
  with_progress "kubernetes ${v} (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl)" \
    bash -c "cd '${dir}' && go build -trimpath -ldflags '${ldflags}' -o '${bindir}/' \
      ${pkg}/kube-apiserver ${pkg}/kube-controller-manager ${pkg}/kube-scheduler ${pkg}/kubectl"
  touch "${bindir}/.${stamp}"
}

build_etcd() {
  local v="${ETCD_VERSION}" stamp="etcd-${ETCD_VERSION}"
  if have "${stamp}" etcd; then log "etcd ${v}: cached"; return; fi
  local dir
  dir="$(new_module etcd)"
  (cd "${dir}" && go get "go.etcd.io/etcd/server/v3@${v}" >/dev/null 2>&1)
  with_progress "etcd ${v}" bash -c "cd '${dir}' && go build -trimpath -ldflags '-s -w' -o '${bindir}/etcd' go.etcd.io/etcd/server/v3"
  touch "${bindir}/.${stamp}"
}

build_kwok() {
  local v="${KWOK_VERSION}" stamp="kwok-${KWOK_VERSION}"
  if have "${stamp}" kwok kwokctl; then log "kwok ${v}: cached"; return; fi
  local dir
  dir="$(new_module kwok)"
  (cd "${dir}" && go get "sigs.k8s.io/kwok@${v}" >/dev/null 2>&1)
  with_progress "kwok ${v} (kwok, kwokctl)" bash -c "cd '${dir}' && go build -trimpath \
    -ldflags '-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${KUBERNETES_VERSION}' \
    -o '${bindir}/' sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl"
  touch "${bindir}/.${stamp}"
}

build_helm() {
  local v="${HELM_VERSION}" stamp="helm-${HELM_VERSION}"
  if have "${stamp}" helm; then log "helm ${v}: cached"; return; fi
  local dir minor
  dir="$(new_module helm)"
  minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  (cd "${dir}" && go get "helm.sh/helm/v3@${v}" >/dev/null 2>&1)
  with_progress "helm ${v}" bash -c "cd '${dir}' && go build -trimpath \
    -ldflags '-s -w -X helm.sh/helm/v3/internal/version.version=${v} -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
      -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${minor} \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${minor}' \
    -o '${bindir}/helm' helm.sh/helm/v3/cmd/helm"
  touch "${bindir}/.${stamp}"
}

build_kstatus() {
  # Our own checker (e2e/tools/kstatus/main.go) over kstatus, the library Flux judges health with: the
  # stamp carries the source's hash, so an edit of main.go rebuilds it.
  local v="${CLI_UTILS_VERSION}" src="${here}/kstatus/main.go" sum stamp dir
  sum="$(sha256sum "${src}" | cut -c1-12)"
  stamp="kstatus-${v}-${sum}"
  if have "${stamp}" kstatus-check; then log "kstatus (cli-utils ${v}): cached"; return; fi
  dir="$(new_module kstatus)"
  cp "${src}" "${dir}/main.go"
  (cd "${dir}" && go get "sigs.k8s.io/cli-utils@${v}" >/dev/null 2>&1 && go mod tidy >/dev/null 2>&1)
  with_progress "kstatus-check (cli-utils ${v})" bash -c "cd '${dir}' && go build -trimpath -ldflags '-s -w' \
    -o '${bindir}/kstatus-check' ."
  rm -f "${bindir}"/.kstatus-*
  touch "${bindir}/.${stamp}"
}

build_gateway_api() {
  # Not a binary: the Gateway API's standard-channel CRDs (and the admission policy that guards their
  # upgrades), as the pinned module ships them under config/crd/standard/. Copied out of the module cache
  # (read-only there) so cluster-up applies them without calling Go; the stamp says which version is there.
  local v="${GATEWAY_API_VERSION}" stamp="gateway-api-${GATEWAY_API_VERSION}"
  local dest="${cache}/gateway-api/${GATEWAY_API_VERSION}" dir src
  if [[ -f "${bindir}/.${stamp}" ]] && compgen -G "${dest}/*.yaml" >/dev/null; then
    log "gateway-api ${v} CRDs: cached"; return
  fi
  dir="$(new_module gateway-api)"
  src="$(cd "${dir}" && go mod download -json "sigs.k8s.io/gateway-api@${v}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  if ! compgen -G "${src}/config/crd/standard/*.yaml" >/dev/null; then
    echo "no CRD manifests in ${src}/config/crd/standard" >&2; exit 1
  fi
  rm -rf "${dest}"
  mkdir -p "${dest}"
  cp "${src}/config/crd/standard/"*.yaml "${dest}/"
  chmod u+w "${dest}"/*.yaml
  rm -f "${bindir}"/.gateway-api-*
  touch "${bindir}/.${stamp}"
  log "gateway-api ${v} CRDs: $(find "${dest}" -name '*.yaml' | wc -l) manifests in ${dest}"
}

build_kueue() {
  # Kueue's manager, run as a process next to the control plane by e2e/kubeforge_e2e/kueue.py (only for the
  # tests that need it). Its CRDs ship inside the module; they are copied next to the binary so the
  # harness applies the ones of the very version it runs, with the webhook configurations it serves.
  local v="${KUEUE_VERSION}" stamp="kueue-${KUEUE_VERSION}" dir crds
  crds="${cache}/kueue-${v}/crds"
  if have "${stamp}" kueue-manager && [[ -d "${crds}" && -f "${cache}/kueue-${v}/webhooks.yaml" ]]; then
    log "kueue ${v}: cached"; return
  fi
  dir="$(new_module kueue)"
  # `go get` of the module root does not pull the command's dependencies; get the package itself.
  (cd "${dir}" && go get "sigs.k8s.io/kueue/cmd/kueue@${v}" >/dev/null 2>&1)
  with_progress "kueue ${v} (manager)" bash -c "cd '${dir}' && go build -trimpath -ldflags '-s -w' \
    -o '${bindir}/kueue-manager' sigs.k8s.io/kueue/cmd/kueue"
  local moddir
  moddir="$(cd "${dir}" && go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)"
  rm -rf "${crds}"
  mkdir -p "${crds}"
  cp "${moddir}"/config/components/crd/bases/*.yaml "${crds}/"
  cp "${moddir}/config/components/webhook/manifests.yaml" "${cache}/kueue-${v}/webhooks.yaml"
  chmod u+w "${crds}"/*.yaml "${cache}/kueue-${v}/webhooks.yaml"
  touch "${bindir}/.${stamp}"
}

components=("$@")
(( ${#components[@]} )) || components=(etcd kwok helm kubernetes kstatus gateway-api)
total=$SECONDS
for c in "${components[@]}"; do
  case "${c}" in
    kubernetes|etcd|kwok|helm|kstatus|kueue) "build_${c}" ;;
    gateway-api) build_gateway_api ;;
    *) echo "unknown component: ${c}" >&2; exit 2 ;;
  esac
done
log "all components ready in $((SECONDS - total))s"
echo "${bindir}"
