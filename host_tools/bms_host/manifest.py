"""What ships to a board, read from device/manifest.py: the files and the version.

The manifest is MicroPython's (the firmware builds freeze it through boards/*/manifest.py);
package.json and `make deploy` take their file lists from it here, so all three agree.
This reads the manifest commands the project uses, metadata(), package(), module() and
include(), with MicroPython's meanings (paths relative to the manifest's folder, a
package without `files` is every .py file under its folder), and runs nothing else: each
statement must be one of those calls with literal arguments.

    python -m bms_host.manifest [MANIFEST] [--list | --dirs | --cp | --version]
"""
import argparse
import ast
import os
import re
import sys
from pathlib import Path

from . import REPO

DEVICE_MANIFEST = REPO / "device" / "manifest.py"
_VAR = re.compile(r"\$\((\w+)\)")


class ManifestError(Exception):
    """A manifest this reader cannot follow: one sentence naming the file and the line."""


class Manifest:
    """files: (path on the board, source file) in the order the manifest names them;
    metadata: the keyword arguments of metadata(); skipped: includes of paths with a
    variable not given (the port's own manifest, e.g. $(PORT_DIR))."""

    def __init__(self):
        self.files = []
        self.metadata = {}
        self.skipped = []

    @property
    def version(self):
        return self.metadata.get("version")

    def targets(self):
        return [t for t, _ in self.files]

    def dirs(self):
        """Folders the files go in on the board, each parent before its children."""
        out = set()
        for t in self.targets():
            parts = t.split("/")[:-1]
            for k in range(1, len(parts) + 1):
                out.add("/".join(parts[:k]))
        return sorted(out, key=lambda d: (d.count("/"), d))


def load(path=DEVICE_MANIFEST, path_vars=None):
    """The Manifest of this file and the manifests it includes."""
    m = Manifest()
    _run(Path(path).resolve(), m, dict(path_vars or {}), set())
    return m


def _run(path, m, path_vars, seen):
    if path in seen:
        return
    seen.add(path)
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (OSError, SyntaxError) as e:
        raise ManifestError("cannot read the manifest %s: %s" % (path, e)) from None
    here = path.parent
    for node in tree.body:
        where = "%s line %d" % (path, node.lineno)
        call = node.value if isinstance(node, ast.Expr) else None
        name = getattr(getattr(call, "func", None), "id", None)
        if name not in _COMMANDS:
            raise ManifestError("%s: only metadata(), package(), module() and include() "
                                "calls are understood here" % where)
        try:
            args = [ast.literal_eval(a) for a in call.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
            _COMMANDS[name](m, here, path_vars, seen, where, *args, **kwargs)
        except (ValueError, TypeError) as e:
            raise ManifestError("%s: %s(): %s" % (where, name, e)) from None


def _resolve(here, p, path_vars):
    """A manifest path: $(VAR) substituted, relative to the manifest's folder; None when
    a variable is not given."""
    missing = [v for v in _VAR.findall(p) if v not in path_vars]
    if missing:
        return None
    return (here / _VAR.sub(lambda g: str(path_vars[g.group(1)]), p)).resolve()


def _metadata(m, here, path_vars, seen, where, **kwargs):
    if m.metadata:
        raise ManifestError("%s: metadata() is given twice" % where)
    m.metadata = kwargs


def _add(m, source, target, where):
    if not source.is_file():
        raise ManifestError("%s: %s does not exist" % (where, source))
    m.files.append((target, source))


def _package(m, here, path_vars, seen, where, package_path, files=None, base_path=".",
             opt=None):
    base = _resolve(here, base_path, path_vars)
    if base is None:
        raise ManifestError("%s: package %s: base_path %s names a variable not given"
                            % (where, package_path, base_path))
    if files is not None:
        for f in files:
            _add(m, base / package_path / f, package_path + "/" + f, where)
        return
    folder = base / package_path
    if not folder.is_dir():
        raise ManifestError("%s: package folder %s does not exist" % (where, folder))
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for f in sorted(filenames):
            if f.endswith(".py"):
                src = Path(dirpath) / f
                _add(m, src, src.relative_to(base).as_posix(), where)


def _module(m, here, path_vars, seen, where, module_path, base_path=".", opt=None):
    base = _resolve(here, base_path, path_vars)
    if base is None:
        raise ManifestError("%s: module %s: base_path %s names a variable not given"
                            % (where, module_path, base_path))
    _add(m, base / module_path, module_path, where)


def _include(m, here, path_vars, seen, where, manifest_path, **options):
    p = _resolve(here, manifest_path, path_vars)
    if p is None:
        m.skipped.append(manifest_path)
        return
    if p.is_dir():
        p = p / "manifest.py"
    _run(p, m, path_vars, seen)


_COMMANDS = {"metadata": _metadata, "package": _package, "module": _module,
             "include": _include}


def _rel(p):
    try:
        return p.relative_to(REPO).as_posix()
    except ValueError:
        return str(p)


def cp_args(m):
    """mpremote's `cp SRC... :DIR/` commands for every file, one per folder, joined by +."""
    groups = {}
    for target, source in m.files:
        d = target.rsplit("/", 1)[0] + "/" if "/" in target else ""
        groups.setdefault(d, []).append(_rel(source))
    return " + ".join("cp %s :%s" % (" ".join(srcs), d) for d, srcs in groups.items())


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bms_host.manifest",
                                 description="What ships to a board, from its manifest.")
    ap.add_argument("manifest", nargs="?", default=str(DEVICE_MANIFEST))
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true",
                      help="'path-on-board source' per file (the default)")
    what.add_argument("--dirs", action="store_true", help="the folders on the board")
    what.add_argument("--cp", action="store_true", help="mpremote cp commands for them all")
    what.add_argument("--version", action="store_true", help="metadata(version=...)")
    a = ap.parse_args(argv)
    try:
        m = load(a.manifest)
    except ManifestError as e:
        print("manifest: %s" % e, file=sys.stderr)
        return 2
    if a.dirs:
        print(" ".join(m.dirs()))
    elif a.cp:
        print(cp_args(m))
    elif a.version:
        if not m.version:
            print("manifest: %s has no metadata(version=...)" % a.manifest, file=sys.stderr)
            return 2
        print(m.version)
    else:
        for target, source in m.files:
            print(target, _rel(source))
    return 0


if __name__ == "__main__":
    sys.exit(main())
