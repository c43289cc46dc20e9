"""The deployment artifacts, checked by the real tools where one exists.

systemd-analyze (units), promtool (alert rules and their unit tests), kubernetes-validate
(manifests, offline schemas) and hadolint (Dockerfile) are installed by ``.ci/tools.sh``.
A test whose tool is missing skips with the install command - unless ``CI=true``, where a
missing tool fails the test: CI must run every check for real.

The rest are plain cross-checks between the files (port names, probe paths, timeouts,
selectors, metric names, runbook anchors) that no tool makes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
PROMETHEUS = DEPLOY / "prometheus"
OPERATIONS = ROOT / "docs" / "operations.md"
DOCKERFILE = ROOT / "Dockerfile"

# The interpreter's own bin directory (the venv's, not resolved through its symlink):
# .ci/tools.sh puts hadolint, kubernetes-validate and promtool there.
VENV_BIN = Path(sys.executable).parent

# Every metric the alert rules and docs/operations.md may name, as the daemon exposes
# them: counters with their _total suffix, histograms by their base name (the rules may
# use its _bucket, _count and _sum series). To be cross-checked against a real /metrics.
EXPECTED_METRICS = frozenset(
    {
        "mailroom_outbox_messages",
        "mailroom_oldest_due_message_age_seconds",
        "mailroom_messages_sent_total",
        "mailroom_messages_retried_total",
        "mailroom_messages_dead_total",
        "mailroom_ses_call_duration_seconds",
        "mailroom_ses_errors_total",
        "mailroom_sending_paused",
        "mailroom_queue_paused",
        "mailroom_batch_size",
        "mailroom_enqueue_to_send_seconds",
        "mailroom_in_flight_messages",
        "mailroom_listen_reconnects_total",
        "mailroom_listen_connected",
        "mailroom_listen_last_heartbeat_timestamp_seconds",
        "mailroom_rate_limit_waits_total",
        "mailroom_rate_limit_wait_seconds_total",
        "mailroom_info",
        "mailroom_leases_expired_total",
        "mailroom_build_info",
        "mailroom_account_problem",
        "mailroom_bounce_rate",
        "mailroom_complaint_rate",
        "mailroom_reputation_window_recipients",
        "mailroom_events_malformed_total",
        "mailroom_events_reader_restarts_total",
    }
)
HISTOGRAMS = frozenset(
    {
        "mailroom_ses_call_duration_seconds",
        "mailroom_batch_size",
        "mailroom_enqueue_to_send_seconds",
    }
)

REQUIRED_ALERTS = frozenset(
    {
        "MailroomDown",
        "MailroomBacklogGrowing",
        "MailroomOldestDueMessageTooOld",
        "MailroomDeadLetters",
        "MailroomSesErrorsSustained",
        "MailroomSesThrottled",
        "MailroomSendingPaused",
        "MailroomListenDown",
    }
)

SHUTDOWN_TIMEOUT_SECONDS = 25  # MAILROOM_SHUTDOWN_TIMEOUT's default, 25000 ms
HTTP_PORT = 9765  # MAILROOM_HTTP_PORT's default
PORT_NAME = "http-metrics"
CRD_KINDS = frozenset({"PodMonitor"})  # no schema in kubernetes-validate


def tool(name: str) -> str:
    """The tool's path, or skip (fail under CI=true) saying how to install it."""
    found = shutil.which(name) or shutil.which(name, path=str(VENV_BIN))
    if found:
        return found
    message = f"{name} is not installed: `bash .ci/tools.sh {VENV_BIN.parent}` installs it"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: every deploy check must run)")
    pytest.skip(message)


def run(*command: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def report(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def load_one(path: Path) -> dict[str, Any]:
    (doc,) = load_all(path)
    return doc


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Key -> values (in order) of a systemd unit file; sections flattened."""
    settings: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def seconds(value: str) -> float:
    """A systemd time span such as 40, 40s, 5min, 1min 30s."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


# --------------------------------------------------------------------------- systemd


UNITS = sorted(SYSTEMD.glob("*.service"))
INSTALLED_MAILROOM = "/opt/mailroom/venv/bin/mailroom"


@pytest.fixture
def units_for_verify(tmp_path: Path) -> list[Path]:
    """Copies of the units whose ExecStart names an executable that exists here.

    systemd-analyze verify refuses a unit whose binary is missing, and the units name the
    documented install path /opt/mailroom/venv/bin/mailroom. The copies point at this
    venv's own `mailroom` console script instead; nothing else changes.
    """
    mailroom = shutil.which("mailroom", path=str(VENV_BIN)) or shutil.which("mailroom")
    if mailroom is None:
        pytest.skip("the mailroom console script is not installed (pip install -e .)")
    copies = []
    for unit in UNITS:
        text = unit.read_text(encoding="utf-8")
        assert f"ExecStart={INSTALLED_MAILROOM} " in text, unit.name
        copy = tmp_path / unit.name
        copy.write_text(text.replace(INSTALLED_MAILROOM, mailroom), encoding="utf-8")
        copies.append(copy)
    return copies


def test_systemd_analyze_verify(units_for_verify: list[Path]) -> None:
    systemd_analyze = tool("systemd-analyze")
    result = run(systemd_analyze, "verify", "--man=no", *units_for_verify)
    # verify exits 0 on unknown keys and unparsable values ("..., ignoring"): any output
    # at all is a defect.
    assert result.returncode == 0, report(result)
    assert result.stdout.strip() == "", report(result)
    assert result.stderr.strip() == "", report(result)


@pytest.mark.parametrize("name", ["mailroom.service", "mailroom-migrate.service"])
def test_systemd_analyze_security(units_for_verify: list[Path], name: str) -> None:
    """The sandbox keeps the exposure level at 'OK' (under 2.0 of 10)."""
    systemd_analyze = tool("systemd-analyze")
    (unit,) = [u for u in units_for_verify if u.name == name]
    result = run(systemd_analyze, "security", "--offline=true", "--threshold=20", unit)
    assert result.returncode == 0, report(result)


def test_systemd_unit_lifecycle_settings() -> None:
    unit = unit_settings(SYSTEMD / "mailroom.service")
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert seconds(unit["WatchdogSec"][0]) > 0
    assert unit["Restart"] == ["on-failure"]
    assert unit["ExecStart"] == [f"{INSTALLED_MAILROOM} run"]
    assert "ExecStartPre" not in unit  # migrations are mailroom-migrate.service
    # SIGKILL must not come before the daemon's own shutdown deadline.
    assert seconds(unit["TimeoutStopSec"][0]) > SHUTDOWN_TIMEOUT_SECONDS
    assert unit["EnvironmentFile"] == ["/etc/mailroom/mailroom.env"]
    # Secrets as credentials, handed over as MAILROOM_*_FILE.
    credentials = dict(c.split(":", 1) for c in unit["LoadCredential"])
    environment = " ".join(unit["Environment"])
    for variable, credential in [
        ("MAILROOM_DATABASE_URL_FILE", "database-url"),
        ("MAILROOM_SECRET_KEY_FILE", "secret-key"),
    ]:
        assert credential in credentials
        assert f"{variable}=%d/{credential}" in environment
    for key, value in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("CapabilityBoundingSet", ""),
        ("UMask", "0077"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ]:
        assert unit[key] == [value], key
    assert "@system-service" in unit["SystemCallFilter"]

    migrate = unit_settings(SYSTEMD / "mailroom-migrate.service")
    assert migrate["Type"] == ["oneshot"]
    assert migrate["ExecStart"] == [f"{INSTALLED_MAILROOM} migrate"]


def test_systemd_env_example_sets_no_secret() -> None:
    example = (SYSTEMD / "mailroom.env.example").read_text(encoding="utf-8")
    assigned = {
        line.split("=", 1)[0]
        for line in example.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    # The unit sets the _FILE variants; setting the plain ones as well is a config error.
    assert not assigned & {"MAILROOM_DATABASE_URL", "MAILROOM_SECRET_KEY"}
    assert not {name for name in assigned if name.endswith("_FILE")}
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", name) for name in assigned), assigned


# ------------------------------------------------------------------------ Prometheus


def test_promtool_check_rules() -> None:
    promtool = tool("promtool")
    result = run(promtool, "check", "rules", PROMETHEUS / "alerts.yml")
    assert result.returncode == 0, report(result)
    assert "SUCCESS" in result.stdout, report(result)


def test_promtool_test_rules() -> None:
    promtool = tool("promtool")
    result = run(promtool, "test", "rules", "alerts_test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, report(result)
    assert "SUCCESS" in result.stdout, report(result)


def alert_rules() -> list[dict[str, Any]]:
    document = load_one(PROMETHEUS / "alerts.yml")
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def metric_names(expression: str) -> set[str]:
    names = set()
    for name in re.findall(r"\bmailroom_[a-z0-9_]+", expression):
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        names.add(base if base in HISTOGRAMS else name)
    return names


def test_alert_rules_use_only_expected_metrics() -> None:
    used: set[str] = set()
    for rule in alert_rules():
        used |= metric_names(rule["expr"])
    assert used, "no mailroom_* metric found in the rules"
    assert used <= EXPECTED_METRICS, sorted(used - EXPECTED_METRICS)


def github_anchors(markdown: str) -> set[str]:
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_alert_is_annotated_and_has_a_runbook() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), names
    assert set(names) >= REQUIRED_ALERTS, sorted(REQUIRED_ALERTS - set(names))
    anchors = github_anchors(OPERATIONS.read_text(encoding="utf-8"))
    for rule in rules:
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= annotations.keys(), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        url = annotations["runbook_url"]
        assert url.endswith(f"docs/operations.md#{rule['alert'].lower()}"), url
        assert rule["alert"].lower() in anchors, (
            f"docs/operations.md lacks a {rule['alert']} heading"
        )


def test_alert_tests_cover_every_alert() -> None:
    """alerts_test.yml has, for each alert, a case where it fires (and some where not)."""
    document = load_one(PROMETHEUS / "alerts_test.yml")
    fires, silent = set(), set()
    for case in document["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert fires == names, sorted(names ^ fires)
    assert silent, "no case where an alert must stay silent"


def test_operations_doc_describes_every_metric() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    missing = sorted(name for name in EXPECTED_METRICS if f"`{name}" not in text)
    assert not missing, missing


# ------------------------------------------------------------------------ Kubernetes


def k8s_manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in k8s_manifests():
        for doc in load_all(path):
            yield path, doc


@pytest.mark.parametrize("version", ["1.28", "latest"])
def test_kubernetes_validate(version: str) -> None:
    """Every core manifest against the bundled schemas, strictly (unknown fields fail);
    the oldest Kubernetes still commonly run and the newest the tool knows."""
    kubernetes_validate = tool("kubernetes-validate")
    core = [path for path, doc in k8s_documents() if doc["kind"] not in CRD_KINDS]
    assert core
    version_args = [] if version == "latest" else ["--kubernetes-version", version]
    result = run(kubernetes_validate, "--strict", *version_args, *sorted(set(core)))
    assert result.returncode == 0, report(result)
    output = result.stdout + result.stderr
    assert "Couldn't find schema" not in output, report(result)
    assert output.count(" passed for resource ") == len(core), report(result)


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    kustomization = load_one(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    expected = {p.name for p in k8s_manifests() if ".example." not in p.name}
    assert listed == expected
    assert "secret.example.yaml" not in listed  # never overwrite the real Secret
    deployment = load_one(K8S / "deployment.yaml")
    images = {image["name"] for image in kustomization["images"]}
    pod = deployment["spec"]["template"]["spec"]
    assert {c["image"] for c in pod["containers"] + pod["initContainers"]} <= images
    generated = {g["name"] for g in kustomization["configMapGenerator"]}
    referenced = {
        source["configMapRef"]["name"]
        for container in pod["containers"]
        for source in container.get("envFrom", [])
        if "configMapRef" in source
    }
    assert referenced <= generated


def labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = selector.get("matchLabels", selector)
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def test_kubernetes_manifests_agree() -> None:
    """Port names, probe paths, selectors, timeouts and secrets line up across files."""
    deployment = load_one(K8S / "deployment.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}

    assert deployment["spec"]["replicas"] == 2
    assert labels_match(deployment["spec"]["selector"], pod_labels)

    # One HTTP port, named; the daemon is told the same number.
    (port,) = container["ports"]
    assert port["name"] == PORT_NAME
    assert port["containerPort"] == HTTP_PORT == int(env["MAILROOM_HTTP_PORT"])

    # Probes: liveness and startup on /healthz, readiness on /readyz, all on that port.
    probes = {
        kind: container[kind]["httpGet"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert {kind: p["path"] for kind, p in probes.items()} == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    assert {p["port"] for p in probes.values()} == {PORT_NAME}
    assert "lifecycle" not in container  # no preStop: no Service traffic to drain

    # The kubelet's SIGKILL comes after the daemon's shutdown deadline.
    deadline = int(env["MAILROOM_SHUTDOWN_TIMEOUT"]) / 1000
    assert deadline == SHUTDOWN_TIMEOUT_SECONDS
    assert pod["terminationGracePeriodSeconds"] > deadline

    # Migrations first, in an initContainer of the same image.
    (init,) = pod["initContainers"]
    assert init["args"] == ["migrate"]
    assert init["image"] == container["image"]
    assert container["args"] == ["run"]

    # Locked down.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in (container, init):
        context = c["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "memory" in c["resources"]["limits"]
        # Secrets come as files, never as plain environment values.
        names = {e["name"] for e in c["env"]}
        assert not names & {"MAILROOM_DATABASE_URL", "MAILROOM_SECRET_KEY"}

    # The *_FILE paths are files of the mounted Secret, and the example has those keys.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret_volume = next(name for name, v in volumes.items() if "secret" in v)
    secret_name = volumes[secret_volume]["secret"]["secretName"]
    example = load_one(K8S / "secret.example.yaml")
    assert example["metadata"]["name"] == secret_name
    init_env = {e["name"]: e.get("value") for e in init["env"]}
    init_mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    for variables, paths in [(env, mounts), (init_env, init_mounts)]:
        for variable in ("MAILROOM_DATABASE_URL_FILE", "MAILROOM_SECRET_KEY_FILE"):
            if variable not in variables:
                continue
            directory, key = variables[variable].rsplit("/", 1)
            assert directory == paths[secret_volume]
            assert key in example["stringData"], key
    assert "MAILROOM_DATABASE_URL_FILE" in init_env

    # The PodMonitor scrapes that port on these pods, as does the Service name it.
    monitor = load_one(K8S / "podmonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "PodMonitor"
    assert labels_match(monitor["spec"]["selector"], pod_labels)
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == PORT_NAME
    assert endpoint["path"] == "/metrics"

    service = load_one(K8S / "service.yaml")
    assert labels_match(service["spec"]["selector"], pod_labels)
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [PORT_NAME]

    pdb = load_one(K8S / "pdb.yaml")
    assert pdb["spec"]["minAvailable"] == 1
    assert labels_match(pdb["spec"]["selector"], pod_labels)

    # NetworkPolicy: metrics port from monitoring only; out to DNS, PostgreSQL, HTTPS.
    policy = load_one(K8S / "networkpolicy.yaml")
    assert labels_match(policy["spec"]["podSelector"], pod_labels)
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = policy["spec"]["ingress"]
    assert [p["port"] for p in ingress["ports"]] == [PORT_NAME]
    assert ingress["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 5432, 443}

    account = load_one(K8S / "serviceaccount.yaml")
    assert account["metadata"]["name"] == pod["serviceAccountName"]
    assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]


# ---------------------------------------------------------------------------- Docker


def test_hadolint_dockerfile() -> None:
    hadolint = tool("hadolint")
    result = run(hadolint, "--no-color", "--failure-threshold", "info", DOCKERFILE)
    assert result.returncode == 0, report(result)


def dockerfile_stages() -> list[list[str]]:
    """Instructions (continuation lines joined, comments dropped) grouped by stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: list[list[str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(re.sub(r"\s+", " ", stripped))
    return stages


def test_dockerfile_essentials() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build expected"
    final = stages[-1]

    def one(instruction: str) -> str:
        (found,) = [i for i in final if i.upper().startswith(instruction + " ")]
        return found[len(instruction) + 1 :]

    assert one("ENTRYPOINT") == '["mailroom"]'  # exec form: the daemon is PID 1
    assert one("CMD") == '["run"]'
    assert one("STOPSIGNAL") == "SIGTERM"
    assert one("EXPOSE") == str(HTTP_PORT)
    assert one("HEALTHCHECK").endswith('CMD ["mailroom", "check"]')
    user = one("USER")
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), f"numeric non-root USER, got {user}"
    # Only the venv crosses from the builder; nothing is compiled or installed at the end.
    copies = [i for i in final if i.startswith("COPY ")]
    assert copies == ["COPY --from=builder /opt/mailroom/venv /opt/mailroom/venv"]
    runs = " ".join(i for i in final if i.startswith("RUN "))
    assert not re.search(r"apt-get|pip |gcc|build-essential", runs), runs
    env = " ".join(i for i in final if i.startswith("ENV "))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env


def dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's (Go filepath.Match) pattern syntax, plus `**` for any number of
    directories."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append("[" + pattern[i + 1 : end].replace("!", "^", 1) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path, or one of its parent
    directories, decides; `!` re-includes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = dockerignore_regex((pattern[1:] if negate else pattern).strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_keeps_the_build_inputs() -> None:
    patterns = dockerignore_patterns()
    for needed in [
        "pyproject.toml",
        "README.md",  # hatchling reads the readme for the package metadata
        "src/mailroom/cli/commands.py",
        "src/mailroom/migrations",  # symlink to ../../sql
        "sql/0001_outbox.sql",
    ]:
        assert not dockerignore_excludes(needed, patterns), needed
    for unwanted in [
        ".git/HEAD",
        ".venv/bin/python",
        "tests/test_deploy.py",
        "src/mailroom/__pycache__/cli.cpython-311.pyc",
        "output/x.json",
    ]:
        assert dockerignore_excludes(unwanted, patterns), unwanted


def test_build_context_makes_a_wheel_with_the_migrations(tmp_path: Path) -> None:
    """What the Dockerfile's builder does: a wheel from the files .dockerignore lets
    through carries the SQL migrations (reached through the src/mailroom/migrations
    symlink). Offline: hatchling from this environment, no build isolation."""
    pytest.importorskip("hatchling", reason="hatchling (the build backend) is not installed")
    patterns = dockerignore_patterns()
    reincluded = [p[1:].strip("/") for p in patterns if p.startswith("!")]
    context = tmp_path / "context"
    for directory, subdirectories, files in os.walk(ROOT):
        base = Path(directory).relative_to(ROOT).as_posix()
        base = "" if base == "." else base
        # Do not descend into excluded trees (.git, .venv, ...) nothing re-includes.
        subdirectories[:] = [
            d
            for d in subdirectories
            if not dockerignore_excludes(f"{base}/{d}".strip("/"), patterns)
            or any(r.startswith(f"{base}/{d}".strip("/")) for r in reincluded)
        ]
        for name in files + [d for d in subdirectories if (Path(directory) / d).is_symlink()]:
            relative = f"{base}/{name}".strip("/")
            if dockerignore_excludes(relative, patterns):
                continue
            path, target = ROOT / relative, context / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                target.symlink_to(os.readlink(path))
            else:
                shutil.copy2(path, target)
    assert (context / "src/mailroom/migrations").is_symlink()
    assert not (context / "tests").exists()

    wheels = tmp_path / "wheels"
    result = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--quiet",
        "--wheel-dir",
        wheels,
        context,
        cwd=tmp_path,
    )
    assert result.returncode == 0, report(result)
    (wheel,) = wheels.glob("mailroom-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    sql = sorted(p.relative_to(ROOT / "sql").as_posix() for p in (ROOT / "sql").rglob("*.sql"))
    assert sql
    missing = [name for name in sql if f"mailroom/migrations/{name}" not in names]
    assert not missing, names


# ------------------------------------------------------------------------- the script


def test_tools_script_is_valid_bash() -> None:
    result = run("bash", "-n", ROOT / ".ci" / "tools.sh")
    assert result.returncode == 0, report(result)


# -- the SES events queue (deploy/aws/events-queue.yaml) --------------------------------------

EVENTS_QUEUE = DEPLOY / "aws" / "events-queue.yaml"


def events_queue_resources() -> dict[str, Any]:
    template = load_one(EVENTS_QUEUE)  # long-form Fn:: and Ref: plain YAML reads it
    resources: dict[str, Any] = template["Resources"]
    return resources


def test_cfn_lint_events_queue() -> None:
    result = run(tool("cfn-lint"), EVENTS_QUEUE)
    assert result.returncode == 0, report(result)


def test_events_queue_redrives_to_a_dead_letter_queue_that_outlives_it() -> None:
    resources = events_queue_resources()
    queue = resources["EventsQueue"]["Properties"]
    dlq = resources["EventsDeadLetterQueue"]["Properties"]
    assert resources["EventsDeadLetterQueue"]["Type"] == "AWS::SQS::Queue"
    redrive = queue["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]}
    assert int(redrive["maxReceiveCount"]) == 5  # docs/deliverability.md says 5
    # a message keeps its first enqueue time in the DLQ: it must be kept longer there
    assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
    assert "deadLetterTargetArn" not in dlq.get("RedrivePolicy", {})  # no DLQ of the DLQ
    text = (ROOT / "docs" / "deliverability.md").read_text(encoding="utf-8")
    assert "deploy/aws/events-queue.yaml" in text


def test_events_queue_policy_lets_only_the_event_source_send() -> None:
    resources = events_queue_resources()
    policy = resources["EventsQueuePolicy"]["Properties"]
    assert policy["Queues"] == [{"Ref": "EventsQueue"}]
    statements = policy["PolicyDocument"]["Statement"]
    allows = [s for s in statements if s["Effect"] == "Allow"]
    # one grant, SendMessage only, to the one service, tied to the one topic or rule
    assert len(allows) == 1
    (allow,) = allows
    assert allow["Action"] == "sqs:SendMessage"
    assert allow["Principal"] == {"Service": {"Ref": "EventSourceService"}}
    assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Ref": "EventSourceArn"}}}
    # and an explicit deny for every other sender, whatever identity policies grant
    denies = [s for s in statements if s["Effect"] == "Deny" and s["Action"] == "sqs:SendMessage"]
    assert len(denies) == 1
    assert denies[0]["Principal"] == "*"
    negated = denies[0]["Condition"]["ArnNotEquals"]
    assert negated["aws:SourceArn"] == {"Ref": "EventSourceArn"}
