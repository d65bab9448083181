"""Write the mip package.json for the device code: the files and the version that
device/manifest.py ships (the `bms` package and the board drivers), so that
`mpremote mip install github:<owner>/<repo>` installs what the firmware freezes."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host_tools"))

from bms_host import manifest  # noqa: E402

# The MQTT client telemetry uses; not part of the firmware, fetched by mip.
DEPS = [["github:ChuMicro/ChuMicro-Bundle/chumicro_mqtt", "main"]]


def package(path=manifest.DEVICE_MANIFEST):
    m = manifest.load(path)
    if not m.version:
        raise SystemExit("gen_package_json: %s has no metadata(version=...)" % path)
    urls = sorted([target, source.relative_to(ROOT).as_posix()] for target, source in m.files)
    return {"urls": urls, "deps": DEPS, "version": m.version}


if __name__ == "__main__":
    try:
        text = json.dumps(package(), indent=1)
    except manifest.ManifestError as e:
        raise SystemExit("gen_package_json: %s" % e) from None
    print(text)
