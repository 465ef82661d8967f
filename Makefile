# doorphoned: `make run` and `make test` each do the whole set-up first (idempotent, ~1 s when done).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup run test unit e2e lint bench bench-smoke docs clean fuzz-sip bench-sip-burst fuzz-readers fuzz-local fuzz-mqtt fuzz-ctl fuzz-registry fuzz-motion fuzz-migrations fuzz-monitor fuzz-monitor-unit fuzz-camera fuzz-captures fuzz-signedkeys fuzz-phone bench-phone fuzz-call-video fuzz-sync fuzz-face fuzz-face-liveness fuzz-face-photos bench-face bench-face-screen fuzz-face-screen fuzz chaos soak

setup:
	@bash scripts/setup.sh

run: setup
	@bash scripts/run-sim.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) scripts/check_imports.py

# Lint first so that pytest's summary is the last line CI prints.
# Three workers on two cores: the end-to-end tests spend a third of their time waiting on real processes
# (measured: 20.3 min with 2 workers at 66 % CPU, 17.5 min with 3). Tests marked slow are handed out first.
test: setup lint
	$(PY) -m pytest -q -n 3 tests

unit: setup
	$(PY) -m pytest -q tests/unit

e2e: setup
	$(PY) -m pytest -q tests/e2e

bench: setup
	$(PY) bench/relay_latency.py --opens 200
	$(PY) bench/startup.py --runs 10
	$(PY) bench/access.py
	$(PY) bench/cloud.py
	$(PY) bench/sip.py
	$(PY) bench/sip_burst.py --sizes 200,2000
	$(PY) bench/motion_capture.py
	$(PY) bench/unit_captures.py
	$(PY) bench/video.py --seconds 10 --probes 200 --first-frames 20 --qr 100
	$(PY) bench/qr_decoders.py --frames 60 --shows 20
	$(PY) bench/camera_idle.py --seconds 30 --qr 10
	$(PY) bench/phone.py --taps 100 --tokens 100 --probes 200 --phones 50
	$(PY) bench/signed_keys.py

# Raw SIP over UDP/TCP into one long-lived daemon: 10,000 hypothesis cases (make test runs 300).
fuzz-sip: setup
	SIP_FUZZ_EXAMPLES=10000 $(PY) -m pytest -q -n 0 -s tests/e2e/test_sip_fuzz.py

bench-sip-burst: setup
	$(PY) bench/sip_burst.py --sizes 200,2000

# Full property fuzz of config files and the control socket (>= 10,000 cases each; `make test` runs a fast pass).
fuzz-local: setup
	FUZZ_CASES=10000 $(PY) -m pytest -q -n 0 tests/unit/test_config_fuzz.py tests/e2e/test_fuzz_control.py

# doorphonectl fuzz at full size: 10,000 hostile argv/stdin cases, in-process, against one daemon and hw-sim
# (make test runs 200).
fuzz-ctl: setup
	FUZZ_CASES=10000 $(PY) -m pytest -q -n 0 tests/e2e/test_ctl_fuzz.py -k fuzz_one_daemon

# Motion and capture inputs from outside (motion settings, capture settings, capture requests): 10,000 hostile
# cases each, in-process against a real SQLite store (make test runs 400 each); then the kill -9 test at 100 rounds.
fuzz-motion: setup
	FUZZ_CASES=10000 $(PY) -m pytest -q -n 0 tests/unit/test_motion_fuzz.py
	CAPTURE_CRASH_ROUNDS=100 $(PY) -m pytest -q -n 0 tests/e2e/test_capture_crash.py

# Both directions of the camera protocol at full size: 10,000 hostile op lines into one long-lived camera
# process (reading hw-sim's camera) and 10,000 hostile event lines into the daemon side (make test: 300 / 500).
fuzz-camera: setup
	FUZZ_CASES=10000 $(PY) -m pytest -q -n 0 tests/e2e/test_camera_fuzz.py

fuzz-captures: setup
	FUZZ_CASES=10000 $(PY) -m pytest -q -n 0 tests/e2e/test_captures_fuzz.py

# Offline-signed temp keys at full size: 10,000 hostile texts / arguments per interface in-process, 10,000 frames
# through one daemon's access.check and 40 mutated keys through hw-sim's camera (make test runs a fast pass).
fuzz-signedkeys: setup
	FUZZ_CASES=10000 SIGNED_FUZZ_CAMERA=40 $(PY) -m pytest -q -n 0 tests/unit/test_signed_keys_fuzz.py \
		tests/e2e/test_signed_keys_fuzz.py

# The liveness check at full size: 10,000 hostile landmark sets and 10,000 flat moves of a picture (make test: 300).
fuzz-face-liveness: setup
	FUZZ_CASES=10000 $(PY) -m pytest -q -n 0 tests/unit/test_face_liveness.py -k "hostile or flat_picture_is_live"

# Face inputs from outside at full size: 10,000 hostile cases each of face.upsert, face.remove, face.upload (through
# the registry into a real SQLite store, the enrolment process's answer fuzzed too) and photo bytes into the decoder
# (make test runs 300 each).
fuzz-face: setup
	FUZZ_CASES=10000 $(PY) -m pytest -q -n 0 tests/unit/test_face_fuzz.py

# Kept enrolment photos' audit commands (face.photo, face.show) at full size: 10,000 hostile users, ids (../, NUL,
# huge) and offsets against a real store holding a kept photo; in-process, about a minute.
fuzz-face-photos: setup
	FUZZ_CASES=10000 $(PY) -m pytest -q -n 0 tests/unit/test_face_photos.py -k fuzz

# The screen cue on 10,000 arbitrary pixel arrays (NaN, inf, huge levels, odd shapes and dtypes) and the worker's
# liveness settings on 10,000 hostile values (python and JSON text: NaN/Infinity tokens, duplicate keys, nesting).
fuzz-face-screen: setup
	FUZZ_CASES=10000 $(PY) -m pytest -q -n 0 tests/unit/test_face_screen.py -k "any_array or hostile"

# Face recognition figures (docs/face.md, docs/performance.md): enrolment, 1:N at 10,000 and 50,000, frame -> door
# p50/p99, RSS, keypad -> relay while recognition runs, error rates on the test photos. Run it alone.
bench-face: setup
	$(PY) bench/face.py

# The liveness screen cue's figures (docs/face.md "The screen cue"): scores of live, photo and screen scenes, the
# test photos, and a sweep of screen pitch, tilt and blur. A few minutes (HOG on every frame).
bench-face-screen: setup
	$(PY) bench/face_screen.py

bench-smoke: setup
	$(PY) -m pytest -q tests/e2e/test_bench_smoke.py

# Reader fuzz at full size: 10,000 cases per reader interface (keypad bytes, QR payloads, NFC UIDs) through the
# real daemon and hw-sim (make test runs a fast pass of 200). ~31 min on the 2-core machine: run it alone.
# What phones send (NFC answers to the challenge, Bluetooth adverts): 10,000 hostile cases each in process against a
# real store, then 2,000 adverts and 200 NFC answers through one daemon and hw-sim (make test: 500 / 200 / 20).
fuzz-phone: setup
	PHONE_FUZZ_CASES=10000 PHONE_FUZZ_LIVE=200 $(PY) -m pytest -q -n 0 -s tests/e2e/test_phone_fuzz.py

# Phone credentials through hw-sim: NFC tap and BLE advert -> relay, signature checks/s, keypad with 50 phones around.
bench-phone: setup
	$(PY) bench/phone.py --taps 100 --tokens 100 --probes 200 --phones 50

fuzz-readers: setup
	DOORPHONE_FUZZ_READERS_EXAMPLES=10000 DOORPHONE_FUZZ_READERS_RENDERED=300 \
		$(PY) -m pytest -q -n 0 -s tests/e2e/test_reader_fuzz.py

# The full MQTT command fuzz (10,000 hypothesis payloads with hostile shapes + a burst of 3,000) through
# one long-lived daemon and a real mosquitto; `make test` runs a 2,000-payload pass of the same test.
fuzz-mqtt: setup
	DOORPHONE_FUZZ_MQTT_EXAMPLES=10000 $(PY) -m pytest -q -n 0 tests/e2e/test_cloud.py -k command_fuzz

# The command registry's parity fuzz at full size: 10,000 hypothesis cases (each up to five requests) with hostile
# shapes, every one sent over the control socket and MQTT dispatch in one process and loop: same answers, nothing
# refused runs.
fuzz-registry: setup
	FUZZ_CASES=10000 $(PY) -m pytest -q -n 0 tests/unit/test_command_registry.py -k fuzz

# The migration runner against 10,000 damaged state databases (user_version, schema_migrations rows): each opens
# completely or is refused in one line and left as it was. About 5 minutes; `make test` runs 300.
fuzz-migrations: setup
	FUZZ_CASES=10000 $(PY) -m pytest -q -n 0 tests/unit/test_migrate_fuzz.py

# Hostile RTSP at full size: 10,000 hypothesis cases over raw TCP into one long-lived monitor server, a flood of
# 400 connections, 10,000 hostile control lines (make test runs 200 + 150). The RTSP part took 18.5 min on the
# loaded 2-core machine; run it alone.
fuzz-monitor: setup
	FUZZ_CASES=10000 $(PY) -m pytest -q -n 0 tests/e2e/test_monitor_fuzz.py

# The same hostile RTSP against the daemon's own stream (camera process), in one daemon, then a flood of 200
# connections while a QR code opens (make test: 150 cases, ~25 s). Run it alone.
fuzz-monitor-unit: setup
	FUZZ_CASES=10000 $(PY) -m pytest -q -n 0 tests/e2e/test_monitor_unit_fuzz.py

# Credential sync and settings bodies past the envelope through one daemon and mosquitto: 10,000 cases
# (make test: 400).
fuzz-sync: setup
	FUZZ_CASES=10000 $(PY) -m pytest -q -n 0 tests/e2e/test_sync.py -k fuzz_past_the_envelope

# The call history's video figures from the camera process's viewer entries: 10,000 hostile shapes (NaN,
# Infinity, huge numbers and strings, wrong types) always give a valid row and cloud JSON (make test: 500).
fuzz-call-video: setup
	FUZZ_CASES=10000 $(PY) -m pytest -q -n 0 tests/unit/test_sip_feature.py -k any_shape

# Every interface's full property fuzz (docs/reliability.md): >= 10,000 hostile cases each. Over an hour: run it alone.
fuzz: fuzz-mqtt fuzz-local fuzz-readers fuzz-sip fuzz-ctl fuzz-registry fuzz-motion fuzz-migrations fuzz-monitor fuzz-camera fuzz-monitor-unit fuzz-captures fuzz-signedkeys fuzz-phone fuzz-call-video fuzz-sync fuzz-face fuzz-face-liveness fuzz-face-photos fuzz-face-screen

# The reliability suite (docs/reliability.md): 100 kill -9 under mixed load (as root: the state dir on a tmpfs
# that gets filled), and an hour of mixed load watching for growth. SEED=n replays a chaos run.
chaos: setup
	$(PY) bench/chaos.py --rounds 100 $(if $(SEED),--seed $(SEED))

soak: setup
	$(PY) bench/soak.py --minutes 60

# Regenerate the generated part of docs/configuration.md from the schema.
docs: setup
	$(PY) -m doorphoned.app.config --update docs/configuration.md

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
