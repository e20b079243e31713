#!/usr/bin/env bash
# Pin the NGC NeMo base image by digest: pull the tag, read the digest docker recorded for it, and write
# "<tag>@sha256:<digest>" to docker/nemo-image.lock, which `make docker-build` passes as --build-arg NEMO_IMAGE.
#
#   make docker-pin                                   # the tag of the Dockerfile's `ARG NEMO_IMAGE=` default
#   docker/pin_base_image.sh nvcr.io/nvidia/nemo:25.02
#
# Needs docker and access to nvcr.io (`docker login nvcr.io` where NGC asks for it). Commit the lock file it writes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
lock="$here/nemo-image.lock"

die() {
  echo "pin_base_image.sh: $*" >&2
  exit 1
}

default_tag() {
  sed -n 's/^ARG NEMO_IMAGE=\([^[:space:]]*\).*$/\1/p' "$root/Dockerfile" | head -n 1
}

tag="${1:-$(default_tag)}"
[[ -n "$tag" ]] || die "no tag given and no 'ARG NEMO_IMAGE=<tag>' line in $root/Dockerfile: pass the tag to pin."
[[ "$tag" != *@* ]] || die "$tag already has a digest: pass the tag alone (e.g. nvcr.io/nvidia/nemo:25.02)."
last="${tag##*/}"
[[ "$last" == *:* ]] || die "$tag has no tag: name it in full (e.g. nvcr.io/nvidia/nemo:25.02), never an implied :latest."
repo="${tag%:*}"

command -v docker >/dev/null || die "docker is not installed: run this on a machine with docker and access to nvcr.io."
docker pull "$tag"

# An image pulled under several names has several repo digests; keep the one for this repository.
digest_ref="$(docker inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$tag" | awk -v p="$repo@" 'index($0, p) == 1' | head -n 1)"
[[ "$digest_ref" =~ ^${repo//./\\.}@sha256:[0-9a-f]{64}$ ]] \
  || die "docker recorded no '$repo@sha256:<64 hex>' digest for $tag (got '${digest_ref:-nothing}'): pull it from the registry, not from a local build."

digest="${digest_ref#"$repo"@}"
printf '%s@%s\n' "$tag" "$digest" > "$lock.tmp"
mv "$lock.tmp" "$lock"
echo "wrote $lock: $(cat "$lock")"
echo "commit it; 'make docker-build' builds FROM exactly this image."
