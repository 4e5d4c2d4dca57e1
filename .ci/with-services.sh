#!/usr/bin/env bash
# Run a command with the services the test suite needs: Debian's Chromium (browser test), Tesseract
# (OCR engine test), nginx (reverse-proxy test; the test starts its own unprivileged instance), Orthanc
# with its DICOMweb plugin and orthanc-wsi's dicomizer (PACS tests; each starts its own on loopback) and a
# throwaway PostgreSQL cluster
# on loopback (database tests run on SQLite and PostgreSQL).
# Exports LOUPE_TEST_POSTGRES_URL, LOUPE_TEST_CHROMIUM and LOUPE_TEST_NGINX for the tests; removes the
# cluster on exit.
set -euo pipefail

need=()
command -v chromium >/dev/null || need+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v tesseract >/dev/null || need+=(tesseract-ocr)
nginx_bin() { command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }
[ -n "$(nginx_bin)" ] || need+=(nginx)
[ -x /usr/sbin/Orthanc ] || command -v Orthanc >/dev/null || need+=(orthanc)
ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so* >/dev/null 2>&1 || need+=(orthanc-dicomweb)
command -v OrthancWSIDicomizer >/dev/null || need+=(orthanc-wsi)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages: ${need[*]}" >&2
    apt-get update -qq >/dev/null
    # No service starts at install (no nginx on port 80, no extra cluster, no system Orthanc): the tests
    # start their own.
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
  else
    echo "missing ${need[*]}: run as root or: sudo apt-get install ${need[*]}" >&2
  fi
fi

command -v chromium >/dev/null && export LOUPE_TEST_CHROMIUM=$(command -v chromium)
[ -n "$(nginx_bin)" ] && export LOUPE_TEST_NGINX=$(nginx_bin)

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "$pg_bin" ]; then
  pg_dir=$(mktemp -d /tmp/loupe-pg.XXXXXX)
  chmod 755 "$pg_dir"
  run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  [ "$(id -u)" = 0 ] && chown postgres "$pg_dir"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  run_pg "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U postgres >/dev/null
  run_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$pg_dir -c fsync=off" start >/dev/null
  trap 'run_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast stop >/dev/null 2>&1; rm -rf "$pg_dir"' EXIT
  export LOUPE_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
fi

"$@"
