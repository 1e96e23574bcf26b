"""Fetch what a cross deployment needs, into ``${XDG_CACHE_HOME:-~/.cache}/qexport/``.

* ONNX Runtime's library for another architecture, from the onnxruntime wheel of the same
  version as the installed one (``pip download``; the wheel holds
  ``onnxruntime/capi/libonnxruntime.so.<version>``, whose soname is ``libonnxruntime.so.1``).
* qemu-user >= 10 for running aarch64 programs on x86 (Debian bookworm's qemu 7.2 crashes in
  ONNX Runtime's CPU detection): Debian's ``qemu-user`` package (static binaries) from trixie or
  bookworm-backports, downloaded with a private apt configuration that reads the mirror from
  this machine's own /etc/apt sources (the system's apt state is not touched), then ``dpkg -x``.
* a qemu-aarch64 that loads TCG plugins, for counting instructions (benchmarks/bench.py
  --arm-icount): Debian's qemu-user is a static build without plugin support, so
  :func:`fetch_qemu_plugins` builds the aarch64 user-mode emulator alone from Debian's qemu source
  package (the same private apt configuration), with plugins enabled, and keeps it with its
  ``qemu-plugin.h`` (a plugin must be built against the header of the qemu that loads it).

Nothing here is needed on the device itself.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DeployError", "cache_dir", "ort_version", "fetch_ort_library", "find_qemu", "fetch_qemu",
           "debian_mirror", "QEMU_ENV", "MIN_QEMU_MAJOR", "QemuPlugins", "QEMU_PLUGINS_ENV", "qemu_has_plugins",
           "find_qemu_plugins", "fetch_qemu_plugins"]

#: Environment variable naming a qemu-aarch64 binary to use instead of fetching one.
QEMU_ENV = "QEXPORT_QEMU"
#: Oldest qemu-user major version known to run ONNX Runtime (7.2 crashes in its CPU detection).
MIN_QEMU_MAJOR = 10
#: Debian suites searched for qemu-user (the candidate with the highest version wins).
QEMU_SUITES = ("trixie", "bookworm-backports")

# pip platform tags of the ONNX Runtime wheels, per target.
_WHEEL_PLATFORMS = {
    "aarch64": ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux2014_aarch64"),
    "x86_64": ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux2014_x86_64"),
}


class DeployError(RuntimeError):
    """A deployment step cannot proceed; the message says what to install or change."""


def cache_dir() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/qexport``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "qexport"


def ort_version() -> str:
    """Version of the installed onnxruntime package (e.g. ``1.32.0``)."""
    import onnxruntime

    return onnxruntime.__version__.split("+")[0]


def _install_atomically(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dest)


def fetch_ort_library(target: str = "aarch64", version: str | None = None, *, cache: Path | None = None,
                      say=None) -> Path:
    """``libonnxruntime.so.1`` for ``target``, from the onnxruntime wheel of ``version`` (default:
    the installed onnxruntime's). For ``x86_64`` on an x86_64 machine the installed wheel's own
    library is used. Cached as ``<cache>/ort-<target>-<version>/libonnxruntime.so.1``."""
    version = version or ort_version()
    dest = (cache or cache_dir()) / f"ort-{target}-{version}" / "libonnxruntime.so.1"
    if dest.is_file():
        return dest
    if target == _host_arch():
        import onnxruntime

        capi = Path(onnxruntime.__file__).parent / "capi"
        libs = sorted(capi.glob("libonnxruntime.so.1*"))
        if libs and version == ort_version():
            _install_atomically(libs[0], dest)
            return dest
    if target not in _WHEEL_PLATFORMS:
        raise DeployError(f"no ONNX Runtime wheel platform known for target {target!r}")
    say = say or (lambda msg: None)
    say(f"downloading the {target} onnxruntime=={version} wheel (pip download)")
    with tempfile.TemporaryDirectory(prefix="qexport-ort-") as tmp:
        errors = []
        pythons = dict.fromkeys([f"{sys.version_info.major}.{sys.version_info.minor}", "3.12", "3.11", "3.10"])
        for py in pythons:
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                   "--implementation", "cp", "--python-version", py, "-d", tmp]
            for plat in _WHEEL_PLATFORMS[target]:
                cmd += ["--platform", plat]
            cmd.append(f"onnxruntime=={version}")
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wheels = list(Path(tmp).glob("onnxruntime-*.whl"))
            if proc.returncode == 0 and wheels:
                break
            errors.append(f"python {py}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['failed']}")
        else:
            raise DeployError(f"could not download the {target} onnxruntime=={version} wheel with pip: "
                              + "; ".join(errors) + ". Download it by hand and unpack "
                              "onnxruntime/capi/libonnxruntime.so.* as " + str(dest))
        with zipfile.ZipFile(wheels[0]) as zf:
            names = [n for n in zf.namelist() if re.fullmatch(r"onnxruntime/capi/libonnxruntime\.so\.1[0-9.]*", n)]
            if not names:
                raise DeployError(f"{wheels[0].name} holds no onnxruntime/capi/libonnxruntime.so.1*")
            out = Path(tmp) / "lib"
            out.mkdir()
            extracted = Path(zf.extract(names[0], out))
        _install_atomically(extracted, dest)
    return dest


def _host_arch() -> str:
    return os.uname().machine


# ----------------------------------------------------------------------------------------------
# qemu-user


def _qemu_major(path: str | os.PathLike) -> int | None:
    try:
        proc = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"version (\d+)\.", proc.stdout)
    return int(m.group(1)) if m else None


def find_qemu() -> Path | None:
    """A usable qemu-aarch64 without downloading: ``$QEXPORT_QEMU`` (taken as it is), a cached
    one, or one on PATH whose version is >= 10."""
    env = os.environ.get(QEMU_ENV)
    if env:
        path = Path(env).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise DeployError(f"{QEMU_ENV}={env!r} is not an executable file")
        return path.resolve()
    for cached in sorted((cache_dir()).glob("qemu-user-*/qemu-aarch64"), reverse=True):
        if os.access(cached, os.X_OK):
            return cached
    for name in ("qemu-aarch64", "qemu-aarch64-static"):
        found = shutil.which(name)
        if found and (_qemu_major(found) or 0) >= MIN_QEMU_MAJOR:
            return Path(found)
    return None


def debian_mirror() -> str:
    """The first Debian archive URI of this machine's apt sources (not the security archive)."""
    etc = Path("/etc/apt")
    files = sorted((etc / "sources.list.d").glob("*.sources")) + [etc / "sources.list"] + \
        sorted((etc / "sources.list.d").glob("*.list"))
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        uris: list[str] = []
        if f.suffix == ".sources":
            for line in text.splitlines():
                if line.startswith("URIs:"):
                    uris += line.split()[1:]
        else:
            for line in text.splitlines():
                parts = line.split()
                if parts and parts[0] == "deb":
                    rest = [p for p in parts[1:] if not p.startswith("[") and not p.endswith("]")]
                    if rest:
                        uris.append(rest[0])
        for uri in uris:
            if "debian-security" in uri or "security." in uri:
                continue
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    raise DeployError("no Debian package mirror found in /etc/apt sources (needed to fetch qemu-user >= 10). "
                      f"Install qemu-user >= {MIN_QEMU_MAJOR} yourself and set {QEMU_ENV} to its qemu-aarch64.")


def _private_apt(work: Path, suites: tuple[str, ...], *, sources: bool = False) -> list[str]:
    """apt-get options for a private configuration in ``work`` reading ``suites`` of this
    machine's Debian mirror (with ``sources``: the source packages too); the system's apt state
    is neither read nor written."""
    for d in ("lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/preferences.d"):
        (work / d).mkdir(parents=True, exist_ok=True)
    keyring = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    (work / "etc/sources.list").write_text("")
    (work / "etc/sources.list.d/qexport.sources").write_text(
        f"Types: deb{' deb-src' if sources else ''}\n"
        f"URIs: {debian_mirror()}\n"
        f"Suites: {' '.join(suites)}\n"
        "Components: main\n"
        + (f"Signed-By: {keyring}\n" if keyring.is_file() else ""))
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip() or "amd64"
    return ["-o", f"Dir::Etc::SourceList={work}/etc/sources.list",
            "-o", f"Dir::Etc::SourceParts={work}/etc/sources.list.d",
            "-o", f"Dir::Etc::PreferencesParts={work}/etc/preferences.d",
            "-o", f"Dir::State::Lists={work}/lists",
            "-o", f"Dir::Cache={work}/cache",
            "-o", "Dir::State::status=/dev/null",
            "-o", f"APT::Architecture={arch}",
            "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root"]


def fetch_qemu(*, say=None) -> Path:
    """A qemu-aarch64 that runs ONNX Runtime: :func:`find_qemu`, else Debian's qemu-user package
    (>= 10, from trixie or bookworm-backports) fetched into the cache."""
    found = find_qemu()
    if found is not None:
        return found
    say = say or (lambda msg: None)
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise DeployError(f"'{tool}' not found: cannot fetch qemu-user. Install qemu-user >= {MIN_QEMU_MAJOR} "
                              f"and set {QEMU_ENV} to its qemu-aarch64.")
    say(f"fetching qemu-user >= {MIN_QEMU_MAJOR} ({' or '.join(QEMU_SUITES)}) with a private apt configuration")
    with tempfile.TemporaryDirectory(prefix="qexport-qemu-") as tmp:
        work = Path(tmp)
        opts = _private_apt(work, QEMU_SUITES)

        def apt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
            proc = subprocess.run(["apt-get", *opts, "-qq", *args], capture_output=True, text=True, cwd=cwd)
            if proc.returncode != 0:
                raise DeployError(f"apt-get {args[0]} failed (private configuration in {work}): "
                                  f"{proc.stderr.strip()[-800:]}. Install qemu-user >= {MIN_QEMU_MAJOR} yourself "
                                  f"and set {QEMU_ENV} to its qemu-aarch64.")
            return proc

        apt("update")
        pkg_dir = work / "pkg"
        pkg_dir.mkdir()
        apt("download", "qemu-user", cwd=pkg_dir)
        debs = list(pkg_dir.glob("qemu-user_*.deb"))
        if not debs:
            raise DeployError("apt-get download qemu-user produced no .deb")
        version = re.sub(r"^[0-9]+(%3a|:)", "", debs[0].name.split("_")[1])  # without the epoch
        subprocess.run(["dpkg", "-x", str(debs[0]), str(work / "x")], check=True)
        binary = work / "x/usr/bin/qemu-aarch64"
        if not binary.is_file():
            raise DeployError(f"{debs[0].name} holds no usr/bin/qemu-aarch64")
        major = _qemu_major(binary)
        if major is None or major < MIN_QEMU_MAJOR:
            raise DeployError(f"the fetched qemu-aarch64 ({debs[0].name}) does not run or is older than "
                              f"{MIN_QEMU_MAJOR}. Set {QEMU_ENV} to a qemu-aarch64 >= {MIN_QEMU_MAJOR}.")
        dest = cache_dir() / f"qemu-user-{version}" / "qemu-aarch64"
        _install_atomically(binary, dest)
        say(f"qemu-aarch64 {version} cached in {dest}")
    return dest


# ----------------------------------------------------------------------------------------------
# qemu-user with TCG plugins (instruction counting)

#: Environment variable naming a folder with a plugin-capable ``qemu-aarch64`` and the
#: ``qemu-plugin.h`` it was built with (the layout :func:`fetch_qemu_plugins` caches).
QEMU_PLUGINS_ENV = "QEXPORT_QEMU_PLUGINS"
#: Debian suite whose qemu source package is built.
QEMU_SOURCE_SUITE = "trixie"


@dataclass(frozen=True)
class QemuPlugins:
    """A qemu-aarch64 that loads TCG plugins (``-plugin``), and the folder of its qemu-plugin.h."""

    qemu: Path
    include: Path
    version: str


def qemu_has_plugins(path: str | os.PathLike) -> bool:
    """Whether ``path`` accepts ``-plugin`` (Debian's static qemu-user says "unknown option")."""
    try:
        proc = subprocess.run([str(path), "-plugin", "help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Plugin options" in proc.stdout + proc.stderr


def _plugins_in(folder: Path) -> QemuPlugins | None:
    qemu, header = folder / "qemu-aarch64", folder / "qemu-plugin.h"
    if qemu.is_file() and os.access(qemu, os.X_OK) and header.is_file():
        m = re.search(r"version ([0-9][^ \n]*)", subprocess.run([str(qemu), "--version"], capture_output=True,
                                                                text=True).stdout)
        return QemuPlugins(qemu, folder, m.group(1) if m else "?")
    return None


def find_qemu_plugins() -> QemuPlugins | None:
    """A plugin-capable qemu-aarch64 without building one: ``$QEXPORT_QEMU_PLUGINS`` (a folder with
    ``qemu-aarch64`` and its ``qemu-plugin.h``), or the one cached by :func:`fetch_qemu_plugins`."""
    env = os.environ.get(QEMU_PLUGINS_ENV)
    if env:
        found = _plugins_in(Path(env).expanduser())
        if found is None or not qemu_has_plugins(found.qemu):
            raise DeployError(f"{QEMU_PLUGINS_ENV}={env!r} must be a folder holding a qemu-aarch64 built with plugin "
                              "support (configure --enable-plugins) and the qemu-plugin.h of that same qemu")
        return found
    for folder in sorted(cache_dir().glob("qemu-plugins-*"), reverse=True):
        found = _plugins_in(folder)
        if found is not None and qemu_has_plugins(found.qemu):
            return found
    return None


def fetch_qemu_plugins(*, jobs: int | None = None, say=None) -> QemuPlugins:
    """:func:`find_qemu_plugins`, else build qemu-aarch64 (user mode, plugins enabled, nothing
    else) from Debian trixie's qemu source package into ``<cache>/qemu-plugins-<version>/`` with
    its qemu-plugin.h. Needs gcc, ninja, pkg-config and glib's headers (``apt-get install
    ninja-build pkg-config libglib2.0-dev``); meson and pycotap, at the versions the source's
    pythondeps.toml installs, come from PyPI into a throw-away venv. 2-6 minutes (5.5 measured with
    one job on a busy 2-core machine)."""
    found = find_qemu_plugins()
    if found is not None:
        return found
    say = say or (lambda msg: None)
    hint = (f"Or build qemu with --enable-plugins yourself and set {QEMU_PLUGINS_ENV} to a folder holding its "
            "qemu-aarch64 and the qemu-plugin.h of that qemu (include/qemu/ of its source).")
    for tool, pkg in (("apt-get", "apt"), ("tar", "tar"), ("gcc", "gcc"), ("ninja", "ninja-build"),
                      ("pkg-config", "pkg-config")):
        if shutil.which(tool) is None:
            raise DeployError(f"'{tool}' not found (needed to build a qemu with plugins): apt-get install {pkg}. {hint}")
    if subprocess.run(["pkg-config", "--exists", "glib-2.0", "gmodule-2.0"]).returncode != 0:
        raise DeployError(f"glib's headers are missing (needed to build a qemu with plugins): apt-get install "
                          f"libglib2.0-dev. {hint}")
    jobs = jobs or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="qexport-qemu-src-") as tmp:
        work = Path(tmp)
        opts = _private_apt(work, (QEMU_SOURCE_SUITE,), sources=True)

        def run(cmd: list[str], what: str, cwd: Path | None = None) -> None:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
            if proc.returncode != 0:
                raise DeployError(f"{what} failed: {(proc.stderr or proc.stdout).strip()[-1500:]}. {hint}")

        say(f"fetching Debian {QEMU_SOURCE_SUITE}'s qemu source package (private apt configuration)")
        run(["apt-get", *opts, "-qq", "update"], "apt-get update")
        src = work / "src"
        src.mkdir()
        run(["apt-get", *opts, "-qq", "source", "--download-only", "qemu"], "apt-get source qemu", cwd=src)
        tarballs = sorted(src.glob("qemu_*.orig.tar.*"))
        if not tarballs:
            raise DeployError(f"apt-get source qemu gave no qemu_*.orig.tar.*. {hint}")
        version = tarballs[0].name.split("_")[1].split(".orig")[0]
        run(["tar", "xf", tarballs[0].name], "unpacking the qemu source", cwd=src)
        tree = next(p for p in src.iterdir() if p.is_dir())
        # pythondeps.toml's [meson] section: what configure would install from the bundled wheels,
        # which the Debian source (+ds) leaves out. (A regex, not tomllib: Python 3.10 has none.)
        section = re.search(r"^\[meson\]\n(.*?)(?=^\[|\Z)", (tree / "pythondeps.toml").read_text(), re.M | re.S)
        pins = [f"{n}=={v}" for n, v in re.findall(r'^([\w.]+)\s*=\s*\{[^}]*installed\s*=\s*"([^"]+)"',
                                                    section.group(1) if section else "", re.M)]
        if not any(p.startswith("meson==") for p in pins):
            pins.append("meson>=1.5,<1.6")
        say(f"qemu {version}: a build venv with {', '.join(pins)} (pip)")
        venv = work / "venv"
        run([sys.executable, "-m", "venv", str(venv)], "python -m venv")
        run([str(venv / "bin/python"), "-m", "pip", "install", "-q", *pins], "pip install " + " ".join(pins))
        build = work / "build"
        build.mkdir()
        say(f"qemu {version}: configuring and building qemu-aarch64 with plugins ({jobs} job(s), a few minutes)")
        run([str(tree / "configure"), f"--python={venv / 'bin/python'}", "--target-list=aarch64-linux-user",
             "--without-default-features", "--enable-plugins", "--disable-docs", "--disable-werror",
             "--disable-debug-info", "--disable-install-blobs"], "qemu's configure", cwd=build)
        run(["ninja", "-j", str(jobs), "qemu-aarch64"], "building qemu-aarch64", cwd=build)
        dest = cache_dir() / f"qemu-plugins-{version}"
        _install_atomically(build / "qemu-aarch64", dest / "qemu-aarch64")
        _install_atomically(tree / "include/qemu/qemu-plugin.h", dest / "qemu-plugin.h")
    found = _plugins_in(dest)
    if found is None or not qemu_has_plugins(found.qemu):
        raise DeployError(f"the qemu-aarch64 built in {dest} does not accept -plugin. {hint}")
    say(f"qemu-aarch64 {version} with plugins cached in {dest}")
    return found
