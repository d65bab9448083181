# Calibration store on flash: an upload is installed or refused, and never stays behind.
import json
import os

import scratch
from bms import calfile, calstore
from sim import sample_cal


def _store(name):
    root = scratch.path("calstore_%s" % name) + "/"
    try:
        os.mkdir(root[:-1])
    except OSError:
        pass
    for p in (calstore.ACTIVE, calstore.PREVIOUS, calstore.STAGED, calstore.TMP,
              calstore.UPLOAD):
        try:
            os.remove(root + p)
        except OSError:
            pass
    try:
        os.mkdir(root + calstore.DIR)
    except OSError:
        pass
    return calstore.CalStore(1, root), root


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _text():
    return calfile.encode(json.dumps(sample_cal.calibration()))


def test_upload_is_installed_and_removed():
    st, root = _store("ok")
    _write(root + calstore.UPLOAD, _text())
    checksum = st.install_file(calstore.UPLOAD)
    assert st.checksum == checksum and st.source == calstore.ACTIVE
    assert not _exists(root + calstore.UPLOAD) and _exists(root + calstore.ACTIVE)


def test_oversized_upload_is_refused_before_it_is_read_and_removed():
    st, root = _store("big")
    _write(root + calstore.UPLOAD, _text())
    st.install_file(calstore.UPLOAD)
    good = st.checksum
    with open(root + calstore.UPLOAD, "w") as f:
        block = "x" * 1024
        for _ in range(calfile.MAX_BYTES // 1024 + 1):
            f.write(block)
    try:
        st.install_file(calstore.UPLOAD)
        raise AssertionError("an oversized upload was accepted")
    except calfile.CalibrationError as e:
        assert "more than the %d" % calfile.MAX_BYTES in str(e), str(e)
    assert not _exists(root + calstore.UPLOAD)
    assert st.checksum == good          # the old calibration stays active


def test_rejected_upload_is_removed_and_the_old_one_stays():
    st, root = _store("bad")
    _write(root + calstore.UPLOAD, _text())
    st.install_file(calstore.UPLOAD)
    good = st.checksum
    text = _text()
    _write(root + calstore.UPLOAD, text[:len(text) // 2])
    try:
        st.install_file(calstore.UPLOAD)
        raise AssertionError("a truncated upload was accepted")
    except calfile.CalibrationError as e:
        assert "cut short" in str(e), str(e)
    assert not _exists(root + calstore.UPLOAD) and st.checksum == good


def test_boot_removes_an_upload_cut_short():
    st, root = _store("boot")
    _write(root + calstore.UPLOAD, _text())
    st.install_file(calstore.UPLOAD)
    _write(root + calstore.UPLOAD, _text()[:100])   # the host lost the port mid-upload
    again = calstore.CalStore(1, root)
    assert again.load() and again.checksum == st.checksum
    assert not _exists(root + calstore.UPLOAD)
