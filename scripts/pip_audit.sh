#!/usr/bin/env bash
# Audit the serving dependencies -- what the container ships: encoder-serve[serve] and everything it pulls
# in -- for known vulnerabilities.
#
#   scripts/pip_audit.sh [PYTHON]   PYTHON: interpreter of an environment with encoder-serve[serve] and
#                                   pip-audit installed (default .venv/bin/python)
#
# 1. The pinned list is read from the installed environment (the versions actually served), not
#    re-resolved, so nothing is downloaded but advisories: build/pip-audit/requirements.txt.
# 2. pip-audit --strict checks every pin against PyPI's advisory data (per-version JSON API):
#    build/pip-audit/pip-audit.json. --strict makes a package it could not look up a failure; without it,
#    pip-audit reports "No known vulnerabilities found" even when it checked nothing.
# 3. Cross-check through PyPI's per-project JSON API, whose `vulnerabilities` describe the latest release:
#    for every pin that is the latest release this is a second, independent answer; a pin that is not the
#    latest is listed as not covered by this step. build/pip-audit/latest-release.json.
# Exit status: 0 when both steps ran and found nothing; 1 on a finding; 2 when step 2 could not audit.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-.venv/bin/python}
OUT=build/pip-audit
mkdir -p "$OUT"

"$PYTHON" - "$OUT/requirements.txt" <<'PY'
"""Pin the installed closure of encoder-serve[serve], following extras (uvicorn[standard]) and markers."""
import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pins, seen, todo = {}, set(), [("encoder-serve", frozenset({"serve"}))]
while todo:
    name, extras = todo.pop()
    if (canonicalize_name(name), extras) in seen:
        continue
    seen.add((canonicalize_name(name), extras))
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        sys.exit(f"{name} is not installed: install encoder-serve[serve] into this environment first")
    if canonicalize_name(name) != "encoder-serve":
        pins[canonicalize_name(name)] = dist.version
    for spec in dist.requires or []:
        req = Requirement(spec)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
            todo.append((req.name, frozenset(req.extras)))
with open(sys.argv[1], "w") as f:
    f.writelines(f"{k}=={v}\n" for k, v in sorted(pins.items()))
print(f"{len(pins)} serving packages pinned in {sys.argv[1]}")
PY

audit=0
"$PYTHON" -m pip_audit --strict --requirement "$OUT/requirements.txt" --no-deps --disable-pip \
  --progress-spinner off --desc on --format json --output "$OUT/pip-audit.json" 2>"$OUT/pip-audit.log" || audit=$?
if [ "$audit" -ne 0 ] && ! grep -q '"vulns": \[{' "$OUT/pip-audit.json" 2>/dev/null; then
  echo "pip-audit could not audit (exit $audit): $(grep -v WARNING "$OUT/pip-audit.log" | tail -n 3)"
  audit=2
else
  echo "pip-audit: exit $audit, report in $OUT/pip-audit.json"
fi

"$PYTHON" - "$OUT/requirements.txt" "$OUT/latest-release.json" <<'PY' || { status=$?; [ "$audit" -eq 0 ] && audit=$status; }
"""Advisories for pins that are the latest release, from PyPI's per-project JSON API."""
import json
import sys
import urllib.request

pins = dict(line.strip().split("==") for line in open(sys.argv[1]) if line.strip())
report = {"vulnerable": {}, "clean_latest": [], "not_latest": {}, "unreachable": {}}
for name, version in pins.items():
    try:
        with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=30) as response:
            project = json.load(response)
    except OSError as e:
        report["unreachable"][name] = str(e)
        continue
    latest = project["info"]["version"]
    if latest != version:
        report["not_latest"][name] = {"installed": version, "latest": latest}
    elif project.get("vulnerabilities"):
        report["vulnerable"][name] = [{"id": v["id"], "aliases": v.get("aliases"), "fixed_in": v.get("fixed_in"),
                                       "summary": (v.get("summary") or v.get("details") or "")[:200]}
                                      for v in project["vulnerabilities"]]
    else:
        report["clean_latest"].append(name)
json.dump(report, open(sys.argv[2], "w"), indent=2)
print(f"latest-release cross-check: {len(report['clean_latest'])} latest and clean, "
      f"{len(report['vulnerable'])} vulnerable {sorted(report['vulnerable'])}, "
      f"{len(report['not_latest'])} not the latest {sorted(report['not_latest'])}, "
      f"{len(report['unreachable'])} unreachable")
sys.exit(1 if report["vulnerable"] else 2 if report["unreachable"] else 0)
PY
exit "$audit"
