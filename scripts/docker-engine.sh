#!/usr/bin/env bash
# A private Docker engine for `make image-test`, and the local base image it builds on.
#
#   scripts/docker-engine.sh start   start dockerd on its own socket, data root and exec root
#   scripts/docker-engine.sh base    load the bookworm + Debian python3 base image (made once
#                                    with debootstrap, cached as a tarball outside the repo)
#   scripts/docker-engine.sh stop    stop that dockerd (and its containerd)
#
# The engine changes nothing global on the machine: no iptables rules, no docker0 bridge, no
# /var/run/docker.sock, no /var/lib/docker. Builds and containers use `--network host` or
# `--network none`. Everything it writes is under $MLPLAT_ENGINE_DIR (default .tools/docker in
# the repo, git-ignored) and the base image cache $MLPLAT_IMAGE_CACHE (default
# ~/.cache/mlplat-image, kept between CI runs from clean checkouts on the same machine).
#
# `docker` is Debian's client (/usr/bin/docker, same version as the engine), pointed at the
# private socket with DOCKER_HOST: `eval "$(scripts/docker-engine.sh env)"`.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${MLPLAT_ENGINE_DIR:-$ROOT/.tools/docker}"
CACHE="${MLPLAT_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlplat-image}"
BASE_IMAGE="${MLPLAT_BASE_IMAGE:-mlplat-base/bookworm-python3:12}"
MIRROR="${MLPLAT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# Debian's python3.11 with venv (ensurepip); ca-certificates so TLS works once a build mounts
# the host's bundle over it. Nothing else: the Dockerfile adds what the platform needs.
BASE_PACKAGES="python3.11,python3.11-venv,python3-venv,ca-certificates"
DOCKER="${DOCKER:-/usr/bin/docker}"
export DOCKER_HOST="unix://$DIR/docker.sock"

say() { echo "docker-engine: $*" >&2; }

need() {
  # Debian's docker.io (dockerd, containerd, runc and a matching client) and debootstrap.
  local missing=()
  [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    say "needs Debian packages ${missing[*]}: run 'sudo apt-get install ${missing[*]}'"
    exit 1
  fi
  say "installing ${missing[*]} (apt-get)"
  # policy-rc.d on these machines keeps the package's own system-wide service from starting.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

running() {
  [ -f "$DIR/dockerd.pid" ] && kill -0 "$(cat "$DIR/dockerd.pid")" 2>/dev/null \
    && "$DOCKER" info >/dev/null 2>&1
}

start() {
  need
  if running; then
    say "already running ($DOCKER_HOST)"
    return 0
  fi
  mkdir -p "$DIR/data" "$DIR/exec"
  say "starting dockerd on $DOCKER_HOST (log: $DIR/dockerd.log)"
  # setsid: its own session, so the caller's terminal signals do not reach it.
  setsid /usr/sbin/dockerd \
    --host "$DOCKER_HOST" \
    --data-root "$DIR/data" \
    --exec-root "$DIR/exec" \
    --pidfile "$DIR/dockerd.pid" \
    --iptables=false --ip6tables=false --ip-masq=false --bridge=none \
    --storage-driver overlay2 \
    >"$DIR/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 60); do
    if "$DOCKER" info >/dev/null 2>&1; then
      say "up: $("$DOCKER" version --format '{{.Server.Version}}')"
      return 0
    fi
    sleep 1
  done
  say "dockerd did not answer in 60 s; its log:"
  tail -n 30 "$DIR/dockerd.log" >&2
  exit 1
}

stop() {
  local pid
  pid="$(cat "$DIR/dockerd.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    # Our containers first, then the engine (which stops the containerd it started).
    "$DOCKER" ps -q | xargs -r "$DOCKER" kill >/dev/null 2>&1 || true
    kill "$pid"
    for _ in $(seq 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$DIR/dockerd.pid"
  # dockerd bind-mounts its data root onto itself (private propagation) and leaves it mounted.
  while mountpoint -q "$DIR/data"; do umount "$DIR/data"; done
  say "stopped"
}

base() {
  # debootstrap once per machine: the rootfs tarball is cached outside the repository, so a
  # fresh data root (a clean checkout in CI) only re-imports it (seconds).
  local tarball="$CACHE/bookworm-python3.tar"
  if "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "$BASE_IMAGE"
    return 0
  fi
  if [ ! -s "$tarball" ]; then
    need
    mkdir -p "$CACHE"
    local rootfs
    rootfs="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
    say "debootstrap --variant=minbase bookworm with $BASE_PACKAGES (once; cached in $CACHE)"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$rootfs" "$MIRROR" \
      >"$CACHE/debootstrap.log" 2>&1 || {
      tail -n 30 "$CACHE/debootstrap.log" >&2
      rm -rf "$rootfs"
      exit 1
    }
    # What an image needs that a chroot does not: no package caches, `python` and
    # `python3` on PATH like the official image.
    ln -sf python3 "$rootfs/usr/bin/python"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar --numeric-owner -C "$rootfs" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    rm -rf "$rootfs"
  fi
  "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$tarball" "$BASE_IMAGE" >/dev/null
  echo "$BASE_IMAGE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  base) base ;;
  env) echo "export DOCKER_HOST=$DOCKER_HOST DOCKER=$DOCKER" ;;
  *)
    echo "usage: $0 start|base|stop|env" >&2
    exit 2
    ;;
esac
