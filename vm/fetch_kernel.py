#!/usr/bin/env python3
"""Fetch and unpack the pinned guest kernels (vm/kernels.toml) into the VM cache.

    python3 -m vm.fetch_kernel [6.1|6.12|all|--all] [--cache DIR] [--force] [--no-initramfs] [-q]

Per kernel NAME this leaves in `<cache>/<NAME>/`:
  vmlinux          the uncompressed ELF kernel (QEMU boots it through its PVH note)
  modules/*.ko     the modules from kernels.toml plus their depends= closure, decompressed
  modules/order    load order, one module name a line (dependencies first)
  config           the kernel's build config
  kernel.json      what was fetched (package, version, debs, release, modules, builtins)
and builds the initramfs (vm/initramfs.py) unless --no-initramfs.

A pin is one .deb (`package`, `version`, `sha256`) or a set of them (`debs`: Debian splits newer
kernels into linux-binary-*, linux-modules-* and linux-base-*). Each .deb is fetched with
`apt-get download NAME=VERSION` into `<cache>/debs/`, its sha256 is checked, and all are unpacked
with `dpkg-deb -x` into one scratch folder that is deleted afterwards.
Nothing is installed on the host. A second run with everything in place takes milliseconds.
Works as any user that can write the cache; run it once as root during bootstrap so that
non-root users find a ready, world-readable cache.

Stdlib only (plus the `zstd` or `xz` programs for some compressions).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

VM_DIR = Path(__file__).resolve().parent
REPO = VM_DIR.parent
PINS = VM_DIR / "kernels.toml"
FORMAT = 2  # bump when the cache layout or the extraction changes


class FetchError(RuntimeError):
    """A kernel could not be fetched or unpacked; the message says what to do."""


def cache_root(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).resolve()
    env = os.environ.get("LAYERCONF_VM_CACHE")
    return Path(env).resolve() if env else REPO / ".cache" / "vm"


def _check_deb(path: Path, where: str, deb: dict) -> None:
    for key in ("package", "version", "sha256"):
        if not isinstance(deb.get(key), str) or not deb[key]:
            raise FetchError(f"{path}: {where}.{key} is missing")
    if not re.fullmatch(r"[0-9a-f]{64}", deb["sha256"]):
        raise FetchError(f"{path}: {where}.sha256 is not 64 hex digits")


def load_pins(path: Path = PINS) -> dict:
    """The pins, each kernel with `debs`: the list of .debs to unpack (one for a pin that names
    a single `package`/`version`/`sha256`)."""
    with open(path, "rb") as f:
        pins = tomllib.load(f)
    if pins.get("format") != 1:
        raise FetchError(f"{path}: unsupported format {pins.get('format')!r} (expected 1)")
    for name, k in pins.get("kernels", {}).items():
        for key in ("package", "version", "release"):
            if not isinstance(k.get(key), str) or not k[key]:
                raise FetchError(f"{path}: kernels.{name}.{key} is missing")
        if "debs" in k and "sha256" in k:
            raise FetchError(f"{path}: kernels.{name} has both sha256 and debs; a pin is one .deb "
                             "(package, version, sha256) or a list of debs")
        if "debs" not in k:
            k["debs"] = [{"package": k["package"], "version": k["version"], "sha256": k.get("sha256")}]
        if not isinstance(k["debs"], list) or not k["debs"]:
            raise FetchError(f"{path}: kernels.{name}.debs must be a non-empty list")
        for i, deb in enumerate(k["debs"]):
            _check_deb(path, f"kernels.{name}.debs[{i}]" if "sha256" not in k else f"kernels.{name}",
                       deb)
    return pins


def kernel_names(spec: str, pins: dict | None = None) -> list[str]:
    """'6.1' -> ['6.1']; 'all' -> every pinned kernel; '6.1,6.12' -> both."""
    pins = pins or load_pins()
    known = list(pins["kernels"])
    if spec in (None, "", "default"):
        return [pins.get("default", known[0])]
    if spec == "all":
        return known
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        raise FetchError(f"unknown kernel {', '.join(bad)}; pinned in {PINS}: {', '.join(known)} (or 'all')")
    return names


@dataclass
class KernelArtifacts:
    name: str
    dir: Path
    vmlinux: Path
    modules_dir: Path
    info: dict = field(default_factory=dict)

    @property
    def release(self) -> str:
        return self.info["release"]

    @property
    def module_order(self) -> list[str]:
        return list(self.info["modules"])


def wanted_modules(pin: dict, pins: dict) -> list[str]:
    """The boot modules of kernels.toml, less those this kernel no longer has (`absent_modules`)."""
    absent = set(pin.get("absent_modules", []))
    return [m for m in pins.get("modules", []) if m not in absent]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    try:
        f = open(root / ".lock", "a")
    except PermissionError:     # a cache fetched by root, read by another user: flock needs
        f = open(root / ".lock")  # no write access, and such a user only reads the cache
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _stamp(pin: dict, pins: dict) -> dict:
    return {"format": FORMAT, "debs": [d["sha256"] for d in pin["debs"]],
            "wanted_modules": wanted_modules(pin, pins),
            "extra_modules": list(pins.get("extra_modules", [])),
            "strip_module_signatures": bool(pins.get("strip_module_signatures", False))}


def cached(name: str, root: Path | None = None, pins: dict | None = None) -> KernelArtifacts | None:
    """The artifacts if they are in the cache and match the pin, else None. Never fetches."""
    pins = pins or load_pins()
    root = root or cache_root()
    pin = pins["kernels"][name]
    d = root / name
    try:
        info = json.loads((d / "kernel.json").read_text())
    except (OSError, ValueError):
        return None
    if info.get("stamp") != _stamp(pin, pins):
        return None
    vmlinux, mods = d / "vmlinux", d / "modules"
    if not vmlinux.is_file() or not (mods / "order").is_file():
        return None
    return KernelArtifacts(name, d, vmlinux, mods, info)


# ---------------------------------------------------------------- vmlinux extraction

_MAGICS = [
    ("xz", b"\xfd7zXZ\x00"),
    ("zstd", b"\x28\xb5\x2f\xfd"),
    ("gzip", b"\x1f\x8b\x08"),
    ("lz4", b"\x02\x21\x4c\x18"),
]


def _elf_complete(data: bytes) -> bool:
    if not data.startswith(b"\x7fELF") or len(data) < 64 or data[4] != 2:  # ELFCLASS64
        return False
    shoff = int.from_bytes(data[0x28:0x30], "little")
    shentsize = int.from_bytes(data[0x3A:0x3C], "little")
    shnum = int.from_bytes(data[0x3C:0x3E], "little")
    return shoff + shentsize * shnum <= len(data)


def _decompress(kind: str, data: bytes) -> bytes:
    if kind == "xz":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
    if kind == "gzip":
        return zlib.decompressobj(wbits=31).decompress(data)
    tool = {"zstd": ["zstd", "-dcq"], "lz4": ["lz4", "-dcq"]}[kind]
    if shutil.which(tool[0]) is None:
        if kind == "zstd":
            try:
                import zstandard  # optional fallback
                return zstandard.ZstdDecompressor().decompressobj().decompress(data)
            except ImportError:
                pass
        raise FetchError(f"the kernel is {kind}-compressed and `{tool[0]}` is not installed "
                         f"(apt-get install {tool[0]})")
    # Trailing bytes after the payload make the tool exit non-zero after writing the whole
    # frame; the ELF check below decides.
    p = subprocess.run(tool, input=data, capture_output=True, timeout=300)
    return p.stdout


def extract_vmlinux(bzimage: bytes) -> tuple[bytes, str]:
    """Find the compressed payload inside a bzImage and return (ELF vmlinux, compression)."""
    if bzimage.startswith(b"\x7fELF"):
        return bzimage, "none"
    tried = []
    for kind, magic in _MAGICS:
        start = 0
        while (off := bzimage.find(magic, start)) >= 0:
            start = off + 1
            try:
                out = _decompress(kind, bzimage[off:])
            except FetchError:
                raise
            except Exception as e:  # a false magic hit: try the next one
                tried.append(f"{kind}@{off}: {e}")
                continue
            if _elf_complete(out):
                return out, kind
            tried.append(f"{kind}@{off}: not a complete ELF")
    raise FetchError("no compressed ELF kernel found in the bzImage (" + "; ".join(tried[:6]) + ")")


# ---------------------------------------------------------------- modules

def read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        return _decompress("zstd", data)
    if path.name.endswith(".gz"):
        return zlib.decompress(data, wbits=31)
    return data


_SIG_MARKER = b"~Module signature appended~\n"


def strip_signature(data: bytes) -> bytes:
    """The module without its appended signature. An unsigned module loads as well (Debian
    does not enforce signatures outside secure boot; the kernel is only tainted), and it skips
    hashing and an RSA verification per module, which is slow under TCG."""
    if not data.endswith(_SIG_MARKER) or len(data) < len(_SIG_MARKER) + 12:
        return data
    info = data[-len(_SIG_MARKER) - 12:-len(_SIG_MARKER)]
    signer_len, key_id_len = info[3], info[4]
    sig_len = int.from_bytes(info[8:12], "big")
    end = len(data) - len(_SIG_MARKER) - 12 - sig_len - signer_len - key_id_len
    if end <= 0:
        return data
    return data[:end]


def modinfo(data: bytes) -> dict[str, list[str]]:
    """Key/value strings of a .ko's .modinfo (found as NUL-separated `key=value` strings)."""
    info: dict[str, list[str]] = {}
    for m in re.finditer(rb"(?<![\x21-\x7e])(depends|softdep|vermagic|name)=([^\x00]*)\x00", data):
        info.setdefault(m.group(1).decode(), []).append(m.group(2).decode(errors="replace"))
    return info


def _norm(name: str) -> str:
    return name.replace("-", "_")


def resolve_modules(wanted: list[str], index: dict[str, Path], builtin: set[str],
                    aliases: dict[str, str]) -> tuple[list[str], list[str], dict[str, bytes]]:
    """Load order (deps first) of `wanted` and their closure; returns (order, builtins, data)."""
    order: list[str] = []
    skipped: list[str] = []
    data: dict[str, bytes] = {}
    visiting: set[str] = set()

    def visit(name: str, why: str) -> None:
        name = _norm(aliases.get(name, name))
        if name in data or name in skipped:
            return
        if name in builtin:
            skipped.append(name)
            return
        if name not in index:
            raise FetchError(f"module {name} ({why}) is neither in the package nor built in")
        if name in visiting:
            raise FetchError(f"module dependency cycle at {name}")
        visiting.add(name)
        blob = read_module(index[name])
        info = modinfo(blob)
        for sd in info.get("softdep", []):
            m = re.search(r"pre:\s*([^:]*?)(?:\s+post:|$)", sd)
            for dep in (m.group(1).split() if m else []):
                if _norm(aliases.get(dep, dep)) in index or dep in builtin:
                    visit(dep, f"softdep of {name}")
        for dep in ",".join(info.get("depends", [])).split(","):
            if dep:
                visit(dep, f"needed by {name}")
        visiting.discard(name)
        data[name] = blob
        order.append(name)

    for w in wanted:
        visit(w, "kernels.toml")
    return order, skipped, data


def _module_index(moddir: Path) -> tuple[dict[str, Path], set[str]]:
    index: dict[str, Path] = {}
    for p in moddir.rglob("*.ko*"):
        m = re.fullmatch(r"(.+)\.ko(\.xz|\.zst|\.gz)?", p.name)
        if m:
            index.setdefault(_norm(m.group(1)), p)
    builtin: set[str] = set()
    bi = moddir / "modules.builtin"
    if bi.is_file():
        for line in bi.read_text().split():
            builtin.add(_norm(Path(line).name.split(".ko")[0]))
    return index, builtin


# ---------------------------------------------------------------- download

def _find_deb(debs: Path, deb: dict) -> Path | None:
    for p in sorted(debs.glob(f"{deb['package']}_*.deb")):
        if p.stat().st_size > 0 and sha256_file(p) == deb["sha256"]:
            return p
    return None


def download(deb: dict, debs: Path, suite: str = "?", log=print) -> Path:
    """One pinned .deb ({package, version, sha256}) in `debs`, downloaded if missing."""
    debs.mkdir(parents=True, exist_ok=True)
    found = _find_deb(debs, deb)
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise FetchError("apt-get is not available; fetch the .deb by hand into " + str(debs))
    spec = f"{deb['package']}={deb['version']}"
    log(f"fetch_kernel: apt-get download {spec} ({suite})")
    p = subprocess.run(["apt-get", "download", "-q", spec], cwd=debs, capture_output=True,
                       text=True, timeout=1800)
    if p.returncode != 0:
        err = (p.stderr or p.stdout).strip().splitlines()
        raise FetchError(
            f"`apt-get download {spec}` failed: {err[-1] if err else 'rc ' + str(p.returncode)}. "
            f"Run `apt-get update` (the {suite} suite must be in the apt sources); if the "
            f"version left the archive, bump the pin in {PINS}.")
    found = _find_deb(debs, deb)
    if not found:
        got = [f"{q.name} sha256={sha256_file(q)}" for q in debs.glob(f"{deb['package']}_*.deb")]
        raise FetchError(f"downloaded {spec} but its sha256 is not the pinned {deb['sha256']} "
                         f"({'; '.join(got) or 'no file'}); the archive changed or the pin is wrong")
    return found


# ---------------------------------------------------------------- main step

def _make_readable(path: Path) -> None:
    """a+rX on the tree, so that a non-root user can boot from a cache made by root."""
    for p in [path, *path.rglob("*")]:
        try:
            st = p.lstat()
            if p.is_symlink():
                continue
            mode = st.st_mode | 0o444 | (0o111 if p.is_dir() or st.st_mode & 0o100 else 0)
            if mode != st.st_mode:
                os.chmod(p, mode & 0o7777)
        except OSError:
            pass


def ensure_kernel(name: str, root: Path | None = None, *, force: bool = False,
                  log=print) -> KernelArtifacts:
    pins = load_pins()
    if name not in pins["kernels"]:
        kernel_names(name, pins)  # raises with the list of known names
    root = root or cache_root()
    if not force and (art := cached(name, root, pins)):
        return art
    pin = pins["kernels"][name]
    with _locked(root):
        if not force and (art := cached(name, root, pins)):
            return art
        t0 = time.monotonic()
        debs = [download(d, root / "debs", pin.get("suite", "?"), log) for d in pin["debs"]]
        scratch = Path(tempfile.mkdtemp(prefix=f".extract-{name}-", dir=root))
        try:
            x = scratch / "x"
            for deb in debs:
                p = subprocess.run(["dpkg-deb", "-x", str(deb), str(x)], capture_output=True,
                                   text=True, timeout=900)
                if p.returncode != 0:
                    raise FetchError(f"dpkg-deb -x {deb.name} failed: {p.stderr.strip()}")
            vmlinuz, moddir, cfg = unpacked_paths(x, pin["release"])
            if vmlinuz is None or moddir is None:
                raise FetchError(f"{', '.join(d.name for d in debs)} hold no vmlinuz or modules "
                                 f"folder for release {pin['release']}: is `release` in {PINS} "
                                 "right, or is a part of the kernel missing from `debs`?")
            out = scratch / "out"
            (out / "modules").mkdir(parents=True)
            elf, comp = extract_vmlinux(vmlinuz.read_bytes())
            (out / "vmlinux").write_bytes(elf)
            if cfg is not None:
                shutil.copyfile(cfg, out / "config")
            index, builtin = _module_index(moddir)
            aliases = dict(pins.get("softdep_aliases", {}))
            order, skipped, data = resolve_modules(wanted_modules(pin, pins), index, builtin,
                                                   aliases)
            # extra modules: their own load order; what boot already loaded is left out
            all_order, all_skipped, all_data = resolve_modules(
                wanted_modules(pin, pins) + list(pins.get("extra_modules", [])), index,
                builtin, aliases)
            extra = [m for m in all_order if m not in data]
            data.update(all_data)
            strip = bool(pins.get("strip_module_signatures", False))
            for m in all_order:
                (out / "modules" / f"{m}.ko").write_bytes(strip_signature(data[m]) if strip else data[m])
            (out / "modules" / "order").write_text("".join(m + "\n" for m in order))
            (out / "modules" / "extra").write_text("".join(m + "\n" for m in extra))
            skipped = sorted(set(skipped) | set(all_skipped))
            info = {
                "name": name, "package": pin["package"], "version": pin["version"],
                "debs": pin["debs"], "release": pin["release"], "suite": pin.get("suite"),
                "bzimage_compression": comp, "vmlinux_size": len(elf),
                "modules": order, "extra_modules": extra, "builtin": skipped,
                "config": _config_subset(out / "config"),
                "stamp": _stamp(pin, pins),
            }
            (out / "kernel.json").write_text(json.dumps(info, indent=2) + "\n")
            _make_readable(out)
            final = root / name
            if final.exists():
                shutil.rmtree(final)
            os.rename(out, final)
            _make_readable(root)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        log(f"fetch_kernel: {name}: {pin['package']} {pin['version']} -> {final} "
            f"({comp} bzImage, {len(order)} modules, {time.monotonic() - t0:.1f}s)")
        return cached(name, root, pins)


def unpacked_paths(root: Path, release: str) -> tuple[Path | None, Path | None, Path | None]:
    """(vmlinuz, modules folder, config) in unpacked kernel packages: bookworm-era packages put
    them in /boot and /lib/modules, trixie-era ones (merged /usr) all in /usr/lib/modules/REL."""
    def first(*cands: Path) -> Path | None:
        return next((c for c in cands if c.exists()), None)
    usr_mods = root / "usr" / "lib" / "modules" / release
    return (first(root / "boot" / f"vmlinuz-{release}", usr_mods / "vmlinuz"),
            first(root / "lib" / "modules" / release, usr_mods),
            first(root / "boot" / f"config-{release}", usr_mods / "config"))


_CONFIG_KEYS = re.compile(r"^(CONFIG_(EROFS_[A-Z_]+|OVERLAY_FS[A-Z_]*|TMPFS_XATTR|BLK_DEV_LOOP|"
                          r"NET_9P[A-Z_]*|9P_FS|VIRTIO_CONSOLE|EXT4_FS|PVH))=(.*)$")


def _config_subset(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            if m := _CONFIG_KEYS.match(line):
                out[m.group(1)] = m.group(3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kernel", nargs="?", default="all", help="6.1, 6.12, a comma list, or all")
    ap.add_argument("--all", action="store_true", help="every pinned kernel (the default)")
    ap.add_argument("--quiet", "-q", action="store_true", help="print errors only")
    ap.add_argument("--cache", help="cache folder (default $LAYERCONF_VM_CACHE or <repo>/.cache/vm)")
    ap.add_argument("--force", action="store_true", help="re-extract even if cached")
    ap.add_argument("--no-initramfs", action="store_true", help="do not build the initramfs")
    args = ap.parse_args(argv)
    root = cache_root(args.cache)
    out = (lambda *a, **k: None) if args.quiet else print
    try:
        for name in kernel_names("all" if args.all else args.kernel):
            art = ensure_kernel(name, root, force=args.force, log=out)
            line = f"{name}: {art.info['package']} {art.info['version']} vmlinux={art.vmlinux}"
            if not args.no_initramfs:
                sys.path.insert(0, str(VM_DIR))
                import initramfs  # noqa: E402  (sibling module)
                line += f" initramfs={initramfs.ensure_initramfs(art)}"
            out(line)
    except FetchError as e:
        print(f"fetch_kernel: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
