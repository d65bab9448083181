"""What ships to a board is named once, in device/manifest.py: every firmware freezes it,
package.json and `make deploy` copy it, and the drivers in it stand alone (MicroPython
built-ins only, nothing from the BMS)."""
import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bms_host import manifest

ROOT = Path(__file__).resolve().parents[1]
DRIVERS = ROOT / "boards" / "drivers"
# what a driver may import: MicroPython's own modules (and its own package)
BUILTINS = {"array", "math", "micropython", "struct", "time", "drivers"}


def _device_files():
    return {(t, s.relative_to(ROOT).as_posix()) for t, s in manifest.load().files}


def test_the_manifest_ships_the_bms_package_and_every_driver_and_nothing_else():
    on_disk = {("bms/" + p.relative_to(ROOT / "device" / "bms").as_posix(),
                p.relative_to(ROOT).as_posix())
               for p in (ROOT / "device" / "bms").rglob("*.py")}
    on_disk |= {("drivers/" + p.name, p.relative_to(ROOT).as_posix())
                for p in DRIVERS.glob("*.py")}
    assert _device_files() == on_disk
    assert manifest.load().dirs() == ["bms", "drivers"]


def test_package_json_is_current_and_takes_files_and_version_from_the_manifest():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_package_json.py")],
                         capture_output=True, text=True, check=True).stdout
    pkg = json.loads((ROOT / "package.json").read_text())
    assert json.loads(out) == pkg, "package.json is stale: run `make package.json`"
    assert {tuple(u) for u in pkg["urls"]} == _device_files()
    m = manifest.load()
    init = ast.parse((ROOT / "device" / "bms" / "__init__.py").read_text())
    (device_version,) = [n.value.value for n in init.body if isinstance(n, ast.Assign)
                         and getattr(n.targets[0], "id", "") == "__version__"]
    assert pkg["version"] == m.version == device_version


def _deploy_copies(board):
    # -n: the commands make would run (none is run); -o: the venv counts as set up
    r = subprocess.run(["make", "-s", "-n", "-o", ".venv/.installed", "deploy",
                        "PORT=/dev/ttyACM9", "BOARD=" + board],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    copies, words = set(), r.stdout.split()
    for k, w in enumerate(words):
        if w != "cp" or words[k + 1] == "-r":
            continue
        srcs = []
        for x in words[k + 1:]:
            if x.startswith(":"):
                break
            srcs.append(x)
        dest = x[1:]
        copies |= {(dest + Path(s).name if dest.endswith("/") else dest, s) for s in srcs}
    return copies


@pytest.mark.parametrize("board", ["pico", "esp32"])
def test_deploy_copies_what_the_manifest_names_plus_the_board_files(board):
    copies = _deploy_copies(board)
    assert copies - _device_files() == {("board.py", "boards/%s/board.py" % board),
                                        ("main.py", "boards/main.py"),
                                        ("cal/active.json", "calibration/lgm50.json")}
    assert _device_files() <= copies


def test_every_firmware_freezes_the_device_manifest():
    device = manifest.load().files
    for name in ("pico/manifest.py", "pico/manifest_emu.py", "esp32/manifest.py",
                 "qemu/manifest.py"):
        path = ROOT / "boards" / name
        assert 'include("../../device/manifest.py")' in path.read_text(), name
        m = manifest.load(path)       # every file it names exists, or this raises
        assert m.version == manifest.load().version
        extra = {t for t, _ in m.files} - {t for t, _ in device}
        expected = {"qemu/manifest.py": set(), "pico/manifest_emu.py": {"board.py",
                                                                        "sim/sim_i2c.py"}}
        assert extra == expected.get(name, {"board.py", "main.py"}), (name, extra)


def test_the_manifest_reader_refuses_what_it_does_not_understand(tmp_path):
    bad = tmp_path / "manifest.py"
    bad.write_text('metadata(version="1")\nimport os\n')
    with pytest.raises(manifest.ManifestError, match="line 2: only metadata"):
        manifest.load(bad)
    bad.write_text('package("nothere")\n')
    with pytest.raises(manifest.ManifestError, match="nothere does not exist"):
        manifest.load(bad)
    bad.write_text('metadata(version="1")\nmetadata(version="2")\n')
    with pytest.raises(manifest.ManifestError, match="metadata\\(\\) is given twice"):
        manifest.load(bad)


def test_the_manifest_reader_agrees_with_micropythons_own_tool():
    # MicroPython's tools/manifestfile.py, from the firmware sources when unpacked
    tool = ROOT / "build" / "vendor" / "micropython" / "tools" / "manifestfile.py"
    if not tool.exists():
        pytest.skip("no MicroPython sources in build/vendor (python -m bms_host.firmware)")
    spec = importlib.util.spec_from_file_location("mpy_manifestfile", tool)
    mf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mf)
    for path in (manifest.DEVICE_MANIFEST, ROOT / "boards" / "qemu" / "manifest.py"):
        theirs = mf.ManifestFile(mf.MODE_FREEZE, {"MPY_LIB_DIR": None})
        theirs.execute(str(path))
        ours = manifest.load(path)
        assert sorted((f.target_path, str(Path(f.full_path).resolve()))
                      for f in theirs.files()) == sorted((t, str(s)) for t, s in ours.files)
        assert theirs.metadata().version == ours.version


def _imports(path):
    """(module, line) of every import in a file, including those inside functions."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append(("." * node.level + (node.module or ""), node.lineno))
    return out


def test_no_driver_imports_the_bms_or_probes_the_runtime():
    files = sorted(DRIVERS.glob("*.py"))
    assert len(files) >= 7
    for f in files:
        for name, line in _imports(f):
            top = name.split(".")[0]
            assert top in BUILTINS or name.startswith("."), \
                "%s:%d imports %s: drivers use MicroPython built-ins only" % (f.name, line, name)
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                names = {getattr(n, "id", None) for n in ast.walk(node.type)}
                assert "ImportError" not in names, \
                    "%s:%d probes an import: runtime differences live in bms.compat" \
                    % (f.name, node.lineno)


def _import_probes(path):
    """Lines of the try blocks that import something and catch ImportError."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Try):
            continue
        imports = any(isinstance(n, (ast.Import, ast.ImportFrom))
                      for stmt in node.body for n in ast.walk(stmt))
        catches = any(getattr(n, "id", None) == "ImportError"
                      for h in node.handlers if h.type is not None for n in ast.walk(h.type))
        if imports and catches:
            out.append(node.lineno)
    return out


def test_every_runtime_probe_of_the_device_code_is_in_compat():
    probes = {}
    for folder in ("device", "boards"):
        for f in sorted((ROOT / folder).rglob("*.py")):
            lines = _import_probes(f)
            if lines:
                probes[f.relative_to(ROOT).as_posix()] = lines
    assert list(probes) == ["device/bms/compat.py"], probes
