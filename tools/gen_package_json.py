"""Write the mip package.json for the device code (device/bms and the board drivers):
`mpremote mip install github:<owner>/<repo>` then installs it on a board."""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package():
    urls = []
    for folder, dest in (("device/bms", "bms"), ("boards/drivers", "drivers")):
        for f in sorted((ROOT / folder).glob("*.py")):
            if f.name == "sim_i2c.py":
                continue  # the simulated bus stays on the host
            urls.append([dest + "/" + f.name, folder + "/" + f.name])
    return {"urls": urls, "deps": [["github:ChuMicro/ChuMicro-Bundle/chumicro_mqtt", "main"]],
            "version": "0.1.0"}


if __name__ == "__main__":
    print(json.dumps(package(), indent=1))
