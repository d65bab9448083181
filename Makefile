# Entry points for makers and developers. `make demo` and `make test` do all set-up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYBAMM_DISABLE_TELEMETRY := true
export MPLBACKEND := Agg

.PHONY: setup apt demo demo-aging test firmware-test-builds lint bench bench-accuracy bench-speed bench-telemetry bench-target bench-fleet bench-aging bench-zero \
        calibration calibration-real bench-real firmware unix-port deploy clean

setup: $(STAMP)

NATIVE_SRC := $(wildcard device/native/bms_native/*.c device/native/bms_native/*.h)

# the C sources too: the host's native backend must be rebuilt when the C core changes
$(STAMP): pyproject.toml setup.py $(NATIVE_SRC)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -m bms_host.mpylib >/dev/null
	touch $@

apt:
	tools/apt-deps.sh

demo: $(STAMP)
	$(BIN)/bms-host demo --out out/demo

# the simulated device on the LG M50 ageing from 100 to 80 % (two virtual days at each of
# four levels), recorded with `bms-host record --port`, then `bms-host report` with the
# SOH trend and the remaining life (out/demo-aging/report)
demo-aging: $(STAMP)
	$(BIN)/python -m bms_host.demo_aging --out out/demo-aging

# Firmware from real sources (../shared/vendor, or MPY_DIR/ULAB_DIR): the float32 unix
# port, qemu Cortex-M3 and Raspberry Pi Pico, each with ulab and bms_native. Incremental;
# without sources it says so in one line and the firmware tests skip.
firmware-test-builds: $(STAMP) apt
	$(BIN)/python -m bms_host.firmware all

# temporary files of the tests (pytest's tmp_path, simulated flash, brokers) go under
# build/tmp, which pytest prunes, so a test run leaves nothing in /tmp
test: $(STAMP) apt firmware-test-builds
	$(BIN)/ruff check host_tools device boards tests
	mkdir -p build/tmp
	TMPDIR=$(CURDIR)/build/tmp $(BIN)/pytest

bench: bench-accuracy bench-speed bench-telemetry bench-target bench-fleet bench-aging bench-zero

bench-accuracy: $(STAMP)
	$(BIN)/bms-host bench accuracy
	# the LFP cell: its floors are shown (the random pulses, the 2C charge at 45 degC and the drives from mid-plateau miss them) but do not fail the target
	-$(BIN)/bms-host bench accuracy --cell lfp --no-peer

bench-speed: $(STAMP) apt
	$(BIN)/bms-host bench speed

bench-telemetry: $(STAMP) apt
	$(BIN)/bms-host bench telemetry

# 1000 simulated devices -> mosquitto -> two recorder workers -> PostgreSQL, with a broker
# restart and a killed worker during the run
bench-fleet: $(STAMP) apt
	$(BIN)/bms-host bench fleet

# state of health on the LG M50 aged to ~95/87/80 % and fresh, 4 days of a maker's use
# (data/lgm50_aged*), with the fresh calibration
bench-aging: $(STAMP)
	$(BIN)/bms-host bench aging

# the current sensor's zero with both FETs open, on the simulated board (seconds)
bench-zero: $(STAMP)
	$(BIN)/bms-host bench zero

# the application on the Pico firmware in rp2040js: tick times and heap, 1/4/16 cells
bench-target: $(STAMP) apt
	$(BIN)/bms-host bench target

calibration: $(STAMP)
	$(BIN)/bms-host synth --cell lgm50 --out data/lgm50
	$(BIN)/bms-host fit data/lgm50 --out calibration/lgm50.json --options calibration/options/lgm50.json
	$(BIN)/bms-host synth --cell lfp --out data/lfp
	$(BIN)/bms-host fit data/lfp --out calibration/lfp.json --options calibration/options/lfp.json

# A real LG M50 measured in a lab: the cycler exports as they are (read its README.md)
MEASURED ?= ../shared/data/lgm50_measured

calibration-real: $(STAMP)
	$(BIN)/bms-host fit $(MEASURED) --out calibration/lgm50_measured.json

# fit on two of 0/25/45 degC, SOC and pulse voltage on the third (about 10 minutes)
bench-real: $(STAMP)
	$(BIN)/bms-host bench real --data $(MEASURED)

# ---- Firmware with ulab and the native filter (device/native). Uses your own MicroPython
# and ulab checkouts and downloads nothing: fetch the port's submodules (and, for ESP32,
# source ESP-IDF's export.sh) beforehand. The device code is frozen by the board's
# manifest (boards/<board>/manifest.py); `make test` builds the same from the vendor folder.
BOARD ?= RPI_PICO
USERMODS := $(CURDIR)/build/usercmodules
UNIX_BUILD := build-bms-f32

define need_checkouts
	@test -n "$(MPY_DIR)" -a -n "$(ULAB_DIR)" || { echo "$@ needs MPY_DIR=<micropython checkout> and ULAB_DIR=<ulab checkout>, e.g. make $@ MPY_DIR=~/micropython ULAB_DIR=~/ulab" >&2; exit 2; }
	@test -f "$(MPY_DIR)/py/mkrules.mk" || { echo "MPY_DIR=$(MPY_DIR) is not a MicroPython checkout (no py/mkrules.mk): point it at the folder you cloned micropython into" >&2; exit 2; }
	@test -f "$(ULAB_DIR)/code/micropython.cmake" || { echo "ULAB_DIR=$(ULAB_DIR) is not a ulab checkout (no code/micropython.cmake): point it at the folder you cloned micropython-ulab into" >&2; exit 2; }
endef

firmware:
	$(need_checkouts)
	$(MAKE) -C "$(MPY_DIR)/mpy-cross"
	@case "$(BOARD)" in \
	  RPI_PICO*) port=rp2; img=firmware.uf2; man=pico ;; \
	  ESP32*) port=esp32; img=firmware.bin; man=esp32; \
	    command -v idf.py >/dev/null || { echo "BOARD=$(BOARD) needs ESP-IDF: source <esp-idf>/export.sh first" >&2; exit 2; } ;; \
	  *) echo "BOARD=$(BOARD) is not supported here: use RPI_PICO or ESP32_GENERIC" >&2; exit 2 ;; \
	esac; \
	ULAB_DIR="$(abspath $(ULAB_DIR))" $(MAKE) -C "$(MPY_DIR)/ports/$$port" BOARD=$(BOARD) \
	  USER_C_MODULES=$(CURDIR)/device/native/micropython.cmake \
	  FROZEN_MANIFEST=$(CURDIR)/boards/$$man/manifest.py && \
	echo "firmware: $(abspath $(MPY_DIR))/ports/$$port/build-$(BOARD)/$$img"

# A host `micropython` (unix port, float32 like the boards) with ulab and bms_native:
# the unix port takes a folder whose subfolders hold micropython.mk, made here of links.
unix-port:
	$(need_checkouts)
	rm -rf "$(USERMODS)" && mkdir -p "$(USERMODS)"
	ln -s "$(abspath $(ULAB_DIR))/code" "$(USERMODS)/ulab"
	ln -s "$(CURDIR)/device/native/bms_native" "$(USERMODS)/bms_native"
	$(MAKE) -C "$(MPY_DIR)/mpy-cross"
	$(MAKE) -C "$(MPY_DIR)/ports/unix" VARIANT=standard BUILD=$(UNIX_BUILD) \
	  USER_C_MODULES="$(USERMODS)" CFLAGS_EXTRA=-DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_FLOAT
	@echo "unix port: $(abspath $(MPY_DIR))/ports/unix/$(UNIX_BUILD)/micropython"
	@echo "test with: BMS_MICROPYTHON=$(abspath $(MPY_DIR))/ports/unix/$(UNIX_BUILD)/micropython make test"

clean:
	rm -rf build out .pytest_cache

# Copy what ships to a board with mpremote: what device/manifest.py names (the `bms`
# package and the drivers, as every firmware freezes them), the board's pin map, main.py
# and a calibration. BOARD is pico or esp32 (the firmware's RPI_PICO*/ESP32* names work
# too); CONFIG=config.json adds Wi-Fi/MQTT settings and the MQTT client (see README).
DEVICE_MANIFEST := device/manifest.py
# the manifest's folders and mpremote cp commands (bms_host.manifest); read when deploying
deploy_manifest = $(or $(shell $(BIN)/python -m bms_host.manifest $(DEVICE_MANIFEST) --$(1)),$(error deploy: $(DEVICE_MANIFEST) could not be read (see above)))
CAL ?= lgm50
DEPLOY_QUIET := import sys; b = sys.modules.get('bms'); t = b and b.app and b.app.tel; t and setattr(t, 'serial', False)
deploy: DEPLOY_BOARD = $(if $(filter RPI_PICO%,$(BOARD)),pico,$(if $(filter ESP32%,$(BOARD)),esp32,$(BOARD)))
deploy: $(STAMP)
	@test -n "$(PORT)" || { echo "deploy: give the board's port: make deploy PORT=/dev/ttyACM0 BOARD=pico|esp32" >&2; exit 2; }
	@test -f boards/$(DEPLOY_BOARD)/board.py || { echo "deploy: there is no board '$(BOARD)': use BOARD=pico or BOARD=esp32" >&2; exit 2; }
	@test -f calibration/$(CAL).json || { echo "deploy: there is no calibration/$(CAL).json: use CAL=lgm50 or CAL=lfp" >&2; exit 2; }
	@test -z "$(CONFIG)" -o -f "$(CONFIG)" || { echo "deploy: CONFIG=$(CONFIG) does not exist: give the path of your config.json" >&2; exit 2; }
	@$(if $(filter file,$(origin BOARD)),echo "deploy: no BOARD given: deploying for the Pico (add BOARD=esp32 for an ESP32)")
	$(if $(CONFIG),$(BIN)/python -m bms_host.mpylib >/dev/null)
	@# `resume`: no soft reset, which would stop a running BMS and leave its watchdog to
	@# reset the board mid-copy; its console records are switched off until the reset
	-$(BIN)/mpremote connect $(PORT) resume exec "$(DEPLOY_QUIET)"
	for d in cal $(call deploy_manifest,dirs) $(if $(CONFIG),lib); do $(BIN)/mpremote connect $(PORT) resume mkdir :$$d 2>/dev/null || true; done
	$(BIN)/mpremote connect $(PORT) resume $(call deploy_manifest,cp) \
	  + cp boards/$(DEPLOY_BOARD)/board.py :board.py + cp calibration/$(CAL).json :cal/active.json \
	  $(if $(CONFIG),+ cp $(CONFIG) :config.json + cp -r $(addprefix build/mpylib/,chumicro_mqtt chumicro_sockets chumicro_timing chumicro_config) :lib/) \
	  + cp boards/main.py :main.py + reset

package.json: tools/gen_package_json.py host_tools/bms_host/manifest.py $(DEVICE_MANIFEST) \
              $(wildcard device/bms/*.py boards/drivers/*.py)
	$(BIN)/python tools/gen_package_json.py > $@.tmp && mv $@.tmp $@
