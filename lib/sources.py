"""Offline sources: Debian packages unpacked under `data/sources/`, checked against the checksums they ship.

Every corpus and every WordNet task reads files that a Debian package ships. They are fetched with
`apt-get download` and unpacked with `dpkg-deb -x` (nothing is installed), one folder per package,
`data/sources/<package>/`, which beside the package's files holds three files written at fetch time:

| file                | what it is |
|---------------------|------------|
| `.md5sums`          | a verbatim copy of the `md5sums` member of the package's control archive: Debian's MD5 of every regular file the package ships |
| `.md5sums-unlisted` | the MD5 of the files the package ships but its `md5sums` leaves out (conffiles under `etc/`), computed from the .deb just unpacked |
| `.complete`         | the name of the .deb (so its version), written last |

`problems(pkg)` checks every listed file (a missing, truncated or edited file fails) and that no file was added;
`require(...)` raises `MissingSourceError` naming each problem and the repair command (`make data`), before any
corpus is read; `fetch()` (`make data`, `python -m lib.corpora fetch`) re-unpacks every package that fails, in the
version it had (from the apt cache, else `apt-get download <package>=<version>`). A folder unpacked before the
checksums were kept gets them recorded, without being touched otherwise, when its files match the package.
`digest(...)` is a SHA-256 over the recorded checksums: it enters the cache key of every corpus built from the
packages, so changed content can never be served under an old key.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote

from lib.paths import SOURCES_DIR

DEBIAN_PACKAGES = {
    "wordnet-base": "WordNet 3.0 license",
    "dict-gcide": "GPL-3+",
    "python3.11-doc": "PSF-2.0",
    "fortunes": "BSD-like (fortune-mod)",
    "fortunes-min": "BSD-like (fortune-mod)",
    "lua-penlight": "Expat",
    "luarocks": "Expat",
    "lua-busted": "Expat",
    "lua-ldoc": "Expat",
    "prosody": "Expat",
    "lmod": "LGPL-2.1+",
    "libpython3.11-minimal": "PSF-2.0",
    "libpython3.11-stdlib": "PSF-2.0",
}
SUMS, UNLISTED, COMPLETE = ".md5sums", ".md5sums-unlisted", ".complete"
OWN_FILES = (SUMS, UNLISTED, COMPLETE)
APT_ARCHIVES = Path("/var/cache/apt/archives")  # .debs apt has already downloaded (and checked)
REPAIR = "Run `make data` (or `python -m lib.corpora fetch`) to fetch or repair it; nothing else is touched."
_VERIFIED: dict[Path, tuple] = {}  # package folder -> the file signature it last passed with (per process)


class MissingSourceError(RuntimeError):
    """An offline data source is absent or damaged; the message names what and says what to run."""


def package_dir(pkg: str) -> Path:
    return SOURCES_DIR / pkg


def have_package(pkg: str) -> bool:
    """The package was unpacked completely (it may still be damaged since: see `problems`)."""
    return (package_dir(pkg) / COMPLETE).exists()


def version(pkg: str) -> str | None:
    """The Debian version of the unpacked package (from its .deb's name), None when it is not there."""
    stamp = package_dir(pkg) / COMPLETE
    if not stamp.exists():
        return None
    return unquote(stamp.read_text().strip().split("_")[1])  # name_version_arch.deb, ':' written as %3a


# --------------------------------------------------------------------------- checking
def read_sums(path: Path) -> dict[str, str]:
    """`md5sums` format (`<md5>  <path>` per line) -> {path: md5}."""
    out = {}
    for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
        if line.strip():
            out[line[34:]] = line[:32]
    return out


def recorded_sums(folder: Path) -> dict[str, str] | None:
    """Every file's recorded MD5 (the package's and the unlisted ones), None when they were never recorded."""
    if not (folder / SUMS).exists() or not (folder / UNLISTED).exists():
        return None
    return {**read_sums(folder / SUMS), **read_sums(folder / UNLISTED)}


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> dict[str, os.stat_result]:
    """Regular files under `folder` (relative posix path -> stat), symlinks and this module's own files aside."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            if rel not in OWN_FILES and not path.is_symlink():
                out[rel] = path.stat()
    return out


def check(folder: Path, sums: dict[str, str]) -> list[str]:
    """What in `folder` disagrees with `sums`: missing files, files failing their checksum, files not listed."""
    present = _files(folder)
    out = []
    for rel, md5 in sorted(sums.items()):
        if rel not in present:
            out.append(f"{rel} is missing")
        elif file_md5(folder / rel) != md5:
            out.append(f"{rel} fails its checksum (truncated or edited; {present[rel].st_size} bytes now)")
    out += [f"{rel} does not belong to the package" for rel in sorted(set(present) - set(sums))]
    return out


def problems(pkg: str) -> list[str]:
    """Why the package's folder cannot be trusted, [] when every file matches the package's checksums."""
    folder = package_dir(pkg)
    if not (folder / COMPLETE).exists():
        return ["not fetched" if not folder.exists() else "incompletely unpacked"]
    sums = recorded_sums(folder)
    if sums is None:
        return ["no checksums recorded (unpacked before they were kept)"]
    signature = (tuple(sorted((rel, st.st_size, st.st_mtime_ns) for rel, st in _files(folder).items())),
                 (folder / SUMS).read_bytes(), (folder / UNLISTED).read_bytes())
    if _VERIFIED.get(folder) == signature:
        return []
    found = check(folder, sums)
    if not found:
        _VERIFIED[folder] = signature
    return found


def report(found: dict[str, list[str]], limit: int = 5) -> str:
    lines = []
    for pkg, what in found.items():
        more = f"; and {len(what) - limit} more" if len(what) > limit else ""
        lines.append(f"  {pkg} ({package_dir(pkg)}): {'; '.join(what[:limit])}{more}")
    return "\n".join(lines)


def require(*packages: str) -> None:
    """Raise MissingSourceError, naming every missing or damaged file and `make data`, unless all are intact."""
    found = {p: why for p in packages if (why := problems(p))}
    if found:
        raise MissingSourceError("offline data source(s) missing or damaged:\n" + report(found) + "\n" + REPAIR)


def digest(*packages: str) -> str:
    """SHA-256 (16 hex digits) of the packages' versions and recorded checksums; checks them first."""
    require(*packages)
    h = hashlib.sha256()
    for pkg in packages:
        folder = package_dir(pkg)
        for part in (pkg.encode(), (folder / COMPLETE).read_bytes(), (folder / SUMS).read_bytes(),
                     (folder / UNLISTED).read_bytes()):
            h.update(part)
            h.update(b"\x00")
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- fetching and repairing
def fetch(packages=tuple(DEBIAN_PACKAGES), quiet: bool = False) -> list[str]:
    """Fetch the packages that are missing, re-unpack those that are damaged (idempotent); returns those touched.

    A package keeps the version it had. Raises MissingSourceError naming them when dpkg-deb/apt-get are unavailable.
    """
    todo = {p: why for p in packages if (why := problems(p))}
    if not todo:
        return []
    if shutil.which("dpkg-deb") is None:
        raise MissingSourceError("dpkg-deb not found, so these Debian packages cannot be unpacked: " + " ".join(todo)
                                 + f". On a Debian machine run `make data`; elsewhere unpack them into "
                                 f"{SOURCES_DIR}/<package>/ with their md5sums.")
    SOURCES_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=SOURCES_DIR, prefix=".fetch-") as tmp:
        for pkg, why in todo.items():
            work = Path(tmp) / pkg
            work.mkdir()
            deb = obtain(pkg, work, quiet)
            fresh = unpack(deb, work / "unpacked")
            done = install(pkg, fresh, work)
            if not quiet:
                print(f"{pkg}: {done} from {deb.name} (was: {why[0]}{' ...' if len(why) > 1 else ''})")
    return list(todo)


def obtain(pkg: str, dest: Path, quiet: bool = False) -> Path:
    """The package's .deb in `dest`: the version already unpacked, from the apt cache or the archive."""
    old = package_dir(pkg) / COMPLETE
    name = old.read_text().strip() if old.exists() else None
    if name and (APT_ARCHIVES / name).exists():
        shutil.copy2(APT_ARCHIVES / name, dest / name)
        return dest / name
    ver = version(pkg)
    res = apt_download(f"{pkg}={ver}" if ver else pkg, dest)
    if res.returncode != 0 and ver:
        res = apt_download(pkg, dest)
        if res.returncode == 0 and not quiet:
            print(f"{pkg}: version {ver} is no longer available, fetched the current one instead; the corpora "
                  "built from it get new cache keys")
    if res.returncode != 0:
        raise MissingSourceError(f"`apt-get download {pkg}` failed: {res.stderr.strip()[-300:]} "
                                 "(run `sudo apt-get update` first)")
    (deb,) = dest.glob(f"{pkg}_*.deb")
    return deb


def apt_download(spec: str, dest: Path) -> subprocess.CompletedProcess:
    if shutil.which("apt-get") is None:
        raise MissingSourceError(f"apt-get not found, so this Debian package cannot be fetched: {spec}. On a "
                                 f"Debian machine run `make data`; elsewhere unpack it into {SOURCES_DIR}/<package>/.")
    cmd = ["apt-get", "download", spec]
    res = subprocess.run(cmd, cwd=dest, capture_output=True, text=True)
    if res.returncode != 0 and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True)  # empty package lists on a new machine
        res = subprocess.run(cmd, cwd=dest, capture_output=True, text=True)
    return res


def unpack(deb: Path, out: Path) -> Path:
    """`dpkg-deb -x` into `out`, with the package's checksums beside its files (`.complete` last)."""
    subprocess.run(["dpkg-deb", "-x", str(deb), str(out)], check=True)
    control = out.parent / "control"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True)
    listed = control / "md5sums"
    (out / SUMS).write_bytes(listed.read_bytes() if listed.exists() else b"")
    sums = read_sums(out / SUMS)
    unlisted = {rel: file_md5(out / rel) for rel in sorted(_files(out)) if rel not in sums}
    (out / UNLISTED).write_text("".join(f"{md5}  {rel}\n" for rel, md5 in unlisted.items()),
                                encoding="utf-8", errors="surrogateescape")
    bad = check(out, {**sums, **unlisted})
    if bad:
        raise MissingSourceError(f"{deb.name} does not match its own md5sums: {'; '.join(bad[:5])}")
    (out / COMPLETE).write_text(deb.name + "\n")
    return out


def install(pkg: str, fresh: Path, work: Path) -> str:
    """Put the fresh unpack in place. A folder of the same version whose files all match it only gets the
    checksums (its files stay as they are, for the processes reading them); any other is replaced whole."""
    dest = package_dir(pkg)
    same = dest.exists() and (dest / COMPLETE).exists() and \
        (dest / COMPLETE).read_text() == (fresh / COMPLETE).read_text()
    if same and not check(dest, {**read_sums(fresh / SUMS), **read_sums(fresh / UNLISTED)}):
        for name in (UNLISTED, SUMS):  # each written under a temporary name and renamed into place
            shutil.copyfile(fresh / name, dest / f"{name}.tmp")
            os.replace(dest / f"{name}.tmp", dest / name)
        return "checksums recorded"
    if dest.exists():
        dest.rename(work / "old")  # removed with the temporary folder
    fresh.rename(dest)
    return "repaired" if same else "unpacked"


def main(argv: list[str]) -> int:
    if argv == ["fetch"]:
        got = fetch()
        print(f"fetched or repaired {len(got)} package(s)" if got
              else "all offline sources present and intact (checked against their packages' md5sums)")
        return 0
    if argv == ["check"]:
        found = {p: why for p in DEBIAN_PACKAGES if (why := problems(p))}
        print("offline sources missing or damaged:\n" + report(found) + "\n" + REPAIR if found
              else "all offline sources present and intact")
        return 1 if found else 0
    print("usage: python -m lib.corpora fetch | check")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
