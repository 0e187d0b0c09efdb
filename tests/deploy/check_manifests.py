"""Checks that deploy/kubernetes agrees with itself and with vole's settings.

Usage: check_manifests.py DIR OUT_TOML

Loads every manifest the kustomization lists, writes the ConfigMap's
vole.toml to OUT_TOML (for `vole config check`), and checks:
- the kustomization lists exactly the manifest files in DIR;
- terminationGracePeriodSeconds >= shutdown-delay + grace + 5;
- the probes use /livez and /readyz on the container port the settings'
  `health` address names; the `vop` port is the port the settings listen on;
- the preStop hook runs `vole drain` with the settings file the container
  is started with, mounted from the ConfigMap;
- a headless Service names its port `vop`.
Prints each problem and exits 1 if there is any.
"""
import pathlib
import sys
import tomllib

import yaml


def main():
    root = pathlib.Path(sys.argv[1])
    out = pathlib.Path(sys.argv[2])
    problems = []
    kust = yaml.safe_load((root / "kustomization.yaml").read_text())
    listed = set(kust.get("resources", []))
    present = {p.name for p in root.glob("*.yaml")} - {"kustomization.yaml"}
    if listed != present:
        problems.append(f"kustomization lists {sorted(listed)}, the directory has {sorted(present)}")
    objects = {}
    for name in sorted(listed & present):
        for doc in yaml.safe_load_all((root / name).read_text()):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc

    text = objects[("ConfigMap", "vole")]["data"]["vole.toml"]
    out.write_text(text)
    settings = tomllib.loads(text)

    def port_of(addr):
        return int(str(addr).rsplit(":", 1)[1])

    deployment = objects[("Deployment", "vole")]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    need = settings.get("shutdown-delay", 0) + settings.get("grace", 10) + 5
    have = pod.get("terminationGracePeriodSeconds", 30)
    if have < need:
        problems.append(f"terminationGracePeriodSeconds {have} < shutdown-delay + grace + 5 = {need}")

    health = settings.get("health")
    if health is None:
        problems.append("the settings serve no health endpoint")
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        port = get.get("port")
        port = ports.get(port, port)
        if get.get("path") != path:
            problems.append(f"{probe} asks {get.get('path')}, not {path}")
        if health is not None and port != port_of(health):
            problems.append(f"{probe} port {port} is not the health port {port_of(health)}")
    listen = [port_of(a) for a in settings.get("listen", [])]
    if ports.get("vop") not in listen:
        problems.append(f"container port vop {ports.get('vop')} is not a listen port {listen}")

    config = None
    args = container.get("args", [])
    if "--config" in args:
        config = args[args.index("--config") + 1]
    stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    if stop[:2] != ["vole", "drain"] or config is None or config not in stop:
        problems.append(f"preStop {stop} is not `vole drain --config {config}`")
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    mount = mounts.get(config)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    if mount is None or volumes.get(mount["name"], {}).get("configMap", {}).get("name") != "vole":
        problems.append(f"{config} is not mounted from the ConfigMap vole")

    headless = [
        o for (kind, _), o in objects.items() if kind == "Service" and o["spec"].get("clusterIP") == "None"
    ]
    if not headless or not any(p.get("name") == "vop" for s in headless for p in s["spec"]["ports"]):
        problems.append("no headless Service with a port named vop")

    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)


main()
