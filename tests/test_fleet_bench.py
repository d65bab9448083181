"""The fleet bench's machinery, small: simulated devices -> a real mosquitto -> two
`bms-host record --share` workers -> a real PostgreSQL, with the broker restarted and a
worker killed (SIGKILL) and restarted during the run. Nothing may be lost or doubled."""
import os
import shutil

import pytest

from bms_host import bench_fleet, pgcluster

needs = pytest.mark.skipif(
    not (shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto"))
    or not pgcluster.available(),
    reason="mosquitto or the PostgreSQL server is not installed (make apt)")


@needs
def test_small_fleet_survives_broker_restart_and_a_killed_worker(tmp_path):
    res = bench_fleet.run_bench(devices=30, seconds=12, peak_s=2, peak_hz=3,
                                broker_restart_at=0.3, worker_kill_at=0.6, down_s=1.5,
                                worker_down_s=2.0, workdir=str(tmp_path),
                                log=lambda m: None,
                                pg_settings=pgcluster.THROWAWAY)
    line = bench_fleet.line(res)
    assert res["sent"] >= 30 * 12, line
    assert res["lost"] == 0 and res["duplicated"] == 0 and res["stored"] == res["sent"], line
    assert res["connects"] >= 2 * 30  # every device reconnected after the broker restart
    assert line.startswith("fleet: devices=30 ") and line.endswith(" workers=2 db=postgresql")


def test_peak_rate_is_the_best_window():
    samples = [(t, 100 * t) for t in range(10)] + [(10 + t, 1000 + 500 * t) for t in range(12)]
    assert bench_fleet.peak_rate(samples, 10.0) == pytest.approx(500.0)
    assert bench_fleet.peak_rate(samples[:3], 10.0) == 0.0


def test_mqtt_packets_are_well_formed():
    assert bench_fleet._varint(0) == b"\x00" and bench_fleet._varint(321) == b"\xc1\x02"
    p = bench_fleet.publish_packet("bms/a/telemetry", 7, b"{}", dup=True)
    assert p[0] == 0x3A and p[1] == len(p) - 2 and p[-4:] == b"\x00\x07{}"
    c = bench_fleet.connect_packet("dev1")
    assert c[0] == 0x10 and c[2:8] == b"\x00\x04MQTT" and c.endswith(b"\x00\x04dev1")
