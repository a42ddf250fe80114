# Shared settings for deploy/local/images/{build,import,list} (sourced, not executed).
# shellcheck shell=bash
IMAGES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "${IMAGES_DIR}/../lib.sh"

# Archives and their metadata: ${IMAGES_CACHE}/<name>/<key>.oci.tar + <key>.json, and
# <name>/current.json = the metadata of the archive the last `build` selected.
IMAGES_CACHE="${DBOP_IMAGES_CACHE:-${DBOP_CACHE}/images}"
IMAGE_REGISTRY="localhost/db-operator"
# Build order matters: postgres-upgrade is assembled from the two postgres archives.
IMAGE_NAMES=(pause postgres-15 postgres-17 postgres-upgrade operator)

DEBIAN_MIRROR="${DBOP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SECURITY_MIRROR="${DBOP_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
DEBIAN_KEYRING="${DBOP_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"

# Fixed timestamp for every file in every image (reproducible archives).
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}"

known_image() {
  local n
  for n in "${IMAGE_NAMES[@]}"; do [[ "$n" == "$1" ]] && return 0; done
  return 1
}

current_meta() { echo "${IMAGES_CACHE}/$1/current.json"; }
