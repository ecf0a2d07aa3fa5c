"""The real-world corpus without the network: the .deb reader and the digest checks (pure),
fetching into the content-addressed cache (the download replaced), the pinned table, and the Go
archive/tar writer run on a small tree (needs `go`)."""
import base64
import gzip
import hashlib
import http.server
import lzma
import os
import tarfile
import threading
from pathlib import Path

import pytest

from harness import capabilities, corpus
from harness.corpus import deb, pinned, rootfs
from harness.scenario import load


def ar(members) -> bytes:
    """An ar archive as dpkg-deb writes one (GNU names end in "/", odd members padded)."""
    out = [deb.MAGIC]
    for name, data in members:
        head = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        assert len(head) == deb.HEADER
        out += [head, data, b"\n" if len(data) % 2 else b""]
    return b"".join(out)


def a_deb(data_name: str, data: bytes) -> bytes:
    return ar([("debian-binary", b"2.0\n"), ("control.tar.xz", b"x" * 7), (data_name, data)])


TAR = b"a tar" * 300      # the reader never looks inside data.tar


# -- deb.py -----------------------------------------------------------------------------------

def test_deb_members_in_order_with_padding_and_gnu_names():
    got = deb.members(ar([("a", b"odd"), ("bb", b"even"), ("c", b"")]))
    assert got == [("a", b"odd"), ("bb", b"even"), ("c", b"")]


def test_deb_data_tar_keeps_what_containerd_reads_and_decompresses_the_rest():
    assert deb.data_tar(a_deb("data.tar", TAR)) == ("", TAR)
    assert deb.data_tar(a_deb("data.tar.gz", gzip.compress(TAR))) == (".gz", gzip.compress(TAR))
    assert deb.data_tar(a_deb("data.tar.zst", b"zstd frame")) == (".zst", b"zstd frame")
    assert deb.data_tar(a_deb("data.tar.xz", lzma.compress(TAR))) == ("", TAR)
    alone = lzma.compress(TAR, format=lzma.FORMAT_ALONE)
    assert deb.data_tar(a_deb("data.tar.lzma", alone)) == ("", TAR)


@pytest.mark.parametrize("blob, message", [
    (b"PK\x03\x04 a zip", "no !<arch> magic"),
    (deb.MAGIC + b"debian-binary   0", "truncated or damaged ar member header at byte 8"),
    (ar([("debian-binary", b"2.0\n")]), "has no data.tar member"),
    (a_deb("data.tar.lz4", b"x"), "unknown data.tar compression '.lz4'"),
    (a_deb("data.tar.xz", b"not xz"), "data.tar.xz does not decompress"),
    (ar([("data.tar", TAR)])[:-100], "claims 1500 bytes but the file ends first"),
])
def test_deb_errors_say_what_is_wrong(blob, message):
    with pytest.raises(deb.DebError, match=message.replace("(", r"\(").replace(")", r"\)")):
        deb.data_tar(blob)


# -- pinned.py --------------------------------------------------------------------------------

def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def pin(body: bytes, stored: bytes | None = None, **kw) -> pinned.Pinned:
    sha = hashlib.sha256(body).hexdigest()
    return pinned.Pinned("t/x", "npm-registry", "https://example.invalid/x", sha,
                         hashlib.sha256(stored if stored is not None else body).hexdigest(), **kw)


def test_verified_checks_every_digest_and_derives_the_data_tar():
    body = b"a tarball"
    assert pinned.verified(pin(body, integrity=sri(body)), body) == body
    with pytest.raises(pinned.FetchError, match=r"https://example.invalid/x: sha256 [0-9a-f]{64}, "
                       "pinned"):
        pinned.verified(pin(body), b"another tarball")
    with pytest.raises(pinned.FetchError, match="sha512 integrity"):
        pinned.verified(pin(body, integrity=sri(b"other")), body)
    package = a_deb("data.tar.xz", lzma.compress(TAR))
    assert pinned.verified(pin(package, TAR, deb_data=True), package) == TAR
    with pytest.raises(pinned.FetchError, match="t/x: made from .* with sha256"):
        pinned.verified(pin(package, b"another data.tar", deb_data=True), package)


def test_the_pinned_table_is_well_formed():
    names = [p.name for p in pinned.FILES]
    assert len(names) == len(set(names)) and set(names) <= set(corpus.NAMES)
    for p in pinned.FILES:
        assert p.registry in capabilities.KNOWN and p.registry in capabilities.NETWORK
        assert len(p.sha256) == len(p.stored) == 64 and int(p.sha256 + p.stored, 16) >= 0
        assert p.deb_data == (p.stored != p.sha256) and p.why
        assert not p.integrity or p.integrity.startswith("sha512-")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/big":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"x" * (3 << 20))
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_names_a_missing_file_and_bounds_the_size(server, monkeypatch):
    with pytest.raises(pinned.FetchError, match="HTTP 404 .* no longer serves"):
        pinned.download(f"{server}/gone.tgz", timeout=10)
    monkeypatch.setattr(pinned, "MAX_BYTES", 1 << 20)
    with pytest.raises(pinned.FetchError, match="larger than 1 MiB"):
        pinned.download(f"{server}/big", timeout=10)
    assert pinned.reachable(f"{server}/gone.tgz", timeout=5) is False


# -- the cache --------------------------------------------------------------------------------

def test_pinned_files_have_their_path_before_they_are_fetched(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "CACHE", tmp_path)
    p = pinned.BY_NAME["npm/once-1.1.1.tgz"]
    assert corpus.path(p.name) == str(tmp_path / "blobs" / "sha256" / p.stored)
    f = tmp_path / "s.yaml"
    f.write_text("description: x\nrequires: [npm-registry]\napply:\n"
                 "  media_type: application/vnd.oci.image.layer.v1.tar+gzip\n"
                 "  blob: {corpus: npm/once-1.1.1.tgz}\n")
    s = load(f)
    assert s.apply_cases[0].fixture == corpus.path(p.name)
    assert corpus.names_in(s.raw) == ["npm/once-1.1.1.tgz"]


def test_names_in_finds_corpus_names_anywhere():
    data = {"lowers": [{"corpus": "a"}, [{"path": "x"}]],
            "apply": {"cases": [{"blob": {"corpus": "b"}}, {"blob": {"fixture": "c"}}]}}
    assert corpus.names_in(data) == ["a", "b"]


def test_fetch_stores_by_content_and_downloads_once(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "CACHE", tmp_path)
    body = b"the package"
    p = pin(body)
    monkeypatch.setattr(pinned, "BY_NAME", {p.name: p})
    calls = []
    monkeypatch.setattr(pinned, "download", lambda url: calls.append(url) or body)
    corpus.fetch([p.name, "debian-bookworm-minbase.gnutar.tar", p.name], log=lambda m: None)
    corpus.fetch([p.name], log=lambda m: None)
    assert calls == [p.url] and Path(corpus.path(p.name)).read_bytes() == body
    bad = pin(b"pinned bytes")
    monkeypatch.setattr(pinned, "BY_NAME", {bad.name: bad})
    with pytest.raises(corpus.CorpusError, match=r"corpus file t/x: .* sha256"):
        corpus.fetch([bad.name], log=lambda m: None)
    assert not Path(corpus.path(bad.name)).exists()


def test_registry_capabilities_skip_with_their_reason(monkeypatch):
    monkeypatch.setattr(capabilities, "_LAZY_CACHE", {})
    monkeypatch.setattr(corpus, "registry_reachable", lambda name: False)
    miss = capabilities.missing(["npm-registry", "pypi"])
    assert any(m.startswith("npm-registry (") and "registry.npmjs.org" in m for m in miss)
    assert any(m.startswith("pypi (") and "files.pythonhosted.org" in m for m in miss)


# -- the Go archive/tar writer ----------------------------------------------------------------

def test_gotarwrite_writes_a_tree_as_go_image_tools_do(tmp_path):
    if not __import__("shutil").which("go"):
        pytest.skip("the Go toolchain (`go`) is not on PATH; cannot build the Go tar writer")
    root = tmp_path / "root"
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"content")
    os.link(root / "d" / "f", root / "g")
    (root / "s").symlink_to("d/f")
    os.setxattr(root / "d" / "f", "user.layerconf", b"v")
    os.utime(root / "d" / "f", ns=(0, 1_700_000_000_750_000_000))
    exe = rootfs.gotarwrite(tmp_path / "cache")
    assert rootfs.gotarwrite(tmp_path / "cache") == exe        # built once per source content
    out = tmp_path / "out.tar"
    rootfs.write_tar("gotar", root, out, tmp_path / "cache")
    with tarfile.open(out) as t:
        raw = {m.name: m for m in t.getmembers()}
    assert list(raw) == ["d", "d/e", "d/f", "g", "s"]            # lexical, no root entry
    assert out.read_bytes()[:2] == b"d/"                          # directories end in "/"
    f = raw["d/f"]
    assert f.isreg() and f.uname == f.gname == ""
    assert f.mtime == 1_700_000_001          # the Writer rounds to the nearest second
    assert f.pax_headers == {"SCHILY.xattr.user.layerconf": "v"}
    assert raw["g"].islnk() and raw["g"].linkname == "d/f" and raw["g"].size == 0
    assert raw["s"].issym() and raw["s"].linkname == "d/f" and not raw["s"].pax_headers


def test_the_vm_backend_fetches_on_the_host_and_leaves_errors_to_the_guest(tmp_path, monkeypatch):
    from harness.backends import vm
    f = tmp_path / "s.yaml"
    f.write_text("description: x\nrequires: [npm-registry]\napply:\n"
                 "  media_type: application/vnd.oci.image.layer.v1.tar+gzip\n"
                 "  blob: {corpus: npm/once-1.1.1.tgz}\n")
    asked = []
    monkeypatch.setattr(corpus, "fetch", lambda names, log: asked.append(list(names)))
    vm._fetch_corpus(vm._load_on_host(str(f)))
    vm._fetch_corpus(vm._load_on_host(str(tmp_path / "missing.yaml")))
    assert asked == [["npm/once-1.1.1.tgz"]]

    def offline(names, log):
        raise corpus.CorpusError("no network")
    monkeypatch.setattr(corpus, "fetch", offline)
    vm._fetch_corpus(vm._load_on_host(str(f)))            # the runner in the guest reports it


def test_build_writes_only_what_is_missing_from_the_first_tree(tmp_path, monkeypatch):
    """debootstrap once; a writer added later writes the tree unpacked from the GNU tar; a lost
    compression is made again from the stored tar (the other digests never change)."""
    import json
    monkeypatch.setattr(corpus, "CACHE", tmp_path)
    calls = []

    def debootstrap(root):
        calls.append("debootstrap")
        root.mkdir()

    def unpack(tar, root):
        calls.append("unpack")
        root.mkdir()

    def write_tar(writer, root, out, cache):
        calls.append(writer)
        out.write_bytes(f"{writer} tar of {root.name}".encode())

    monkeypatch.setattr(rootfs, "debootstrap", debootstrap)
    monkeypatch.setattr(rootfs, "unpack", unpack)
    monkeypatch.setattr(rootfs, "write_tar", write_tar)
    log = [].append
    first = corpus._build(False, log)
    assert calls == ["debootstrap", *rootfs.WRITERS] and set(first) == set(rootfs.NAMES)
    assert corpus.built()

    calls.clear()
    index = {k: v for k, v in first.items() if ".gotar." not in k}
    (tmp_path / "index.json").write_text(json.dumps(index))
    assert not corpus.built() and corpus._build(False, log) == first
    assert calls == ["unpack", "gotar"]

    calls.clear()
    index = {k: v for k, v in first.items() if not k.endswith(".bsdtar.tar.zst")}
    (tmp_path / "index.json").write_text(json.dumps(index))
    assert corpus._build(False, log) == first and calls == []
    assert not any(p.name.startswith("build-") for p in tmp_path.iterdir())   # cleaned up
