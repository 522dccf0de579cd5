#!/usr/bin/env python3
"""Consistency checks across the example manifests that a schema cannot see.

Schemas (kubernetes-validate, run by validate.sh) say each object is well-formed; this says the
objects fit together and fit token-handler: selectors match, probes hit the port the TOML
listens on, the secret files the TOML names are mounted, the grace period outlasts preStop plus
shutdown_grace, and the hardening the docs promise is there.

    python3 check_manifests.py [--binary path/to/token-handler]

With --binary, the TOML from configmap.yaml is also given to `token-handler check`, with the
secret paths pointed at temporary files holding a fresh key and a dummy client secret. The
configuration must validate (exit code 0 or 1: 1 only means the example provider could not
be reached); exit code 2 is a configuration error.

Needs PyYAML. Python 3.11+ (tomllib).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
failures: list[str] = []


def check(cond: bool, what: str) -> None:
    print(("ok    " if cond else "FAIL  ") + what)
    if not cond:
        failures.append(what)


def seconds(text: str) -> int:
    """The few humantime forms the example uses: 30s, 10m, 12h, 1h 30m."""
    total = 0
    for n, unit in re.findall(r"(\d+)\s*([smh])", text):
        total += int(n) * {"s": 1, "m": 60, "h": 3600}[unit]
    if total == 0:
        raise ValueError(f"not a duration: {text!r}")
    return total


def port_of(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", help="a token-handler binary to run `check` with")
    args = ap.parse_args()

    kust = yaml.safe_load((HERE / "kustomization.yaml").read_text())
    listed = kust["resources"]
    present = sorted(
        p.name for p in HERE.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    check(sorted(listed) == present, f"kustomization lists every manifest {present}")

    objs: dict[str, dict] = {}
    for name in listed:
        docs = [d for d in yaml.safe_load_all((HERE / name).read_text()) if d]
        check(len(docs) == 1, f"{name}: one object")
        d = docs[0]
        for field in ("apiVersion", "kind"):
            check(bool(d.get(field)), f"{name}: {field}")
        check(bool(d.get("metadata", {}).get("name")), f"{name}: metadata.name")
        check("namespace" not in d.get("metadata", {}), f"{name}: namespace left to kustomize")
        objs[d["kind"]] = d

    cm, sec, dep = objs["ConfigMap"], objs["Secret"], objs["Deployment"]
    svc, pdb, hpa = objs["Service"], objs["PodDisruptionBudget"], objs["HorizontalPodAutoscaler"]
    cfg = tomllib.loads(cm["data"]["config.toml"])

    spec = dep["spec"]
    tpl = spec["template"]
    pod = tpl["spec"]
    labels = tpl["metadata"]["labels"]
    (c,) = pod["containers"]

    def selects(sel: dict) -> bool:
        return all(labels.get(k) == v for k, v in sel.items())

    check(selects(spec["selector"]["matchLabels"]), "Deployment selector matches its pods")
    check(selects(svc["spec"]["selector"]), "Service selector matches the pods")
    check(selects(pdb["spec"]["selector"]["matchLabels"]), "PDB selector matches the pods")
    check(
        hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        and hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"],
        "HPA targets the Deployment",
    )

    # Replicas and disruption.
    check(spec["replicas"] == 3, "3 replicas")
    ru = spec["strategy"]["rollingUpdate"]
    check(spec["strategy"]["type"] == "RollingUpdate" and ru["maxUnavailable"] == 0,
          "rolling update with maxUnavailable 0")
    check(pdb["spec"]["minAvailable"] == 2, "PDB minAvailable 2")
    hs = hpa["spec"]
    check(hs["minReplicas"] == 3 and hs["maxReplicas"] == 10, "HPA 3..10")
    (m,) = hs["metrics"]
    check(m["resource"]["name"] == "cpu" and m["resource"]["target"]["averageUtilization"] == 70,
          "HPA on CPU 70 %")
    check(pdb["spec"]["minAvailable"] < hs["minReplicas"],
          "PDB leaves room to evict at the minimum replica count")

    # Ports and probes against the TOML.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(ports.get("http") == port_of(cfg["server"]["listen"]),
          "container port `http` = server.listen port")
    check(cfg["server"]["listen"].startswith("0.0.0.0:"), "server.listen on all interfaces")
    check(ports.get("metrics") == port_of(cfg["metrics"]["listen"]),
          "container port `metrics` = metrics.listen port")
    svc_targets = {p["targetPort"] for p in svc["spec"]["ports"]}
    check(svc_targets <= set(ports), "Service targetPorts are named container ports")
    check("metrics" not in svc_targets and ports["metrics"] not in svc_targets,
          "Service does not expose the metrics port")
    check(svc["spec"].get("sessionAffinity", "None") == "None", "no session affinity")
    lp, rp = c["livenessProbe"]["httpGet"], c["readinessProbe"]["httpGet"]
    check(lp["path"] == "/health/live" and lp["port"] == "http", "liveness /health/live on http")
    check(rp["path"] == "/health/ready" and rp["port"] == "http", "readiness /health/ready on http")

    # Graceful shutdown.
    pre = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = seconds(cfg["server"].get("shutdown_grace", "30s"))
    tgps = pod["terminationGracePeriodSeconds"]
    check(tgps > pre + grace,
          f"terminationGracePeriodSeconds {tgps} > preStop {pre} + shutdown_grace {grace}")

    # Files: config and secrets.
    mounts = {vm["name"]: vm for vm in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    check(c["args"][0] == "--config", "args pass --config")
    cfg_path = Path(c["args"][1])
    cfg_vol = next(n for n, v in vols.items() if "configMap" in v)
    check(vols[cfg_vol]["configMap"]["name"] == cm["metadata"]["name"], "ConfigMap volume")
    check(str(cfg_path.parent) == mounts[cfg_vol]["mountPath"]
          and any(i["path"] == cfg_path.name for i in vols[cfg_vol]["configMap"]["items"]),
          f"{cfg_path} is mounted from the ConfigMap")
    sec_vol = next(n for n, v in vols.items() if "secret" in v)
    check(vols[sec_vol]["secret"]["secretName"] == sec["metadata"]["name"], "Secret volume")
    sec_mount = mounts[sec_vol]
    check("subPath" not in sec_mount, "Secret mounted as a directory (updates propagate)")
    check(sec_mount.get("readOnly") is True, "Secret mount read-only")
    secret_keys = set(sec.get("stringData", {})) | set(sec.get("data", {}))
    files = [cfg["cookies"]["keys_file"]] + [p["client_secret_file"] for p in cfg["providers"]]
    for f in files:
        fp = Path(f)
        check(str(fp.parent) == sec_mount["mountPath"] and fp.name in secret_keys,
              f"{f} is a key of the mounted Secret")
    check("keys" not in cfg["cookies"] and all("client_secret" not in p for p in cfg["providers"]),
          "no secret inline in the TOML")

    # Hardening.
    psc, csc = pod["securityContext"], c["securityContext"]
    check(psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0, "runAsNonRoot")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp RuntimeDefault")
    check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    check(csc.get("allowPrivilegeEscalation") is False, "no privilege escalation")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities drop ALL")
    check(pod.get("automountServiceAccountToken") is False, "no service account token")
    r = c["resources"]
    check(r["requests"] == {"cpu": "50m", "memory": "32Mi"}
          and r["limits"] == {"cpu": "500m", "memory": "128Mi"}, "requests and limits")

    # Production settings in the TOML.
    check(cfg["cookies"].get("secure", True) is True, "cookies.secure")
    check(all(o.startswith("https://") for o in cfg["web"]["trusted_origins"]),
          "trusted_origins are https")
    check(all(p["issuer"].startswith("https://") for p in cfg["providers"]), "issuer is https")

    if args.binary:
        run_check(args.binary, cm["data"]["config.toml"], cfg)

    print(f"\n{'FAILED: ' + str(len(failures)) if failures else 'all checks passed'}")
    return 1 if failures else 0


def run_check(binary: str, text: str, cfg: dict) -> None:
    key = subprocess.run([binary, "keygen"], capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp, "cookie-keys")
        keys.write_text(f"# test\n{key.strip()}\n")
        secret = Path(tmp, "client-secret")
        secret.write_text("dummy\n")
        text = text.replace(cfg["cookies"]["keys_file"], str(keys))
        for p in cfg["providers"]:
            text = text.replace(p["client_secret_file"], str(secret))
        conf = Path(tmp, "config.toml")
        conf.write_text(text)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKEN_HANDLER")}
        try:
            out = subprocess.run([binary, "check", "--config", str(conf)], capture_output=True,
                                 text=True, timeout=60, env=env)
        except subprocess.TimeoutExpired:
            check(False, "token-handler check finished within 60 s")
            return
        print("  | " + (out.stdout + out.stderr).strip().replace("\n", "\n  | "))
        check(out.returncode in (0, 1),
              f"token-handler check accepts the ConfigMap's TOML (exit {out.returncode}; "
              "2 = configuration error, 1 = provider unreachable)")

        # The Secret's placeholder key must be refused, so the example cannot go live with it.
        placeholder = next(line.strip() for line in
                           yaml.safe_load((HERE / "secret.yaml").read_text())["stringData"]
                           ["cookie-keys"].splitlines()
                           if line.strip() and not line.strip().startswith("#"))
        keys.write_text(placeholder + "\n")
        out = subprocess.run([binary, "check", "--config", str(conf)], capture_output=True,
                             text=True, timeout=60, env=env)
        check(out.returncode == 2 and "cookies.keys_file" in out.stderr,
              f"the Secret's placeholder key is refused (exit {out.returncode}: "
              f"{out.stderr.strip()})")


if __name__ == "__main__":
    sys.exit(main())
