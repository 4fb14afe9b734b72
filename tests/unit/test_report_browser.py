"""report.html in a real browser: headless Chromium from file://, no console errors, charts in the DOM."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from report.cli import main
from tests.unit.test_report_synthetic import build_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (make setup installs it)"
)

CHARTS = ("throughput", "latency_over_time", "latency_distribution", "hops", "generator_cpu")
# Chromium's stderr with --enable-logging: console messages are "…:INFO:CONSOLE:1] "text", source: …"
_CONSOLE = re.compile(r":CONSOLE[:(]\d+|Uncaught|Failed to load resource|ERR_FILE_NOT_FOUND")


def _chromium(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr", "--v=0", *extra, url,
        ],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if _CONSOLE.search(line)]


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def test_the_console_check_catches_errors(tmp_path):
    """The detector below must see what a broken page logs (so the real check can fail)."""
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="missing.png">'
        '<script>console.error("boom"); undefinedFunction();</script></body></html>'
    )
    result = _chromium(tmp_path, page.as_uri(), "--dump-dom")
    errors = _console_errors(result.stderr)
    assert any("boom" in e for e in errors), result.stderr[-2000:]
    assert any("undefinedFunction" in e or "Uncaught" in e for e in errors)


def test_report_renders_from_file_url_with_charts_and_no_console_errors(tmp_path, capsys):
    run = build_run(tmp_path / "run")
    base = build_run(tmp_path / "base", run_id="20260101-000000-base", scale=0.8)
    slo = tmp_path / "slo.yaml"
    slo.write_text("e2e_p99_ms: 100\nloss_ratio_max: 0.001\nmin_delivered_per_s: 50\n")
    code = main([str(run.folder), "--slo", str(slo), "--baseline", str(base.folder), "-q"])
    capsys.readouterr()
    assert code == 1  # loss 0.5 % > 0.1 %
    url = (run.folder / "report.html").as_uri()

    result = _chromium(tmp_path, url, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    assert _console_errors(result.stderr) == [], result.stderr[-2000:]
    dom = result.stdout
    assert 'id="verdict-badge"' in dom and ">FAIL<" in dom
    for name in CHARTS:
        figure = re.search(rf'<figure class="chart" id="chart-{name}">(.*?)</figure>', dom, re.S)
        assert figure, f"chart {name} missing from the DOM"
        svg = figure.group(1)
        assert "<svg" in svg and ("<path" in svg or "<use" in svg), name
    assert len(re.findall(r"<svg\b", dom)) == len(CHARTS)
    for table in ("slo-table", "baseline-table", "requests-table", "e2e-paths-table",
                  "ledger-table", "health-table"):  # fmt: skip
        assert f'id="{table}"' in dom, table

    shot = tmp_path / "report.png"
    result = _chromium(
        tmp_path, url, "--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={shot}"
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    assert _console_errors(result.stderr) == []
    assert _png_size(shot) == (1280, 2400)
    assert shot.stat().st_size > 100_000  # charts and tables, not a blank page
