"""A local containerd checkout as the version under test: what identifies it and what it is based on.

A *source tree* is a directory whose go.mod declares ``module github.com/containerd/containerd/v2``.
The oracle is built against it with a ``replace`` directive (oracle/build.sh --tree). It is named
by a *key* ``vX.Y.Z+tree.<16 hex>``: the base version (which picks the build tags, the reference
profile and the scenarios' per-version expectations; semver build metadata after ``+`` is ignored
when versions are compared) and the first 16 hex digits of the tree's content hash.

Content hash: SHA-256 over the sorted list of ``path NUL sha256(file) LF`` for the tree's go.mod,
go.sum and every non-test ``.go`` file of the main module. Skipped, as the Go build skips them:
``_test.go`` files, directories named ``testdata`` or ``vendor`` or starting with ``.`` or ``_``,
and nested modules (a sub-directory with its own go.mod, e.g. ``api/``: the build takes those from
the module cache, not from the tree). Mtimes and file modes are not hashed.

Base version: ``version/version.go``'s ``Version = "X.Y.Z[-pre][+meta]"`` when it parses; otherwise,
in a git checkout, the nearest release tag (``git describe --tags --abbrev=0 --match 'v2.*'``).
version.go comes first because containerd's main branch bumps it to the release being prepared,
while release tags are cut on release branches and are often not reachable from main.

The key's record (path, hash, base, rule) lives beside the binary as
``.cache/oracle/<key>/source.json``, so a VM guest or a later run can name the tree by its key.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

MODULE = "github.com/containerd/containerd/v2"
REPO = Path(__file__).resolve().parent.parent
KEY_RE = re.compile(r"^(v\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)\+tree\.([0-9a-f]{16})$")
_MODULE_RE = re.compile(r"^\s*module\s+\"?([^\s\"]+)\"?\s*(?://.*)?$", re.M)
_VERSION_GO_RE = re.compile(r"^\s*Version\s*=\s*\"v?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)(?:\+[^\"]*)?\"",
                            re.M)
_TAG_RE = re.compile(r"^v\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")


class TreeError(Exception):
    """The path is not a usable containerd source tree; str() says why and what to do."""


@dataclass(frozen=True)
class Tree:
    path: str            # absolute
    sha256: str          # content hash (see module doc)
    files: int           # files hashed
    base: str            # vX.Y.Z[-pre]
    base_from: str       # "version/version.go" or "git tag vX.Y.Z"

    @property
    def key(self) -> str:
        return tree_key(self.base, self.sha256)


# -- pure -----------------------------------------------------------------------------------

def module_path(go_mod: str) -> str | None:
    m = _MODULE_RE.search(go_mod)
    return m.group(1) if m else None


def version_from_version_go(text: str) -> str | None:
    """'Version = "2.4.2+unknown"' -> 'v2.4.2'; None when there is no such literal."""
    m = _VERSION_GO_RE.search(text)
    return "v" + m.group(1) if m else None


def tree_key(base: str, sha256: str) -> str:
    return f"{base}+tree.{sha256[:16]}"


def is_key(text: str) -> bool:
    return bool(KEY_RE.match(text))


def hash_entries(entries) -> str:
    """entries: (relative posix path, file sha256 hex) pairs, any order -> content hash."""
    h = hashlib.sha256()
    for rel, digest in sorted(entries):
        h.update(rel.encode() + b"\0" + digest.encode() + b"\n")
    return h.hexdigest()


def hashed(rel: str) -> bool:
    """Does this file (relative path, '/'-separated) belong in the content hash?"""
    if rel in ("go.mod", "go.sum"):
        return True
    return rel.endswith(".go") and not rel.endswith("_test.go")


def skipped_dir(name: str) -> bool:
    return name in ("testdata", "vendor") or name.startswith((".", "_"))


# -- I/O ------------------------------------------------------------------------------------

def looks_like_tree(text: str) -> bool:
    """A --containerd value that names a directory (rather than a version or a commit)."""
    return os.path.isdir(text)


def content_hash(root: str) -> tuple[str, int]:
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        keep = []
        for d in dirnames:
            sub = os.path.join(dirpath, d)
            if skipped_dir(d) or os.path.exists(os.path.join(sub, "go.mod")):
                continue
            keep.append(d)
        dirnames[:] = keep
        for f in filenames:
            rel = f if rel_dir == "." else f"{rel_dir}/{f}".replace(os.sep, "/")
            if not hashed(rel) or (rel_dir != "." and f in ("go.mod", "go.sum")):
                continue
            with open(os.path.join(dirpath, f), "rb") as fh:
                entries.append((rel, hashlib.file_digest(fh, "sha256").hexdigest()))
    return hash_entries(entries), len(entries)


def nearest_tag(root: str) -> str | None:
    if not os.path.exists(os.path.join(root, ".git")):
        return None
    try:
        p = subprocess.run(["git", "-C", root, "describe", "--tags", "--abbrev=0", "--match", "v2.*"],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    tag = p.stdout.strip()
    return tag if p.returncode == 0 and _TAG_RE.match(tag) else None


def base_version(root: str) -> tuple[str, str]:
    vgo = os.path.join(root, "version", "version.go")
    try:
        v = version_from_version_go(Path(vgo).read_text(errors="replace"))
    except OSError:
        v = None
    if v:
        return v, "version/version.go"
    tag = nearest_tag(root)
    if tag:
        return tag, f"git tag {tag}"
    raise TreeError(f"cannot tell which containerd version the source tree {root} is based on: "
                    "version/version.go has no `Version = \"X.Y.Z…\"` and it is not a git checkout "
                    "with a reachable v2.* tag. The base version picks the oracle's build tags and "
                    "the reference profile; fix version/version.go or fetch the tags.")


def inspect(path: str) -> Tree:
    """Validate a source tree and compute its content hash and base version."""
    root = os.path.abspath(path)
    go_mod = os.path.join(root, "go.mod")
    try:
        text = Path(go_mod).read_text(errors="replace")
    except OSError:
        raise TreeError(f"{root} is not a containerd source tree: it has no go.mod (expected a "
                        f"checkout of {MODULE}, e.g. `git clone` of containerd)") from None
    mod = module_path(text)
    if mod != MODULE:
        raise TreeError(f"{go_mod} declares module {mod or '(none)'}, not {MODULE}: --containerd "
                        "takes a containerd v2 checkout (its top folder), a version or a commit")
    if not os.path.isfile(os.path.join(root, "go.sum")):
        raise TreeError(f"{root} has no go.sum; run `go mod tidy` in the tree first")
    sha, n = content_hash(root)
    base, rule = base_version(root)
    return Tree(path=root, sha256=sha, files=n, base=base, base_from=rule)


def record_path(key: str) -> Path:
    return REPO / ".cache" / "oracle" / key / "source.json"


# Trees registered by this process: the same content at two paths (two checkouts, parallel test
# workers) shares a key and a binary, but each process reports the path it was given.
_REGISTERED: dict[str, dict] = {}


def register(tree: Tree) -> str:
    """Remember the tree under its key (for the build and the reports); returns the key."""
    _REGISTERED[tree.key] = asdict(tree)
    p = record_path(tree.key)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(tree), indent=1) + "\n")
    os.replace(tmp, p)
    return tree.key


def lookup(key: str) -> dict | None:
    """The record of a tree key (path, sha256, files, base, base_from), or None."""
    if not is_key(key):
        return None
    if key in _REGISTERED:
        return dict(_REGISTERED[key])
    try:
        return json.loads(record_path(key).read_text())
    except (OSError, ValueError):
        return None


# -- git checkouts (bisect) -----------------------------------------------------------------

def _git(repo: str, *args: str, timeout: float = 120) -> str:
    try:
        p = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True,
                           timeout=timeout)
    except FileNotFoundError:
        raise TreeError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise TreeError(f"`git {' '.join(args)}` in {repo} took over {timeout:.0f} s") from None
    if p.returncode != 0:
        last = ((p.stderr or p.stdout).strip().splitlines() or ["(no output)"])[-1]
        raise TreeError(f"`git {' '.join(args)}` failed in {repo}: {last}")
    return p.stdout


def commits_between(repo: str, good: str, bad: str) -> list[str]:
    """[good, c1, ..., bad]: full hashes along bad's first-parent history (a merge is probed as
    one commit, as the pull request that it merged). good must be an ancestor of bad."""
    a = _git(repo, "rev-parse", "--verify", good + "^{commit}").strip()
    b = _git(repo, "rev-parse", "--verify", bad + "^{commit}").strip()
    try:
        _git(repo, "merge-base", "--is-ancestor", a, b)
    except TreeError:
        raise TreeError(f"{good} is not an ancestor of {bad} in {repo}: --between A B needs A "
                        "older than B on one line of history") from None
    between = _git(repo, "rev-list", "--first-parent", "--reverse", f"{a}..{b}").split()
    if not between or between[-1] != b:
        raise TreeError(f"{bad} is not reachable from {good} along first parents in {repo}")
    return [a] + between


def describe(repo: str, commit: str) -> str:
    """'abcdef123456 subject line' for reports."""
    try:
        return _git(repo, "log", "-1", "--format=%h %s", commit).strip()
    except TreeError:
        return commit[:12]


class Worktree:
    """A temporary `git worktree` of one commit (detached); removed on exit, Ctrl-C included."""

    def __init__(self, repo: str, commit: str, parent: str | None = None):
        import tempfile
        self.repo, self.commit = repo, commit
        self.base = tempfile.mkdtemp(prefix="layerconf-worktree-", dir=parent)
        self.path = os.path.join(self.base, "containerd")

    def __enter__(self) -> str:
        try:
            _git(self.repo, "worktree", "add", "--detach", "--force", self.path, self.commit,
                 timeout=600)
        except BaseException:
            self.__exit__()
            raise
        return self.path

    def __exit__(self, *exc):
        import shutil
        try:
            if os.path.exists(self.path):
                _git(self.repo, "worktree", "remove", "--force", self.path, timeout=300)
        except TreeError:
            pass
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            try:
                _git(self.repo, "worktree", "prune", timeout=60)
            except TreeError:
                pass


def main(argv=None) -> int:
    import sys
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m harness.srctree PATH   (prints key, content hash, base version)",
              file=sys.stderr)
        return 2
    try:
        t = inspect(args[0])
    except TreeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"key {t.key}\npath {t.path}\nsha256 {t.sha256} ({t.files} files)\n"
          f"base {t.base} (from {t.base_from})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
