"""
Packaging and code hygiene: a non-editable install in a fresh virtualenv
must give twistd every sysmon plugin, and the code follows the rules of
DESIGN.md that a machine can check.
"""

from __future__ import annotations

import ast
import configparser
import os
import shutil
import subprocess
import sys
import venv

from twisted.application.service import IServiceMaker
from twisted.python import usage
from twisted.python.reflect import namedAny
from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def repoPythonFiles(*tops: str):
    for top in tops:
        for base, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", "_trial_temp")]
            for name in files:
                if name.endswith(".py"):
                    yield os.path.join(base, name)


def declaredTapnames() -> set[str]:
    """
    The tapnames that the checkout's plugin file declares.
    """
    from twisted.plugins import sysmon_plugins

    return {
        value.tapname
        for value in vars(sysmon_plugins).values()
        if IServiceMaker.providedBy(value)
    }


def importTimeNodes(node: ast.AST):
    """
    Every node that runs when the module is imported: all but the bodies of
    functions and lambdas.
    """
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield child
        yield from importTimeNodes(child)


def declaredPackages() -> list[str]:
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    return parser["options"]["packages"].split()


class LayoutTests(SynchronousTestCase):
    """
    The package layout that the plugin system depends on.
    """

    def test_noInitUnderTwisted(self):
        """
        There is no C{__init__.py} under C{twisted/}: one would shadow
        Twisted's own C{twisted} package.
        """
        found = [
            os.path.join(base, "__init__.py")
            for base, _, files in os.walk(os.path.join(ROOT, "twisted"))
            if "__init__.py" in files
        ]
        self.assertEqual(found, [])

    def test_everyPackageListed(self):
        """
        Every package under sysmon/ is listed in setup.cfg, and so is
        twisted.plugins (C{packages = find:} would drop it).
        """
        onDisk = {
            os.path.relpath(base, ROOT).replace(os.sep, ".")
            for base, _, files in os.walk(os.path.join(ROOT, "sysmon"))
            if "__init__.py" in files
        }
        listed = set(declaredPackages())
        self.assertEqual(onDisk - listed, set())
        self.assertIn("twisted.plugins", listed)

    def test_pluginFileIsLight(self):
        """
        The plugin file imports nothing but L{ServiceMaker}; each maker
        points at a C{sysmon.<daemon>.tap} module (or, where one module
        serves two daemons, at C{sysmon.<daemon>.tap.<tapname>} in it) that
        has C{Options} and C{makeService}.
        """
        path = os.path.join(ROOT, "twisted", "plugins", "sysmon_plugins.py")
        with open(path) as f:
            tree = ast.parse(f.read())
        imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        self.assertEqual(
            [(n.module, [a.name for a in n.names]) for n in imports],
            [("twisted.application.service", ["ServiceMaker"])],
        )
        from twisted.plugins import sysmon_plugins

        for value in vars(sysmon_plugins).values():
            if IServiceMaker.providedBy(value):
                self.assertRegex(value.module, r"^sysmon\.\w+\.tap(\.\w+)?$")
                if value.module.count(".") == 3:
                    self.assertEqual(value.module.rsplit(".", 1)[1], value.tapname)
                target = namedAny(value.module)
                self.assertTrue(issubclass(target.Options, usage.Options), value.tapname)
                self.assertTrue(callable(target.makeService), value.tapname)


class HygieneTests(SynchronousTestCase):
    """
    Rules from DESIGN.md checked over the whole tree.
    """

    def test_noGlobalReactorAtImport(self):
        """
        No module imports the global reactor at import time (only inside
        functions, as a default for an injected reactor).
        """
        offenders = []
        for path in repoPythonFiles("sysmon", "twisted", "tests", "bench"):
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for stmt in importTimeNodes(tree):
                if isinstance(stmt, ast.ImportFrom) and stmt.module == "twisted.internet":
                    if any(a.name == "reactor" for a in stmt.names):
                        offenders.append(f"{path}:{stmt.lineno}")
                if isinstance(stmt, ast.Import) and any(
                    a.name == "twisted.internet.reactor" for a in stmt.names
                ):
                    offenders.append(f"{path}:{stmt.lineno}")
        self.assertEqual(offenders, [])

    def test_noProtoHelpers(self):
        """
        Nothing imports the deprecated C{twisted.test.proto_helpers}.
        """
        offenders = []
        for path in repoPythonFiles("sysmon", "tests", "bench"):
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                if any(n.startswith("twisted.test.proto_helpers") for n in names):
                    offenders.append(f"{path}:{node.lineno}")
        self.assertEqual(offenders, [])

    def test_moduleDocstrings(self):
        """
        Every module has a docstring.
        """
        missing = []
        for path in repoPythonFiles("sysmon", "twisted", "tests", "bench"):
            with open(path) as f:
                if ast.get_docstring(ast.parse(f.read(), path)) is None:
                    missing.append(os.path.relpath(path, ROOT))
        self.assertEqual(missing, [])


class VirtualenvInstallTests(SynchronousTestCase):
    """
    A real, non-editable C{pip install .} into a fresh virtualenv.
    """

    def setUp(self):
        self.work = os.path.abspath(self.mktemp())
        os.makedirs(self.work)

    def run_(self, *argv, **kw):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, **kw)
        if proc.returncode != 0:
            self.fail(f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def test_installGivesPlugins(self):
        """
        After C{pip install .} (not editable) of a copy of the checkout into
        a fresh virtualenv: the plugin file is in the venv's site-packages,
        C{twistd --help} lists every plugin the checkout declares, and each
        plugin's own C{--help} works (so its modules were packaged).
        """
        source = os.path.join(self.work, "src")
        shutil.copytree(
            ROOT,
            source,
            ignore=shutil.ignore_patterns(
                ".git", ".venv", "_trial_temp*", "__pycache__", "build", "dist",
                "*.egg-info", "dropin.cache", ".hypothesis",
            ),
        )
        env = venv.EnvBuilder(with_pip=True, clear=True)
        target = os.path.join(self.work, "venv")
        env.create(target)
        bin_ = os.path.join(target, "bin")
        self.run_(os.path.join(bin_, "python"), "-m", "pip", "install", "--quiet", source,
                  cwd=self.work)
        # Run from a directory that holds no sysmon, so only the install counts.
        where = self.run_(
            os.path.join(bin_, "python"), "-c",
            "import twisted.plugins.sysmon_plugins as m, sysmon; print(m.__file__); print(sysmon.__file__)",
            cwd=self.work,
        ).split()
        for path in where:
            self.assertTrue(path.startswith(target), path)
        tapnames = declaredTapnames()
        listed = self.run_(os.path.join(bin_, "twistd"), "--help", cwd=self.work)
        self.assertIn("Commands:", listed)
        for tapname in sorted(tapnames):
            self.assertRegex(listed, rf"(?m)^\s+{tapname}\s")
            self.run_(os.path.join(bin_, "twistd"), tapname, "--help", cwd=self.work)
        installed = self.run_(
            os.path.join(bin_, "python"), "-c",
            "from twisted.plugin import getPlugins\n"
            "from twisted.application.service import IServiceMaker\n"
            "import twisted.plugins\n"
            "print(' '.join(sorted(p.tapname for p in getPlugins(IServiceMaker) "
            "if p.module.startswith('sysmon.'))))",
            cwd=self.work,
        ).split()
        self.assertEqual(set(installed), tapnames)
