"""docs/wiring.md is made from boards/*/board.py: it must match them."""
from bms_host import cli, wiring


def test_wiring_md_matches_the_board_files(capsys):
    rc = cli.main(["wiring", "--check"])
    assert rc == 0, "docs/wiring.md is out of date: run `bms-host wiring`"
    text = wiring.DOC.read_text()
    for board in wiring.BOARDS:
        pins, config, _ = wiring.board_literals(board)
        assert "`boards/%s/board.py`" % board in text
        assert "| charge FET | %d |" % pins["charge_fet"] in text
        for a in config["ads_addrs"]:
            assert "| 0x%02X | ADDR to " % a in text


def test_a_changed_pin_makes_the_check_fail(tmp_path, monkeypatch):
    out = tmp_path / "wiring.md"
    assert cli.main(["wiring", "--out", str(out)]) == 0
    assert cli.main(["wiring", "--check", "--out", str(out)]) == 0
    real = wiring.board_literals

    def moved(name):
        pins, config, meta = real(name)
        if name == "pico":
            pins = dict(pins, charge_fet=3)
        return pins, config, meta

    monkeypatch.setattr(wiring, "board_literals", moved)
    assert cli.main(["wiring", "--check", "--out", str(out)]) == 1
    assert "| charge FET | 3 |" in wiring.render()


def test_straps_and_dividers():
    assert wiring.ina_strap(0x40) == "A1 = GND, A0 = GND"
    assert wiring.ina_strap(0x45) == "A1 = VS, A0 = VS"
    assert wiring.ina_strap(0x4F) == "A1 = SCL, A0 = SCL"
    assert wiring.e96(170000) == 169000 and wiring.e96(1250) == 1240
    # the divider table's ratio is (top + bottom) / bottom: 4.5 V per cell reads 4.0 V
    rows = wiring.tap_table([18.0], 10000, 4.096, lambda k: "x")
    assert "| 18.0000 | 170 k | 169 k | 17.9000 |" in rows[2]
