#!/usr/bin/env bash
# Build the encoder-serve image with podman (chroot isolation) on a locally made base, then prove that the
# image's filesystem serves: mount it, start its entrypoint with chroot as the image's user, send a
# classify request, and report the image size.
#
# Why chroot: on machines where no container can run (rootless sandboxes, CI), `podman build --isolation
# chroot` still builds, and the built filesystem can be started with chroot. Where `docker run` works, the
# image runs as usual.
#
# Environment:
#   BASE_IMAGE     base image with python3.11 + venv; default: make localhost/encoder-serve-base:bookworm
#                  with debootstrap (cached: delete the image to rebuild it)
#   MODEL_PACKAGE  package directory to bake (default models/emotion)
#   IMAGE          tag to build (default localhost/encoder-serve:dev)
#   RESULT         where to write the JSON result (default build/image/result.json)
# Needs root (or podman unshare), podman, debootstrap, python3. Writes nothing into the source tree but RESULT.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
BASE_IMAGE=${BASE_IMAGE:-}
MODEL_PACKAGE=${MODEL_PACKAGE:-$REPO/models/emotion}
IMAGE=${IMAGE:-localhost/encoder-serve:dev}
RESULT=${RESULT:-$REPO/build/image/result.json}
LOCAL_BASE=localhost/encoder-serve-base:bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

for tool in podman python3; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install podman buildah debootstrap)"
done
[ -f "$MODEL_PACKAGE/manifest.json" ] \
  || die "no model package at $MODEL_PACKAGE (run 'make model', or set MODEL_PACKAGE=DIR)"

WORK=$(mktemp -d /var/tmp/encoder-serve-image.XXXXXX)
SERVER_PID=""
MOUNTED=""
BOUND=()
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  for m in "${BOUND[@]}"; do umount "$m" 2>/dev/null || true; done
  [ -n "$MOUNTED" ] && podman image unmount "$IMAGE" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---- 1. base: Debian bookworm (python3.11) made locally, since no registry image can be pulled here ----
if [ -z "$BASE_IMAGE" ]; then
  BASE_IMAGE=$LOCAL_BASE
  if ! podman image exists "$BASE_IMAGE"; then
    command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
    log "making $BASE_IMAGE with debootstrap"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$WORK/rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
      || { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
    # The host's CA bundle, so that pip inside the build trusts whatever TLS path this machine uses.
    cp /etc/ssl/certs/ca-certificates.crt "$WORK/rootfs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$WORK"/rootfs/var/cache/apt/* "$WORK"/rootfs/var/lib/apt/lists/* \
      "$WORK"/rootfs/usr/share/{doc,man,info,locale}/*
    tar -C "$WORK/rootfs" -c . | podman import --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$WORK/rootfs"
  fi
fi

# ---- 2. build from a clean context: the working tree's sources plus the package, nothing else ----
log "building $IMAGE on $BASE_IMAGE"
CTX=$WORK/context
mkdir -p "$CTX/models"
cp -r "$REPO"/{Dockerfile,.dockerignore,pyproject.toml,README.md,encoder_serve} "$CTX/"
cp -r "$MODEL_PACKAGE" "$CTX/models/package"
podman build --isolation chroot --format docker --build-arg BASE_IMAGE="$BASE_IMAGE" \
  --build-arg MODEL_PACKAGE=models/package -t "$IMAGE" "$CTX"

size_bytes=$(podman image inspect --format '{{.Size}}' "$IMAGE")
base_bytes=$(podman image inspect --format '{{.Size}}' "$BASE_IMAGE")
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
[ -n "$user" ] && [ "${user%%:*}" != 0 ] && [ "${user%%:*}" != root ] || die "image runs as root ($user)"

# ---- 3. what the runtime stage must not hold ----
MNT=$(podman image mount "$IMAGE"); MOUNTED=1
SITE=$(echo "$MNT"/opt/venv/lib/python3*/site-packages)
for forbidden in torch transformers; do
  [ ! -e "$SITE/$forbidden" ] || die "runtime image contains $forbidden"
done
for tool in gcc cc g++ make; do
  [ ! -e "$MNT/usr/bin/$tool" ] || die "runtime image contains /usr/bin/$tool"
done

# ---- 4. start the entrypoint from the image filesystem, as the image's user, with the image's env ----
# The image is mounted read-only, as with readOnlyRootFilesystem in Kubernetes; /tmp gets a writable
# directory (the emptyDir there), and a second package is bind-mounted to check the MODEL_DIR override.
mkdir -p "$WORK/tmp" "$WORK/custom"
chmod 1777 "$WORK/tmp"
cp -r "$MODEL_PACKAGE"/. "$WORK/custom/"
# a different version in the mounted copy, so its answers prove which package served them
python3 - "$WORK/custom/manifest.json" <<'PY'
import json, sys
manifest = json.load(open(sys.argv[1]))
manifest["version"] = "mounted"
json.dump(manifest, open(sys.argv[1], "w"), indent=2)
PY
chmod -R a+rX "$WORK/custom"
mount --bind "$WORK/tmp" "$MNT/tmp" && BOUND+=("$MNT/tmp")
mount --bind "$WORK/custom" "$MNT/mnt" && BOUND+=("$MNT/mnt")
mount -t proc proc "$MNT/proc" 2>/dev/null && BOUND+=("$MNT/proc") || true

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mapfile -t IMAGE_ENV < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
mapfile -t ENTRYPOINT < <(podman image inspect --format '{{range .Config.Entrypoint}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
mapfile -t HEALTHCHECK < <(podman image inspect --format '{{range .Config.Healthcheck.Test}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')

serve() {  # serve MODEL_DIR: start the image's entrypoint, wait until /readyz answers 200
  log "chroot start: MODEL_DIR=${1:-image default}"
  chroot --userspec="$user" "$MNT" /usr/bin/env -i "${IMAGE_ENV[@]}" PORT="$PORT" HOST=127.0.0.1 \
    ORT_INTRA_OP_THREADS=1 ${1:+MODEL_DIR=$1} "${ENTRYPOINT[@]}" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; die "service exited during start-up"; }
    python3 - "$PORT" <<'PY' && return 0
import sys, urllib.request
try:
    sys.exit(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1).status != 200)
except OSError:
    sys.exit(1)
PY
    sleep 0.2
  done
  cat "$WORK/server.log"; die "service not ready within 60 s"
}
classify() {  # classify: POST one text, print the model reference and the top label
  python3 - "$PORT" <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/classify", method="POST",
                             data=json.dumps({"inputs": ["i feel wonderful today"], "top_k": 1}).encode(),
                             headers={"Content-Type": "application/json"})
body = json.load(urllib.request.urlopen(req, timeout=10))
top = body["predictions"][0][0]
assert isinstance(top["label"], str) and 0.0 <= top["score"] <= 1.0, body
print(body["model"], top["label"], round(top["score"], 4))
PY
}
stop() { kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=""; }

serve ""
baked=$(classify)
chroot --userspec="$user" "$MNT" /usr/bin/env -i "${IMAGE_ENV[@]}" PORT="$PORT" "${HEALTHCHECK[@]:1}" \
  || die "the image's HEALTHCHECK command failed against the running service"
stop
serve /mnt
mounted=$(classify)
stop
case "$mounted" in *@mounted\ *) ;; *) die "MODEL_DIR=/mnt served '$mounted', not the mounted package";; esac

mkdir -p "$(dirname "$RESULT")"
python3 - "$RESULT" "$IMAGE" "$BASE_IMAGE" "$size_bytes" "$base_bytes" "$user" "$baked" "$mounted" <<'PY'
import json, platform, sys, datetime
out, image, base, size, base_size, user, baked, mounted = sys.argv[1:]
result = {"date": datetime.date.today().isoformat(), "machine": platform.node(), "image": image,
          "base_image": base, "image_bytes": int(size), "base_bytes": int(base_size),
          "added_bytes": int(size) - int(base_size), "user": user,
          "classify_baked_package": baked, "classify_mounted_package": mounted}
open(out, "w").write(json.dumps(result, indent=2) + "\n")
print(json.dumps(result, indent=2))
PY
log "image OK: $IMAGE, $((size_bytes / 1000000)) MB ($(((size_bytes - base_bytes) / 1000000)) MB over the base)"
