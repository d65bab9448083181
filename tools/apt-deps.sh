#!/usr/bin/env bash
# Debian packages the test-suite needs: a real MQTT broker, the ARM cross compiler, cmake
# (the Pico firmware), qemu (the Cortex-M3 firmware), Node.js (the RP2040 emulator), the
# PostgreSQL server (fleet store tests run a throwaway cluster) and Chromium (the fleet page
# is opened headless in a test).
set -euo pipefail
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v arm-none-eabi-gcc >/dev/null 2>&1 || need+=(gcc-arm-none-eabi libnewlib-arm-none-eabi)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v qemu-system-arm >/dev/null 2>&1 || need+=(qemu-system-arm)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 \
    || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${need[*]}; run: sudo apt-get install -y ${need[*]}" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
