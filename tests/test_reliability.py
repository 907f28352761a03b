"""Reliability properties of the whole study: offline, no pickles, every notebook validates its parameters."""
import dataclasses
import re
import socket
import typing

import pytest

from lib.config import ConfigError
from lib.offline import NetworkBlockedError, block_network, unblock_network
from lib.paths import ROOT
from lib.chapters import NOTEBOOKS, config_class


def test_network_guard_blocks_outside_and_allows_loopback():
    block_network()
    try:
        with pytest.raises(NetworkBlockedError):
            socket.create_connection(("10.255.255.1", 80), timeout=1)
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        c = socket.create_connection(srv.getsockname(), timeout=1)  # loopback is fine (Jupyter kernels use it)
        c.close()
        srv.close()
    finally:
        unblock_network()


@pytest.mark.parametrize("attempt", [
    lambda: socket.socket().connect_ex(("10.255.255.1", 80)),
    lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("10.255.255.1", 53)),
    lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", 0, ("10.255.255.1", 53)),
    lambda: socket.getaddrinfo("huggingface.co", 443),
    lambda: socket.gethostbyname("pypi.org"),
], ids=["connect_ex", "udp_sendto", "udp_sendto_flags", "getaddrinfo", "gethostbyname"])
def test_network_guard_covers_every_way_out(attempt):
    """Each attempt is refused before anything leaves the machine (the guard raises before the real call)."""
    block_network()
    try:
        with pytest.raises(NetworkBlockedError):
            attempt()
        assert socket.getaddrinfo("localhost", 80) and socket.gethostbyname("127.0.0.1") == "127.0.0.1"
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.sendto(b"x", ("127.0.0.1", 9))  # loopback UDP is fine
        udp.close()
    finally:
        unblock_network()


def test_runner_blocks_the_network_for_every_offline_profile():
    from lib.run import kernel_env

    for profile in ("smoke", "tiny", "local"):
        assert kernel_env({}, profile)["STUDY_BLOCK_NETWORK"] == "1"
    assert "STUDY_BLOCK_NETWORK" not in kernel_env({}, "paper")


def test_no_pickle_loading_anywhere():
    bad = []
    for path in list((ROOT / "lib").rglob("*.py")) + list((ROOT / "notebooks").glob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bpickle\.loads?\(|allow_pickle\s*=\s*True|joblib\.load", line):
                bad.append(f"{path.name}:{i}")
            if "torch.load(" in line and "weights_only=True" not in line:
                bad.append(f"{path.name}:{i}")
    assert not bad, f"pickle loading in {bad}"


def test_offline_sources_are_intact():
    """Every fetched Debian package matches the md5sums it ships, file by file (`make data` repairs one that does not)."""
    from lib import sources

    fetched = [p for p in sources.DEBIAN_PACKAGES if sources.have_package(p)]
    if not fetched:
        pytest.skip("no offline sources fetched (make data)")
    bad = {p: why for p in fetched if (why := sources.problems(p))}
    assert not bad, sources.report(bad)


def test_every_source_reader_checks_its_packages_first(tmp_path, monkeypatch):
    """No reader of a Debian package reads it unchecked: with the packages absent, each one raises and names `make data`."""
    from lib import corpora, sources

    monkeypatch.setattr(sources, "SOURCES_DIR", tmp_path)
    readers = [r for readers, packages, _ in corpora.SOURCES.values() if packages for r in readers]
    for reader in [*readers, corpora.wordnet_synsets]:
        with pytest.raises(sources.MissingSourceError, match="make data"):
            reader()


def _bad_values(cls):
    """One (params, expected words) per kind of bad value, derived from the config's own fields."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name not in ("profile", "recompute", "seed")]
    cases = [({"no_such_parameter": 1}, "unknown parameter"), ({"seed": "zero"}, "wrong type"),
             ({"seed": -1}, "out of range")]
    for f in fields:
        if hints[f.name] is int and f.metadata.get("lo") is not None:
            cases.append(({f.name: f.metadata["lo"] - 1}, "out of range"))
            cases.append(({f.name: "many"}, "wrong type"))
            break
    for f in fields:
        if f.metadata.get("choices") and hints[f.name] is str:
            cases.append(({f.name: "no-such-choice"}, "not allowed"))
            break
    return cases


@pytest.mark.parametrize("notebook", list(NOTEBOOKS))
def test_every_notebook_rejects_bad_parameters(notebook):
    cls = config_class(notebook)
    with pytest.raises(ConfigError, match="unknown profile"):
        cls.load("huge")
    for params, words in _bad_values(cls):
        with pytest.raises(ConfigError, match=words):
            cls.load("smoke", params)


def test_the_environment_is_the_pinned_one():
    """Every installed package is pinned in constraints.txt at the version installed (the optional packaged models
    of requirements-local.txt and the study itself aside), so two machines that run `make setup` get one env."""
    from importlib.metadata import distributions

    def norm(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    pins = {norm(ln.split("==")[0]): ln.split("==")[1].strip()
            for ln in (ROOT / "constraints.txt").read_text().splitlines() if "==" in ln and not ln.startswith("#")}
    local = {norm(ln.split("==")[0]) for ln in (ROOT / "requirements-local.txt").read_text().splitlines()
             if "==" in ln and not ln.startswith("#")}
    installed = {norm(d.metadata["Name"]): d.version for d in distributions()}
    installer = {"pip", "setuptools", "wheel"}  # the virtualenv's own tools, not the study's environment
    installed = {n: v.split("+")[0] for n, v in installed.items() if n not in local | installer | {"reuse-or-rebuild"}}
    unpinned = sorted(n for n in installed if n not in pins)
    wrong = sorted(f"{n} {installed[n]} (pinned {pins[n]})" for n in installed if n in pins and pins[n] != installed[n])
    assert not unpinned and not wrong, f"unpinned: {unpinned}; other versions: {wrong} (make constraints)"
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            assert pins.get(norm(name)) == version, f"{name}: requirements.txt and constraints.txt disagree"
