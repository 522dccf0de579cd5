#!/usr/bin/env bash
# Validates the example manifests offline (no cluster needed):
#   1. yamllint;
#   2. kubernetes-validate (PyPI; bundles the Kubernetes JSON schemas) in strict mode, which
#      refuses unknown fields, against 1.30 (the oldest release this example supports: the
#      preStop `sleep` action) and the newest schema the package bundles;
#   3. `kubectl kustomize` (when kubectl is installed) renders the kustomization, and the
#      rendered objects are validated again;
#   4. check_manifests.py: cross-object consistency and token-handler's own `check` on the
#      ConfigMap's TOML (with TOKEN_HANDLER_BIN, default target/release/token-handler).
#
#   examples/kubernetes/validate.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${TMPDIR:-/tmp}/token-handler-k8s-venv"
bin="${TOKEN_HANDLER_BIN:-$repo/target/release/token-handler}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet kubernetes-validate yamllint pyyaml
fi
cd "$here"
files=(namespace.yaml configmap.yaml secret.yaml deployment.yaml service.yaml pdb.yaml hpa.yaml)

echo "== yamllint"
"$venv/bin/yamllint" -s -d '{extends: default, rules: {line-length: {max: 110}, document-start: disable, comments: {min-spaces-from-content: 1}}}' ./*.yaml

newest="$("$venv/bin/python" - <<'PY'
import pathlib, re, kubernetes_validate
d = pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
vs = [tuple(map(int, m.groups())) for p in d.iterdir() if (m := re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)-local-strict", p.name))]
print("%d.%d.%d" % max(vs))
PY
)"
for v in 1.30.0 "$newest"; do
  echo "== kubernetes-validate --strict, Kubernetes $v"
  "$venv/bin/kubernetes-validate" --strict -k "$v" "${files[@]}"
done

if command -v kubectl >/dev/null; then
  echo "== kubectl kustomize, then the rendered objects"
  rendered="$(mktemp)"
  kubectl kustomize . > "$rendered"
  "$venv/bin/kubernetes-validate" --strict -k 1.30.0 "$rendered"
  rm -f "$rendered"
else
  echo "== kubectl not installed: kustomize rendering skipped"
fi

echo "== consistency"
if [ -x "$bin" ]; then
  "$venv/bin/python" check_manifests.py --binary "$bin"
else
  echo "($bin not built: token-handler check skipped)"
  "$venv/bin/python" check_manifests.py
fi
