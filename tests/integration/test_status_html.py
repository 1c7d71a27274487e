"""status.yml -e ca_rotation_status_html=PATH: the epoch timeline page, rendered by a real headless Chromium.

The page must be self-contained (no script, nothing fetched from elsewhere), and the DOM Chromium builds from it
must show every epoch issuer OpenBao has, the active one, "now", and every server. The screenshot is kept under the
test's output directory (and copied to $CA_ROTATION_SCREENSHOT_DIR when that is set).
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from rotation_harness import RotationStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def rs(tmp_path_factory):
    stack = RotationStack(tmp_path_factory.mktemp("status-html"), epoch_duration="10s", validity="40s", lead_time="3s")
    yield stack
    stack.down()


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed (.ci/run installs it)")
def test_status_timeline_renders_in_chromium(rs, tmp_path):
    run = rs.playbook("rotate.yml")
    assert run["rc"] == 0, run["stdout"][-3000:]
    # a second epoch on the page: run again once the next epoch is due (its preparation, start - lead time)
    info = rs.info["epoch"]
    zero = datetime.datetime.fromisoformat(str(info["epoch_zero"]).replace("Z", "+00:00")).timestamp()
    duration, lead = int(info["epoch_duration"]), int(info["lead_time"])
    newest = int(run["report"]["epoch"])
    time.sleep(max(0.0, zero + (newest + 1) * duration - lead - time.time()) + 0.2)
    run = rs.playbook("rotate.yml")
    assert run["rc"] == 0, run["stdout"][-3000:]
    assert int(run["report"]["epoch"]) > newest, run["report"]
    page = tmp_path / "status.html"
    status = rs.playbook("status.yml", extra_vars={"ca_rotation_status_html": str(page)})
    assert status["rc"] == 0, status["stdout"][-3000:]
    html = page.read_text()
    # self-contained: no script, no external resource
    assert "<script" not in html.lower() and not re.search(r'(?:src|href)\s*=\s*"(?:https?:)?//', html)
    assert "<svg" in html

    client = rs.bao()
    issuers = client.list(f"{rs.info['pki']['int_mount']}/issuers")["data"]["key_info"]
    epochs = sorted(int(m["issuer_name"].split("-", 1)[1]) for m in issuers.values() if m.get("issuer_name", "").startswith("epoch-"))
    default = rs.default_issuer_epoch()
    assert len(epochs) >= 2

    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    for epoch in epochs:
        assert f'data-epoch="{epoch}"' in text, epoch
    assert re.search(rf'id="epoch-{default}"[^>]*data-state="active"', text)
    assert 'id="now"' in text
    for server in rs.servers:
        assert f'data-server="{server["name"]}"' in text

    shot = tmp_path / "status-timeline.png"
    res = chromium(f"--screenshot={shot}", "--window-size=1100,760", page.as_uri(), profile=tmp_path / "profile-shot")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10000
    if os.environ.get("CA_ROTATION_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["CA_ROTATION_SCREENSHOT_DIR"]) / shot.name)
