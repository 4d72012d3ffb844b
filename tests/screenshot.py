"""A person's view of an HTML report: a screenshot by chromium-headless-shell, or a skip that says why."""

import shutil
import subprocess
from pathlib import Path

import pytest

SCREENSHOT_SHELL = "chromium-headless-shell"
WINDOW = (1300, 2400)


def screenshot(page: Path, picture: Path, window: tuple[int, int] = WINDOW) -> Path:
    """`picture`: the page as a browser draws it; the test is skipped when the browser is not installed."""
    shell = shutil.which(SCREENSHOT_SHELL)
    if shell is None:
        pytest.skip(
            f"{SCREENSHOT_SHELL} is not installed (apt-get install {SCREENSHOT_SHELL}): no screenshot"
        )
    subprocess.run(
        [shell, "--no-sandbox", f"--screenshot={picture}", f"--window-size={window[0]},{window[1]}",
         page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return picture
