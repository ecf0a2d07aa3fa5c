#!/usr/bin/env python3
"""End-to-end smoke test of the oracle (stdlib only; needs root, erofs, overlayfs, mkfs.erofs).

    python3 oracle/smoke.py [VERSION]      # builds with oracle/build.sh if needed

Creates a lower layer through the snapshotter, a changed upper (delete, add, opaque dir),
compares with the erofs differ (tar, +gzip, +zstd) and the walking differ, applies the tar
blob to a fresh snapshot, and checks that every mount under the temp dir is gone afterwards.
Exit status 0 when all checks pass.
"""
import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TAR = "application/vnd.oci.image.layer.v1.tar"
failures = []


def check(cond, what):
    print(("  ok   " if cond else "  FAIL ") + what)
    if not cond:
        failures.append(what)


class Oracle:
    def __init__(self, binary, root, log):
        self.log = open(log, "wb")
        self.p = subprocess.Popen([binary, "serve", "--root", root], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self.log)
        self.n = 0

    def call(self, op, **fields):
        self.n += 1
        req = dict(op=op, id=self.n, **fields)
        self.p.stdin.write(json.dumps(req).encode() + b"\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"oracle exited during {op}")
        resp = json.loads(line)
        assert resp.get("id") == self.n, resp
        return resp

    def ok(self, op, **fields):
        resp = self.call(op, **fields)
        if not resp["ok"]:
            raise RuntimeError(f"{op} {fields}: {resp['error']}")
        return resp

    def close(self):
        resp = self.call("close")
        rc = self.p.wait(timeout=60)
        self.log.close()
        return resp, rc


def mounts_under(path):
    out = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True).stdout
    return [t for t in out.split() if t == path or t.startswith(path + "/")]


def listing(data):
    """tar tvf of the bytes, via the system tar."""
    return subprocess.run(["tar", "tvf", "-"], input=data, capture_output=True).stdout.decode()


def main():
    version = sys.argv[1] if len(sys.argv) > 1 else "default"
    binary = subprocess.run(["bash", os.path.join(HERE, "build.sh"), version], check=True,
                            stdout=subprocess.PIPE, text=True).stdout.split()[-1]
    tmp = tempfile.mkdtemp(prefix="layerconf-smoke-")
    root, mnt = os.path.join(tmp, "root"), os.path.join(tmp, "mnt")
    os.mkdir(mnt)
    o = Oracle(binary, root, os.path.join(tmp, "oracle.log"))
    try:
        v = o.ok("version")
        print(f"oracle: containerd {v['containerd']}, {v['go']}, {v['mkfs']}, adapter {v['adapter']}")

        # Layer L0, written through the mounted snapshot.
        print("prepare l0:", o.ok("prepare", key="l0", parent="")["mounts"])
        o.ok("mount", key="l0", target=mnt)
        for rel, data in [("a", b"hello\n"), ("b", b"bee\n"), ("d/x", b"x\n"), ("d/y", b"y\n"),
                          ("keep/file", b"keep\n")]:
            os.makedirs(os.path.dirname(os.path.join(mnt, rel)), exist_ok=True)
            with open(os.path.join(mnt, rel), "wb") as f:
                f.write(data)
        o.ok("unmount", target=mnt)
        o.ok("commit", name="L0", key="l0")
        l0dir = o.ok("snapshot_dir", key="L0")["dir"]
        check(os.path.exists(os.path.join(l0dir, "layer.erofs")), "commit wrote L0/layer.erofs")

        # Upper: delete a file (whiteout), add a file, replace a dir (opaque).
        up = o.ok("prepare", key="up", parent="L0")["mounts"]
        print("prepare up:", up)
        o.ok("mount", key="up", target=mnt)
        check(open(os.path.join(mnt, "a"), "rb").read() == b"hello\n", "lower content visible in overlay")
        os.unlink(os.path.join(mnt, "a"))
        with open(os.path.join(mnt, "c"), "wb") as f:
            f.write(b"sea\n")
        shutil.rmtree(os.path.join(mnt, "d"))
        os.mkdir(os.path.join(mnt, "d"))
        with open(os.path.join(mnt, "d", "new"), "wb") as f:
            f.write(b"new\n")
        o.ok("unmount", target=mnt)
        updir = o.ok("snapshot_dir", key="up")["dir"]
        st = os.lstat(os.path.join(updir, "fs", "a"))
        check(os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0 and (st.st_mode & 0o170000) == 0o020000,
              "overlay made a 0/0 whiteout for a")
        print("view lv:", o.ok("view", key="lv", parent="L0")["mounts"])

        # Compare with the erofs differ, three media types.
        blobs = {}
        for mt in (TAR, TAR + "+gzip", TAR + "+zstd"):
            r = o.ok("compare", differ="erofs", lower="lv", upper="up", media_type=mt,
                     source_date_epoch=None)
            d = r["descriptor"]
            print(f"compare erofs {mt}: {d['digest']} size {d['size']} labels {r['labels']}")
            data = open(r["blob"], "rb").read()
            check(len(data) == d["size"] and "sha256:" + hashlib.sha256(data).hexdigest() == d["digest"],
                  f"blob file matches descriptor ({mt})")
            blobs[mt] = (d, data, r["labels"])
        tar_desc, tar_bytes, tar_labels = blobs[TAR]
        print("tar tvf (erofs differ, uncompressed):")
        print(listing(tar_bytes))
        names = [m.name for m in tarfile.open(fileobj=io.BytesIO(tar_bytes))]
        check(".wh.a" in names and "c" in names and "d/.wh..wh..opq" in names and "d/new" in names,
              "tar has .wh.a, c, d/.wh..wh..opq, d/new")
        check(tar_labels == {}, "plain tar blob has no uncompressed label (B8)")
        gz_desc, gz_bytes, gz_labels = blobs[TAR + "+gzip"]
        check(gzip.decompress(gz_bytes) == tar_bytes, "gzip blob decompresses to the tar blob")
        check(gz_labels.get("containerd.io/uncompressed") == tar_desc["digest"], "gzip uncompressed label")
        check(gz_bytes[:10] == bytes.fromhex("1f8b08000000000000ff"), "gzip header as Go writes it")
        zst_labels = blobs[TAR + "+zstd"][2]
        check(zst_labels.get("containerd.io/uncompressed") == tar_desc["digest"], "zstd uncompressed label")
        if shutil.which("zstd"):
            dz = subprocess.run(["zstd", "-dc"], input=blobs[TAR + "+zstd"][1], capture_output=True).stdout
            check(dz == tar_bytes, "zstd blob decompresses to the tar blob")

        # SOURCE_DATE_EPOCH has no effect on the erofs differ (B7).
        r = o.ok("compare", differ="erofs", lower="lv", upper="up", media_type=TAR, source_date_epoch=0)
        check(r["descriptor"]["digest"] == tar_desc["digest"], "erofs differ ignores source_date_epoch")

        # Walking differ with the same mounts.
        r = o.call("compare", differ="walking", lower="lv", upper="up", media_type=TAR, source_date_epoch=None)
        if r["ok"]:
            print("compare walking:", r["descriptor"])
            print(listing(open(r["blob"], "rb").read()))
        else:
            print("compare walking: error:", r["error"])

        # Apply the tar (and gzip) blob onto fresh snapshots.
        for key, (desc, _, _) in (("ap", blobs[TAR]), ("apgz", blobs[TAR + "+gzip"])):
            o.ok("prepare", key=key, parent="")
            r = o.ok("apply", differ="erofs", descriptor=desc, key=key)
            print(f"apply {key}: {r['descriptor']} layer {r['layer']}")
            check(r["layer"] is not None and os.path.getsize(r["layer"]) > 0, f"apply {key} wrote layer.erofs")
            check(r["descriptor"]["digest"] == tar_desc["digest"], f"apply {key} returns the diffID")
        o.ok("commit", name="AP", key="ap")
        o.ok("view", key="apv", parent="AP")
        o.ok("mount", key="apv", target=mnt)
        got = sorted(os.path.relpath(os.path.join(dp, n), mnt)
                     for dp, ds, fs in os.walk(mnt) for n in ds + fs)
        print("applied layer contents:", got)
        st = os.lstat(os.path.join(mnt, "a"))
        check((st.st_mode & 0o170000) == 0o020000 and st.st_rdev == 0, "applied .wh.a is a 0/0 whiteout")
        o.ok("unmount", target=mnt)

        # Ingest an external file and apply it with the walking (fs) applier.
        ext = os.path.join(tmp, "ext.tar")
        with open(ext, "wb") as f:
            f.write(tar_bytes)
        r = o.ok("ingest", path=ext, media_type=TAR)
        check(r["descriptor"]["digest"] == tar_desc["digest"], "ingest digest")
        o.ok("prepare", key="wk", parent="")
        r = o.call("apply", differ="walking", descriptor=r["descriptor"], key="wk")
        print("apply walking:", r)

        # Go's archive/tar through the tar op.
        b64 = lambda s: base64.b64encode(s).decode()
        r = o.ok("tar", entries=[
            dict(name=b64(b"dir/"), typeflag="5", mode=0o755, mtime=1700000000, format="pax"),
            dict(name=b64(b"dir/f"), typeflag="0", mode=0o644, size=3, mtime=1700000000,
                 content=b64(b"abc"), pax={"SCHILY.xattr.user.x": b64(b"\x00\x01")}, format="pax"),
            dict(name=b64(b".wh.gone"), typeflag="0", mtime=0, atime=0, ctime=0),
        ])
        t = base64.b64decode(r["tar"])
        members = tarfile.open(fileobj=io.BytesIO(t)).getmembers()
        check([m.name for m in members] == ["dir", "dir/f", ".wh.gone"] and len(t) % 512 == 0,
              "tar op output parses")
        r = o.call("tar", entries=[dict(name=b64(b"x"), typeflag="3", devmajor=1 << 21, format="ustar")])
        check(not r["ok"], f"tar op reports WriteHeader errors ({r.get('error')})")

        # Errors are containerd's text; panics are recovered.
        r = o.call("compare", differ="erofs", lower="", upper_mounts=[], media_type=TAR)
        check(not r["ok"] and r["error"].startswith("panic:"), f"empty upper mounts: {r.get('error')}")
        r = o.call("compare", differ="erofs", lower="lv", upper="up", media_type="application/x-foo")
        check(not r["ok"], f"bad media type: {r.get('error')}")
        r = o.call("prepare", key="up", parent="L0")
        check(not r["ok"], f"duplicate key: {r.get('error')}")

        # Leave a mount behind on purpose: close must unmount it.
        o.ok("mount", key="lv", target=mnt)
        resp, rc = o.close()
        check(resp["ok"] and rc == 0, "close exits 0")
        check(not mounts_under(tmp), "close unmounted everything")

        # Reopen the same root; SIGTERM must unmount too.
        o = Oracle(binary, root, os.path.join(tmp, "oracle2.log"))
        o.ok("mount", key="up", target=mnt)
        check(os.path.exists(os.path.join(mnt, "d", "new")), "reopened root: upper mounts again")
        o.p.terminate()
        rc = o.p.wait(timeout=60)
        check(rc == 143 and not mounts_under(tmp), f"SIGTERM: exit {rc}, nothing left mounted")
    finally:
        if o.p.poll() is None:  # an exception above: SIGTERM must unmount everything too
            o.p.terminate()
            try:
                print("oracle exit after SIGTERM:", o.p.wait(timeout=30))
            except subprocess.TimeoutExpired:
                o.p.kill()
                o.p.wait()
        left = mounts_under(tmp)
        check(not left, f"oracle left no mounts under {tmp} {left}")
        for t in sorted(mounts_under(tmp), reverse=True):
            subprocess.run(["umount", "-R", t])
        still = mounts_under(tmp)
        check(not still, "findmnt shows nothing under the temp dir after cleanup")
        if not still:
            # containerd v2.1.0-v2.1.3 always set FS_IMMUTABLE_FL on layer blobs
            subprocess.run(["chattr", "-R", "-i", root], capture_output=True)
            shutil.rmtree(tmp)
        else:
            print("kept", tmp)
    print(f"{'FAILED: ' + str(len(failures)) if failures else 'all checks passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
