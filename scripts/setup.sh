#!/usr/bin/env bash
# One-time (idempotent) set-up of a fresh Debian 12 machine for siplab.
# Installs the Debian packages the lab and the tests use, and siplab itself (editable) with its
# Python dependencies. Safe to re-run: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  sip-tester            # SIPp, the load generator
  kamailio              # the alternate router under test and the benchmark peer
  kamailio-sqlite-modules
  kamailio-postgres-modules
  kamailio-extra-modules
  postgresql            # the shared realtime DB backend (tests start their own cluster)
  tshark                # reads the lab's pcap files (and can capture on lo)
  tcpdump               # the lab's packet capture on lo (lab/capture.py: -U --immediate-mode)
  chromium              # renders the capacity report in the report tests; runs the web phone
  chromium-driver       # Selenium drives the web phone in headless Chromium (scenarios/test_webphone.py)
  docker.io             # the docker backend of the lab (tests marked docker)
  debootstrap           # builds a local base image where no image registry answers
  nftables              # netns mode (lab/netns.py): link loss on kernels without netem
  sqlite3 iproute2 procps psmisc curl ca-certificates
)
# npm installs the web phone's SIP.js (lab/webphone/package-lock.json). Debian's nodejs + npm only
# where no Node.js with npm is there already (a machine may carry another build of Node.js,
# which Debian's npm would try to replace).
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)

need=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  echo "setup: installing Debian packages: ${need[*]}"
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections || true
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts the packaged services; the lab runs its own instances instead.
  for svc in kamailio postgresql; do
    $SUDO systemctl stop "$svc" >/dev/null 2>&1 || $SUDO service "$svc" stop >/dev/null 2>&1 || true
  done
fi

PY=${PYTHON:-python3}
if ! $PY -c "import router, trio, pytest_trio, hypothesis, pandas, matplotlib" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .siplab-installed ]; then
  echo "setup: installing siplab and its Python dependencies"
  $PY -m pip install -q --disable-pip-version-check -e '.[test,reports,docker,attack]'
  touch .siplab-installed
fi

# The lab's web phone: SIP.js from the npm registry, pinned by package-lock.json, into the
# git-ignored lab/webphone/node_modules.
if [ ! -f lab/webphone/node_modules/sip.js/lib/index.js ] \
   || [ lab/webphone/package-lock.json -nt lab/webphone/node_modules ]; then
  echo "setup: installing the web phone's SIP.js (npm ci)"
  (cd lab/webphone && npm ci --no-audit --no-fund --silent)
fi

# Docker engine for the lab's docker backend (tests marked `docker`). Best effort for users:
# without an engine those tests skip and say why. CI sets SIPLAB_REQUIRE_DOCKER=1.
if [ "${SIPLAB_SKIP_DOCKER:-0}" != 1 ]; then
  if ! $PY -m lab.docker.base_image --start-dockerd; then
    if [ "${SIPLAB_REQUIRE_DOCKER:-0}" = 1 ]; then
      echo "setup: the Docker engine could not be started" >&2
      exit 1
    fi
    echo "setup: no Docker engine: tests marked docker will be skipped" >&2
  fi
fi

# The real Asterisk image (Debian sid's Asterisk 22 on a debootstrapped sid base): the
# `asterisk`-marked scenarios run against it. About 2 minutes the first time (debootstrap of
# sid, then apt), cached afterwards by the hash of asterisk-images/asterisk (a few seconds).
# CI (SIPLAB_REQUIRE_DOCKER=1) fails when it cannot be built; elsewhere those scenarios skip.
if [ "${SIPLAB_SKIP_DOCKER:-0}" != 1 ] && [ "${SIPLAB_SKIP_ASTERISK:-0}" != 1 ] \
   && { [ "${SIPLAB_REQUIRE_DOCKER:-0}" = 1 ] || docker info >/dev/null 2>&1; }; then
  if ! $PY -m lab.docker.images asterisk >/tmp/siplab-asterisk-build.log 2>&1; then
    tail -n 30 /tmp/siplab-asterisk-build.log >&2
    if [ "${SIPLAB_REQUIRE_DOCKER:-0}" = 1 ]; then
      echo "setup: the real Asterisk image could not be built (log: /tmp/siplab-asterisk-build.log)" >&2
      exit 1
    fi
    echo "setup: no real Asterisk image: scenarios marked asterisk will fail or skip" >&2
  fi
fi

# Docker Compose v2 for `docker compose up` of a lab's compose.yml: bookworm has none, trixie's
# `docker-compose` package (a Go binary, libc6 >= 2.34) comes from the same Debian registry.
# Fetched with a private apt state (its own sources list, lists and archives under
# ~/.cache/siplab/apt-trixie), so the machine's apt sources are not changed; the binary is
# extracted to ~/.cache/siplab/bin/docker-compose (lab.docker.compose.compose_binary finds it).
COMPOSE_BIN="${HOME}/.cache/siplab/bin/docker-compose"
if [ "${SIPLAB_SKIP_DOCKER:-0}" != 1 ] && [ ! -x "$COMPOSE_BIN" ] \
   && ! docker compose version >/dev/null 2>&1; then
  D="${HOME}/.cache/siplab/apt-trixie"
  mkdir -p "$D/lists/partial" "$D/archives/partial" "$D/cache" "$(dirname "$COMPOSE_BIN")"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" >"$D/sources.list"
  APT_PRIVATE=(-o "Dir::Etc::sourcelist=$D/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$D/lists" -o "Dir::Cache=$D/cache" -o "Dir::Cache::Archives=$D/archives"
    -o "APT::Sandbox::User=root")
  if apt-get "${APT_PRIVATE[@]}" update -qq >/tmp/siplab-compose.log 2>&1 \
     && (cd "$D" && apt-get "${APT_PRIVATE[@]}" download docker-compose >>/tmp/siplab-compose.log 2>&1); then
    rm -rf "$D/root" && dpkg-deb -x "$(ls -t "$D"/docker-compose_*.deb | head -n 1)" "$D/root"
    install -m 0755 "$D/root/usr/libexec/docker/cli-plugins/docker-compose" "$COMPOSE_BIN"
  else
    tail -n 20 /tmp/siplab-compose.log >&2
    if [ "${SIPLAB_REQUIRE_DOCKER:-0}" = 1 ]; then
      echo "setup: docker-compose (Debian trixie) could not be installed" >&2
      exit 1
    fi
    echo "setup: no docker-compose: the compose test will skip" >&2
  fi
fi
