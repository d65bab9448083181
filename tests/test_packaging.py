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
    for board in ("pico", "esp32", "qemu"):
        text = (ROOT / "boards" / board / "manifest.py").read_text()
        for name in re.findall(r'module\("([^"]+)"\)', text):
            assert (ROOT / "boards" / board / name).exists(), name
        # every firmware freezes the same device code
        assert 'include("../device_manifest.py")' in text, board
    text = (ROOT / "boards" / "device_manifest.py").read_text()
    assert 'package("bms", base_path="../device")' in text
    files = re.search(r'package\("drivers", files=\(([^)]*)\)', text).group(1)
    names = re.findall(r'"([^"]+)"', files)
    assert "sim_i2c.py" not in names          # host only: never on a board
    for name in names:
        assert (ROOT / "boards" / "drivers" / name).exists(), name
    on_disk = {f.name for f in (ROOT / "boards" / "drivers").glob("*.py")}
    assert on_disk - set(names) == {"sim_i2c.py"}, on_disk - set(names)
