"""bms-host push as a maker uses it: a huge or binary file is refused on the host before
anything is sent, a calibration reformatted by `python -m json.tool` goes up by its
content, and the board never keeps an oversized or rejected upload."""
import subprocess
import sys
from pathlib import Path

import pytest

from bms_host import UserError
from bms_host.calibration import read_calibration
from bms_host.device import Device
from bms_host.push import UPLOAD, push
from bms_host.sim import SimDevice

ROOT = Path(__file__).resolve().parents[1]
LGM50 = ROOT / "calibration" / "lgm50.json"
BMS_HOST = str(Path(sys.executable).parent / "bms-host")
NO_PORT = "/dev/pts/999999"   # reaching the port at all would say it does not exist


def bms_host(*args):
    return subprocess.run([BMS_HOST, *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_a_10_mb_file_is_refused_before_upload(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.write(LGM50.read_bytes())
        f.write(b" " * (10 * 1024 * 1024))
    r = bms_host("push", big, "--port", NO_PORT)
    assert r.returncode == 2, r
    err = r.stderr.strip()
    assert "10.5 MB" in err and "32 KB" in err and "Nothing was sent" in err, err
    assert len(err.splitlines()) == 1
    r = bms_host("push", big, "--port", NO_PORT, "--no-check")   # the limit holds regardless
    assert r.returncode == 2 and "Nothing was sent" in r.stderr, r.stderr


@pytest.mark.parametrize("flags", [(), ("--no-check",)])
def test_a_binary_file_gets_one_sentence(tmp_path, flags):
    blob = tmp_path / "cal.json"
    blob.write_bytes(bytes(range(256)) * 8)
    r = bms_host("push", blob, "--port", NO_PORT, *flags)
    assert r.returncode == 2, r
    err = r.stderr.strip()
    assert "binary data" in err and len(err.splitlines()) == 1, err
    assert "codec" not in err and "utf-8" not in err.lower(), err


def test_json_tool_reformatted_calibration_is_pushed_by_its_content(tmp_path):
    pretty = tmp_path / "pretty.json"
    pretty.write_text(subprocess.run([sys.executable, "-m", "json.tool", "--sort-keys",
                                      str(LGM50)], capture_output=True, text=True,
                                     check=True).stdout)
    assert pretty.read_bytes() != LGM50.read_bytes()
    _, checksum = read_calibration(LGM50)
    assert read_calibration(pretty)[1] == checksum
    edited = tmp_path / "edited.json"
    edited.write_text(pretty.read_text().replace('"capacity_ah": 5.', '"capacity_ah": 6.', 1))
    assert edited.read_text() != pretty.read_text()
    with SimDevice(flash=str(tmp_path / "flash")) as sim:
        sim.wait_ready()
        assert push(sim.port, str(pretty)) == checksum
        with Device(sim.port) as d:
            assert d.eval("__import__('bms').app.store.checksum") == checksum
        # the content is what is checked: an edit under the old checksum is still refused
        with pytest.raises(UserError, match="checksum mismatch"):
            push(sim.port, str(edited))


def test_the_board_refuses_and_removes_an_oversized_upload(tmp_path):
    with SimDevice(calibration=str(LGM50), flash=str(tmp_path / "flash")) as sim:
        sim.wait_ready()
        with Device(sim.port) as d:
            before = d.eval("__import__('bms').app.store.checksum")
            d.write_bytes(UPLOAD, b" " * (40 * 1024))   # past the host's check, as mpremote cp
            with pytest.raises(UserError, match="more than the 32768 this board takes"):
                d.eval("__import__('bms').app.install_calibration(%r)" % UPLOAD)
            assert d.eval("__import__('bms').app.store.checksum") == before
        assert not (tmp_path / "flash" / UPLOAD).exists()


def test_an_upload_cut_short_does_not_survive_a_reboot(tmp_path):
    flash = tmp_path / "flash"
    with SimDevice(calibration=str(LGM50), flash=str(flash)) as sim:
        sim.wait_ready()
        with Device(sim.port) as d:
            d.write_bytes(UPLOAD, LGM50.read_bytes()[:5000])   # the cable came out here
        assert (flash / UPLOAD).exists()
        sim.kill()
        sim.boot()
        sim.wait_ready()
        with Device(sim.port) as d:
            assert d.eval("__import__('bms').app.store.checksum") == read_calibration(LGM50)[1]
        assert not (flash / UPLOAD).exists()
