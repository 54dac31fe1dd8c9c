"""bench/gpu_ship.sh: a wheel (or a tar of wheels) split for the lent GPU comes back whole and
installed, or is refused."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "gpu_ship.sh"


def rehearse(**env):
    # the rehearsal installs with `python3 -m pip`: the test's own interpreter comes first on PATH
    path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    return subprocess.run(
        ["bash", str(SCRIPT), "rehearse"], capture_output=True, text=True, timeout=120, env={"PATH": path, **env}
    )


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_parts_reassemble_verify_and_install_as_an_importable_package():
    result = rehearse()
    assert result.returncode == 0, result.stderr
    assert "part-ae" in result.stdout  # the 400 kB wheel really travelled in several parts
    assert "shipcheck-1.0-py3-none-any.whl: OK" in result.stdout
    assert "site/shipcheck/__init__.py reassembled" in result.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_a_bundle_of_wheels_installs_every_wheel_in_it():
    result = rehearse(REHEARSE_BUNDLE="1")
    assert result.returncode == 0, result.stderr
    assert "wheels.tar: OK" in result.stdout
    for module in ("shipcheck", "shipcheck_extra"):
        assert f"site/{module}/__init__.py reassembled" in result.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_a_missing_part_is_refused_before_anything_is_installed():
    result = rehearse(REHEARSE_LOSE_PART="1")
    assert result.returncode != 0
    assert "does not match its checksum: a part is missing or broken" in result.stderr
    assert "imported from" not in result.stdout
