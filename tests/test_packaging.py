"""The mip package.json lists every device module, and the board manifests name files
that exist."""
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_package_json_is_current():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_package_json.py")],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == json.loads((ROOT / "package.json").read_text()), \
        "package.json is stale: run `make package.json`"
    listed = {u[1] for u in json.loads(out)["urls"]}
    for f in (ROOT / "device" / "bms").glob("*.py"):
        assert "device/bms/" + f.name in listed


def test_board_manifests_name_existing_files():
    for board in ("pico", "esp32"):
        text = (ROOT / "boards" / board / "manifest.py").read_text()
        for name in re.findall(r'module\("([^"]+)"\)', text):
            assert (ROOT / "boards" / board / name).exists(), name
        assert 'package("bms"' in text
