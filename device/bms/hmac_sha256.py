# HMAC-SHA256 (RFC 2104) over hashlib.sha256, for MicroPython ports without `hmac`.
# Used to check that a calibration pushed over MQTT was signed with the device's key.
import hashlib

_BLOCK = 64


def _bytes(x):
    return x.encode() if isinstance(x, str) else bytes(x)


def digest(key, msg):
    key = _bytes(key)
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + b"\x00" * (_BLOCK - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(_bytes(msg))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def hexdigest(key, msg):
    return "".join("%02x" % b for b in digest(key, msg))


def equal(a, b):
    """Compare two strings/bytes in time independent of where they differ."""
    a = _bytes(a)
    b = _bytes(b)
    if len(a) != len(b):
        return False
    diff = 0
    for k in range(len(a)):
        diff |= a[k] ^ b[k]
    return diff == 0


def verify(key, msg, hex_signature):
    if not isinstance(hex_signature, str) or len(hex_signature) != 64:
        return False
    return equal(hexdigest(key, msg), hex_signature.lower())
