# Runs one device-side test module's test_* functions under MicroPython and prints one
# line per test: "PASS name" or "FAIL name" followed by the traceback, then "END".
import sys


def main(modname):
    mod = __import__(modname)
    names = sorted(n for n in dir(mod) if n.startswith("test_"))
    for name in names:
        try:
            getattr(mod, name)()
            print("PASS " + name)
        except Exception as e:
            print("FAIL " + name)
            sys.print_exception(e)
            print("ENDFAIL")
    print("END")


# Run as a script by the unix port (micropython mpy_runner.py test_x); imported by the
# qemu runner, which calls main() itself.
if __name__ == "__main__":
    main(sys.argv[1])
