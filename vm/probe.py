"""Kernel capability probes, run as root inside a guest (agent op `probe`). Stdlib only.

Everything happens in a private folder on the guest's scratch fs, $LAYERCONF_SCRATCH (ext4 or
tmpfs, never 9p), and is unmounted and removed before returning; no mount or loop device is
left behind.

Returns a JSON-safe dict:
  kernel                 uname release / version
  filesystems            erofs, overlay, tmpfs, ext4 ... as listed in /proc/filesystems
  erofs_features         /sys/fs/erofs/features entries
  mkfs_erofs             `mkfs.erofs --version` first line (the host's, through 9p)
  scratch_fs             the scratch file system the probes ran on (ext4 / tmpfs)
  erofs_file_backed      "ok" or the errno name (6.1: ENOTBLK), image on the scratch fs
  erofs_file_backed_tmpfs  same with the image on tmpfs (ENOTBLK on 6.12 too: no read_folio)
  erofs_loop             "ok" or the error
  erofs_compressors      {lz4|lzma|deflate|zstd: "ok" | error}, image made by mkfs.erofs -z
  overlay_whiteout       form the kernel writes in the upper for a deleted lower file
                         ("char-0/0" expected)
  overlay_opaque_xattr   value of trusted.overlay.opaque on a re-created dir ("y")
  overlay_xwhiteout      whiteouts as xattrs in a lower layer: {"opaque-x": bool,
                         "whiteouts-xattr": bool} = whether a zero-size file with
                         trusted.overlay.whiteout hides the name below it, when its parent has
                         trusted.overlay.opaque="x" (6.8+) or trusted.overlay.whiteouts (6.7)
  overlay_userxattr      "ok" or the error of an overlay mount with -o userxattr (tmpfs upper)
  user_xattr             {"scratch": bool, "tmpfs": bool}: user.* xattrs can be set (tmpfs: 6.6+)
  overlay_parameters     /sys/module/overlay/parameters/* values (the defaults of mount options)
  overlay_options        {option: "ok: <options /proc/mounts shows>" | errno name}: an overlay
                         over a scratch lower with each option of OVERLAY_OPTIONS (upper on the
                         scratch fs; what the kernel adds or implies shows in the options)
  errors                 probe steps that crashed (should be empty)
"""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import subprocess
import tempfile

MS_RDONLY = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _mount(src: str, tgt: str, fstype: str, flags: int = 0, data: str | None = None) -> None:
    r = _libc.mount(src.encode(), tgt.encode(), fstype.encode(), ctypes.c_ulong(flags),
                    data.encode() if data else None)
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _umount(tgt: str) -> None:
    if _libc.umount2(tgt.encode(), 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _errname(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno:
        return errno.errorcode.get(e.errno, str(e.errno))
    return f"{type(e).__name__}: {e}"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


class _Mounts:
    """Mounts made by the probe, undone in reverse order whatever happens."""

    def __init__(self):
        self.stack: list[str] = []

    def mount(self, *a, **kw) -> None:
        _mount(*a, **kw)
        self.stack.append(a[1])

    def mount_cmd(self, args: list[str], tgt: str) -> None:
        p = subprocess.run(args + [tgt], capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError((p.stderr or p.stdout).strip() or f"rc {p.returncode}")
        self.stack.append(tgt)

    def pop(self) -> None:
        _umount(self.stack.pop())

    def close(self) -> None:
        while self.stack:
            tgt = self.stack.pop()
            try:
                _umount(tgt)
            except OSError:
                subprocess.run(["umount", "-l", tgt], capture_output=True)


def _fstype(path: str) -> str:
    """File system type of the mount holding `path` (longest mount point prefix)."""
    best, fstype = "", "?"
    for line in _read("/proc/self/mounts").splitlines():
        f = line.split()
        if len(f) >= 3:
            mp = f[1].replace("\\040", " ")
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                best, fstype = mp, f[2]
    return fstype


def _mkfs(src: str, img: str, *extra: str) -> None:
    p = subprocess.run(["mkfs.erofs", "--quiet", *extra, img, src], capture_output=True, text=True,
                       timeout=120)
    if p.returncode != 0:
        raise RuntimeError((p.stderr or p.stdout).strip() or f"mkfs.erofs rc {p.returncode}")


# harness/overlayopts.py's options, one value each that turns a feature on (probe.py is
# stdlib only: it runs in the guest before anything else is importable).
OVERLAY_OPTIONS = ("redirect_dir=on", "redirect_dir=follow", "metacopy=on", "index=on", "xino=on",
                   "xino=auto", "nfs_export=on", "uuid=on", "userxattr", "volatile")


def _shown_options(mp: str) -> str:
    """The overlay's options as /proc/mounts shows them, without the folder names."""
    for line in _read("/proc/self/mounts").splitlines():
        f = line.split()
        if len(f) >= 4 and f[1] == mp:
            return ",".join(o for o in f[3].split(",")
                            if not o.startswith(("lowerdir=", "upperdir=", "workdir=")))
    return "?"


def probe() -> dict:
    res: dict = {"errors": {}}
    u = os.uname()
    res["kernel"] = {"release": u.release, "version": u.version}
    res["filesystems"] = sorted({ln.split()[-1] for ln in _read("/proc/filesystems").splitlines() if ln.split()})
    feat = "/sys/fs/erofs/features"
    res["erofs_features"] = sorted(os.listdir(feat)) if os.path.isdir(feat) else []
    params = "/sys/module/overlay/parameters"
    res["overlay_parameters"] = ({n: _read(os.path.join(params, n)) for n in sorted(os.listdir(params))}
                                 if os.path.isdir(params) else {})
    mk = shutil.which("mkfs.erofs")
    res["mkfs_erofs"] = None
    if mk:
        p = subprocess.run([mk, "--version"], capture_output=True, text=True)
        res["mkfs_erofs"] = (p.stdout or p.stderr).strip().splitlines()[0] if (p.stdout or p.stderr) else None

    base = os.environ.get("LAYERCONF_SCRATCH") or "/run"
    top = tempfile.mkdtemp(prefix="probe-", dir=base)
    res["scratch_fs"] = _fstype(top)
    m = _Mounts()
    try:
        d = lambda *p: os.path.join(top, *p)  # noqa: E731
        for sub in ("src", "mp", "lower", "l0", "l1", "upper", "work", "merged", "u2", "w2", "m2"):
            os.makedirs(d(sub))
        with open(d("src", "hello"), "w") as f:
            f.write("hello\n" * 100)

        def step(name, fn):
            try:
                res[name] = fn()
            except Exception as e:  # noqa: BLE001
                res[name] = _errname(e)

        # -- erofs
        if mk:
            _mkfs(d("src"), d("plain.erofs"))

            def file_backed():
                m.mount(d("plain.erofs"), d("mp"), "erofs", MS_RDONLY)
                ok = _read(d("mp", "hello")).startswith("hello")
                m.pop()
                return "ok" if ok else "mounted, wrong content"
            step("erofs_file_backed", file_backed)

            def file_backed_tmpfs():  # tmpfs has no read_folio: 6.12 refuses (ENOTBLK)
                os.makedirs(d("tmpfs"))
                m.mount("probe", d("tmpfs"), "tmpfs", 0, "mode=0755")
                shutil.copyfile(d("plain.erofs"), d("tmpfs", "img"))
                try:
                    m.mount(d("tmpfs", "img"), d("mp"), "erofs", MS_RDONLY)
                    m.pop()
                    return "ok"
                finally:
                    m.pop()
            step("erofs_file_backed_tmpfs", file_backed_tmpfs)

            def loop(img=d("plain.erofs")):
                m.mount_cmd(["mount", "-t", "erofs", "-o", "loop,ro", img], d("mp"))
                ok = _read(d("mp", "hello")).startswith("hello")
                m.pop()
                return "ok" if ok else "mounted, wrong content"
            step("erofs_loop", loop)

            comps = {}
            for alg in ("lz4", "lzma", "deflate", "zstd"):
                try:
                    img = d(f"{alg}.erofs")
                    _mkfs(d("src"), img, f"-z{alg}")
                    comps[alg] = loop(img)
                except Exception as e:  # noqa: BLE001
                    comps[alg] = _errname(e)
            res["erofs_compressors"] = comps
        else:
            res["erofs_file_backed"] = res["erofs_loop"] = "no mkfs.erofs"

        # -- overlay: whiteout form and opaque marker written by the kernel
        with open(d("lower", "a"), "w") as f:
            f.write("a")
        os.makedirs(d("lower", "dir"))
        with open(d("lower", "dir", "x"), "w") as f:
            f.write("x")

        def whiteouts():
            m.mount("overlay", d("merged"), "overlay", 0,
                    f"lowerdir={d('lower')},upperdir={d('upper')},workdir={d('work')}")
            os.unlink(d("merged", "a"))
            shutil.rmtree(d("merged", "dir"))
            os.mkdir(d("merged", "dir"))
            m.pop()
            st = os.lstat(d("upper", "a"))
            if stat.S_ISCHR(st.st_mode):
                form = f"char-{os.major(st.st_rdev)}/{os.minor(st.st_rdev)}"
            elif stat.S_ISREG(st.st_mode):
                form = "file:" + ",".join(os.listxattr(d("upper", "a"), follow_symlinks=False))
            else:
                form = oct(st.st_mode)
            try:
                opq = os.getxattr(d("upper", "dir"), "trusted.overlay.opaque").decode(errors="replace")
            except OSError as e:
                opq = _errname(e)
            return form, opq
        try:
            res["overlay_whiteout"], res["overlay_opaque_xattr"] = whiteouts()
        except Exception as e:  # noqa: BLE001
            res["overlay_whiteout"] = res["overlay_opaque_xattr"] = _errname(e)

        # -- overlay: whiteouts as xattrs in a lower layer ("xwhiteout", 6.7+)
        def xwhiteout(variant):
            l0, l1 = d(f"x0-{variant}"), d(f"x1-{variant}")
            os.makedirs(os.path.join(l0, "dir"))
            os.makedirs(os.path.join(l1, "dir"))
            with open(os.path.join(l0, "dir", "f"), "w") as f:
                f.write("below")
            open(os.path.join(l1, "dir", "f"), "w").close()
            os.setxattr(os.path.join(l1, "dir", "f"), "trusted.overlay.whiteout", b"")
            if variant == "opaque-x":
                os.setxattr(os.path.join(l1, "dir"), "trusted.overlay.opaque", b"x")
            else:
                os.setxattr(os.path.join(l1, "dir"), "trusted.overlay.whiteouts", b"")
            mp = d(f"xm-{variant}")
            os.makedirs(mp)
            m.mount("overlay", mp, "overlay", MS_RDONLY, f"lowerdir={l1}:{l0}")
            hidden = not os.path.lexists(os.path.join(mp, "dir", "f"))
            m.pop()
            return hidden
        xw = {}
        for variant in ("opaque-x", "whiteouts-xattr"):
            try:
                xw[variant] = xwhiteout(variant)
            except Exception as e:  # noqa: BLE001
                xw[variant] = _errname(e)
        res["overlay_xwhiteout"] = xw

        # -- user xattrs on the scratch fs and on tmpfs (tmpfs takes them from 6.6 on)
        def user_xattr(path):
            try:
                os.setxattr(path, "user.layerconf", b"1")
                return True
            except OSError:
                return False
        os.makedirs(d("tmpfs2"))
        m.mount("probe", d("tmpfs2"), "tmpfs", 0, "mode=0755")
        open(d("tmpfs2", "f"), "w").close()
        res["user_xattr"] = {"scratch": user_xattr(d("src", "hello")), "tmpfs": user_xattr(d("tmpfs2", "f"))}
        m.pop()

        def userxattr():
            m.mount("overlay", d("m2"), "overlay", 0,
                    f"lowerdir={d('lower')},upperdir={d('u2')},workdir={d('w2')},userxattr")
            m.pop()
            return "ok"
        step("overlay_userxattr", userxattr)

        def overlay_option(i, option):
            up, wk, mp = d(f"ou{i}"), d(f"ow{i}"), d(f"om{i}")
            for p in (up, wk, mp):
                os.makedirs(p)
            m.mount("overlay", mp, "overlay", 0,
                    f"lowerdir={d('lower')},upperdir={up},workdir={wk},{option}")
            shown = _shown_options(mp)
            m.pop()
            return "ok: " + shown
        opts = {}
        for i, option in enumerate(OVERLAY_OPTIONS):
            try:
                opts[option] = overlay_option(i, option)
            except Exception as e:  # noqa: BLE001
                opts[option] = _errname(e)
        res["overlay_options"] = opts
    except Exception as e:  # noqa: BLE001
        res["errors"]["probe"] = _errname(e)
    finally:
        m.close()
        shutil.rmtree(top, ignore_errors=True)
    return res


if __name__ == "__main__":
    import json
    print(json.dumps(probe(), indent=2))
