# Every difference between the runtimes the device code runs in, probed once: MicroPython
# on a board (time.ticks_*, maybe ulab and the bms_native C module, maybe Wi-Fi), the
# host MicroPython (no ulab, no native module) and CPython in the tests (numpy for ulab).
# Other modules import what they need from here instead of guarding their own imports.

try:
    from time import ticks_diff, ticks_ms, ticks_us
except ImportError:  # CPython: a monotonic clock, wrapping never
    import time as _time

    def ticks_ms():
        return int(_time.monotonic() * 1000)

    def ticks_us():
        return int(_time.monotonic() * 1000000)

    def ticks_diff(a, b):
        return a - b

    def sleep_us(us):
        _time.sleep(us / 1000000)

    # The board drivers (boards/drivers) are plain MicroPython and take these from
    # `time` itself: in CPython, `time` gets them here.
    _time.ticks_ms, _time.ticks_us, _time.ticks_diff = ticks_ms, ticks_us, ticks_diff
    _time.sleep_us = sleep_us

try:
    import hashlib
except ImportError:  # very small ports
    hashlib = None

try:
    import bms_native as native   # the filter step and helpers in C, when in the firmware
except ImportError:
    native = None

try:
    from ulab import numpy as np
    ULAB = True
except ImportError:
    ULAB = False
    try:
        import numpy as np   # CPython stands in for ulab
    except ImportError:
        np = None


def mqtt_client():
    """(MQTTClient, fixed_connector_factory, ticks_ms) of the chumicro MQTT client, or
    None when it is not installed (imported only when telemetry goes on MQTT: RAM)."""
    try:
        from chumicro_mqtt import MQTTClient
        from chumicro_sockets.sockets_factory import fixed_connector_factory
        from chumicro_timing import ticks_ms as mqtt_ticks_ms
    except ImportError:
        return None
    return MQTTClient, fixed_connector_factory, mqtt_ticks_ms


def network():
    """The network module (Wi-Fi), or None on a board without it."""
    try:
        import network as net
    except ImportError:
        return None
    return net


def urandom(n):
    """n bytes from the port's random source (os.urandom), or None on a port without one
    (no os module, no urandom, or a source that refuses)."""
    try:
        import os
        return os.urandom(n)
    except (ImportError, AttributeError, OSError, NotImplementedError):
        return None
