"""A small client for a board (or the simulated board) over mpremote's Python API.

The raw REPL is entered WITHOUT a soft reset: a soft reset would restart the BMS on a
board and ends the unix port that plays the simulated device."""
import contextlib
import io
import os

from . import UserError


class DeviceError(UserError):
    """The device answered with an exception, or did not answer."""


class Device:
    def __init__(self, port, timeout=10.0):
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self.port = port
        if not port:
            raise UserError("no port given: pass --port /dev/ttyACM0 (or the sim's /dev/pts/N)")
        # while `bms-host record|monitor --port` holds the port, go through its shared console
        from .serialshare import resolve
        port = resolve(port)
        if not port.startswith(("socket://", "rfc2217://")) and not os.path.exists(port):
            raise UserError("port %s does not exist: is the board plugged in (or the "
                            "simulator running)?" % port)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.t = SerialTransport(port, baudrate=115200, exclusive=True,
                                         timeout=timeout)
        except (TransportError, OSError) as e:
            raise UserError("port %s cannot be opened (busy in another program such as a "
                            "serial monitor, or no permission): %s" % (port, e)) from None
        # a board's telemetry records may land anywhere in the exchange: read around them
        from .serialshare import FilteredSerial
        self.t.serial = FilteredSerial(self.t.serial)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.t.enter_raw_repl(soft_reset=False, timeout_overall=timeout)
        except (TransportError, OSError):
            self.close()
            raise DeviceError("no MicroPython REPL answered on %s within %g s: is a program "
                              "blocking the REPL, or is it not a MicroPython board?"
                              % (port, timeout)) from None

    # -- context manager -------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        t = getattr(self, "t", None)
        if t is None:
            return
        try:
            if t.in_raw_repl:
                t.exit_raw_repl()
        except Exception:  # noqa: BLE001 - the port may already be gone
            pass
        try:
            t.close()
        except Exception:  # noqa: BLE001
            pass
        self.t = None

    # -- commands --------------------------------------------------------------
    def exec(self, code, timeout=30):
        """Run code on the device; returns what it printed (bytes decoded)."""
        from mpremote.transport import TransportError

        try:
            out = self.t.exec_raw(code, timeout=timeout)
        except (TransportError, OSError) as e:   # pyserial's SerialException is an OSError
            raise DeviceError("lost contact with the device on %s: %s" % (self.port, e)) from None
        data, err = out
        if err:
            raise device_exception(err) from None
        return data.decode(errors="replace")

    def eval(self, expr, timeout=30):
        """Evaluate an expression on the device and return its value (via repr)."""
        import ast

        text = self.exec("print(repr(%s))" % expr, timeout=timeout).strip()
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text

    def put(self, local, remote):
        with open(local, "rb") as f:
            data = f.read()
        self.write_bytes(remote, data)

    def write_bytes(self, remote, data):
        try:
            self.t.fs_writefile(remote, data, chunk_size=256)
        except Exception as e:  # noqa: BLE001 - mpremote raises OSError or TransportError
            raise DeviceError("writing %s on the device failed: %s" % (remote, e)) from None

    def get(self, remote):
        try:
            return self.t.fs_readfile(remote)
        except Exception as e:  # noqa: BLE001
            raise DeviceError("reading %s from the device failed: %s" % (remote, e)) from None


def device_exception(err):
    """The device raised: keep its last line (the exception) as the sentence."""
    lines = err.decode(errors="replace").strip().splitlines()
    return DeviceError("the device raised: %s" % (lines[-1] if lines else "an error"))
