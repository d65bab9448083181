# Waiting on another process (a recorder or monitor taking over the simulated board's port).
import time


def wait_for(pred, timeout):
    """True as soon as pred() is, polling every 0.1 s; False after timeout seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False
