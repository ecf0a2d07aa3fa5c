"""Media types on the Apply side of containerd's EROFS differ. Pure: no I/O.

What is modelled (docs/apply.md has the prose, the spec §5.1 the history):

* ``diff_compression(mt)`` — containerd's ``images.DiffCompression`` (identical in every tag from
  v2.1.0 to v2.4.x): ``""``, ``"gzip"``, ``"zstd"``, ``"unknown"``, or ``MediaTypeError``.
* three native-EROFS predicates, one per behaviour era, each selected by a profile switch:
  ``native-mt-seed-inverted`` (v2.1.0), ``native-mt-erofs-suffix`` (v2.1.1–v2.2.x) and
  ``native-mt-layer-prefix`` (v2.3.0+), plus ``native-zstd`` for the ``+zstd`` suffix.
* ``classify(mt, profile)`` — which way Apply goes: native copy, native zstd, tar conversion
  (with the DiffCompression that picks the stream processor), or the error text.

The code reads behaviour from ``profile.has(name)`` only; it never looks at version strings.
``APPLY_SWITCHES`` is the data table (name, description, reference, versions) that the profiles
module merges into its quirk registry; ``switches_for_version`` evaluates that table for tests
and tools that start from a version number.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Protocol

# -- media-type constants (containerd core/images/mediatypes.go, OCI image-spec) ---------------
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
EROFS_LAYER = "application/vnd.erofs.layer.v1"          # images.MediaTypeErofsLayer (v2.3.0+)
EROFS_LAYER_PREFIX = "application/vnd.erofs.layer"      # erofsutils.IsErofsMediaType (v2.3.0+)

# errdefs.ErrNotImplemented.Error()
NOT_IMPLEMENTED = "not implemented"


class MediaTypeError(ValueError):
    """DiffCompression's error; str() is containerd's text verbatim."""

    def __init__(self, media_type: str):
        self.media_type = media_type
        super().__init__(f"unrecognised mediatype {media_type}: {NOT_IMPLEMENTED}")


class HasSwitches(Protocol):
    def has(self, name: str) -> bool: ...


# -- the switches this module and apply.py read ------------------------------------------------
@dataclass(frozen=True)
class Switch:
    """One Apply-side behaviour. ``versions`` are half-open ranges ``(first, until)`` of
    containerd tags; ``until`` None means "and every later tag". Linux behaviour only."""

    name: str
    description: str
    reference: str
    versions: tuple[tuple[str, str | None], ...]


APPLY_SWITCHES: tuple[Switch, ...] = (
    Switch("native-mt-seed-inverted",
           "native EROFS media type = '<x>.erofs+' only: split at the first '+', require a '+' "
           "with an empty suffix, base ends with '.erofs' (so plain '.erofs' is rejected) (B1)",
           "containerd#11733 (seed 2f9734fa5); fixed by #11851/#11855", (("2.1.0", "2.1.1"),)),
    Switch("native-mt-erofs-suffix",
           "native EROFS media type = no '+' anywhere and HasSuffix(mt, '.erofs')",
           "containerd#11851 / #11855 (2168cb92c)", (("2.1.1", "2.3.0"),)),
    Switch("native-mt-layer-prefix",
           "native EROFS media type = HasPrefix(mt, 'application/vnd.erofs.layer'); no '+' -> "
           "copy, a '+' suffix -> see native-zstd (the '.erofs' suffix rule is gone, B15)",
           "containerd#12567 (36f8999b9), #12555 (b320d3c85)", (("2.3.0", None),)),
    Switch("native-zstd",
           "with native-mt-layer-prefix: suffix 'zstd' -> decompress (stream processor "
           "'…tar+zstd', magic-detected) and return {base type, decompressed size/digest}; any "
           "other suffix -> 'unsupported erofs layer suffix: <ext>'",
           "containerd#13185 (b9445fb9e)", (("2.3.0", None),)),
    Switch("error-text-currently-unsupported",
           "a non-native type that DiffCompression rejects fails with 'currently unsupported "
           "media type: <mt>' (without the switch: 'unsupported media type: <mt>')",
           "plugins/diff/erofs Apply, v2.1.0-v2.2.x", (("2.1.0", "2.3.0"),)),
    Switch("error-text-convert-tar-to-erofs",
           "a failed tar conversion is wrapped as 'failed to convert tar to erofs: …' (without "
           "the switch: 'failed to convert erofs: …')",
           "containerd#11919 (b641933cf)", (("2.2.0", None),)),
    Switch("mkfs-uuid",
           "tar conversion passes '-U <uuid5(NameSpaceURL, \"erofs:blobs/\"+desc.Digest)>' "
           "after the mkfs options",
           "containerd#12046 (a0ed14fd4) / #12058 (583133e71)", (("2.1.4", None),)),
    Switch("mkfs-b4096",
           "'-b4096' is prepended to mkfs_options unless an option starts with '-b' "
           "(Linux; darwin had it from v2.2.1)",
           "containerd#13624 (773d3517d) / #13632 (01b0f03f6); darwin: #12533/#12544",
           (("2.3.3", None),)),
    Switch("tar-index-mode",
           "enable_tar_index is honoured: 'mkfs.erofs --tar=i --aufs --quiet <opts> [-U] "
           "<layer>' then the tar is appended; no -Enoinline_data",
           "containerd#11919 (b641933cf)", (("2.2.0", None),)),
    Switch("tar-index-uuid",
           "tar-index mode also passes '-U <uuid>'", "containerd#12782 (52a92e83f)",
           (("2.3.0", None),)),
    Switch("gzip-reject-reserved-flags",
           "the gzip decoder of DecompressStream (klauspost) rejects a header with reserved FLG "
           "bits set: 'failed to get stream processor for <mt>: gzip: invalid header'; Go's "
           "stdlib decoder (before v2.4.0) ignores those bits",
           "containerd d8f13bf4c (gzip decode via klauspost)", (("2.4.0-beta.0", None),)),
    Switch("inflate-klauspost",
           "gzip members are inflated by klauspost/compress/flate: a non-final dynamic block "
           "reads 10 bits ahead for each literal/length symbol, and a stored block after it "
           "takes the whole bytes read ahead as its LEN/NLEN and counts them again, so 'flate: "
           "corrupt input before offset N' is larger than with Go's stdlib decoder (before "
           "v2.4.0), and a cut stream hands on less before 'unexpected EOF'",
           "containerd d8f13bf4c (gzip decode via klauspost); klauspost/compress v1.20.0 "
           "flate/inflate.go readHuffman, dataBlock", (("2.4.0-beta.0", None),)),
    Switch("apply-refuses-readonly-mounts",
           "Apply fails first with 'cannot apply to a read-only snapshot, its content is already "
           "populated: failed precondition' when the last mount is read-only (not exercised by "
           "the reference, which has no mounts)",
           "plugins/diff/erofs/differ.go v2.4.0+", (("2.4.0", None),)),
)

SWITCH_NAMES = tuple(s.name for s in APPLY_SWITCHES)

_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?$")


def version_key(version: str) -> tuple:
    """Sort key for a containerd tag ('v2.1.4', '2.4.0-beta.0'); a pre-release sorts first."""
    m = _VERSION_RE.match(version.strip())
    if not m:
        raise ValueError(f"not a containerd version: {version!r}")
    major, minor, patch, pre = m.groups()
    return (int(major), int(minor), int(patch), (0, pre) if pre else (1, ""))


def switch_applies(switch: Switch, version: str) -> bool:
    k = version_key(version)
    return any(version_key(lo) <= k and (hi is None or k < version_key(hi))
               for lo, hi in switch.versions)


def switches_for_version(version: str) -> frozenset[str]:
    """The Apply switches in force for a containerd tag (data lookup, for tests and tools)."""
    return frozenset(s.name for s in APPLY_SWITCHES if switch_applies(s, version))


class SwitchSet:
    """The smallest profile: a set of switch names with ``has``. The real profiles module
    (harness/reference/profiles.py) offers the same ``has``."""

    def __init__(self, names=()):
        self.names = frozenset(names)
        unknown = self.names - set(SWITCH_NAMES)
        if unknown:
            raise ValueError(f"unknown Apply switch(es): {', '.join(sorted(unknown))}")

    @classmethod
    def for_version(cls, version: str) -> "SwitchSet":
        return cls(switches_for_version(version))

    def has(self, name: str) -> bool:
        return name in self.names

    def __repr__(self):
        return f"SwitchSet({sorted(self.names)})"


# Representative switch sets of the three media-type eras used by the Apply scenario tables
# (scenarios/apply/*.yaml: keys 'seed', 'erofs-suffix', 'layer-prefix').
ERAS: dict[str, frozenset[str]] = {
    "seed": switches_for_version("2.1.0"),
    "erofs-suffix": switches_for_version("2.2.0"),
    "layer-prefix": switches_for_version("2.3.0"),
}


def era_of(profile: HasSwitches) -> str | None:
    """Which media-type era a profile is in (None: it has no native-EROFS predicate)."""
    for era, switch in (("seed", "native-mt-seed-inverted"),
                        ("erofs-suffix", "native-mt-erofs-suffix"),
                        ("layer-prefix", "native-mt-layer-prefix")):
        if profile.has(switch):
            return era
    return None


# -- DiffCompression ---------------------------------------------------------------------------
def parse_media_type(mt: str) -> tuple[str, list[str]]:
    """images.parseMediaTypes: base before the first '+', then the rest split on '+' (at most 50
    parts), sorted byte-wise."""
    if mt == "":
        return "", []
    base, plus, ext = mt.partition("+")
    if not plus:
        return base, []
    suffixes = ext.split("+", 49)
    # Go sorts strings by bytes; UTF-8 byte order equals code-point order, but surrogate-escaped
    # bytes would not, so sort the encoded forms.
    suffixes.sort(key=lambda s: s.encode("utf-8", "surrogateescape"))
    return base, suffixes


def diff_compression(mt: str) -> str:
    """images.DiffCompression: '' (no decompression), 'gzip', 'zstd', 'unknown' (auto-detect),
    or MediaTypeError. Every non-empty answer makes the stream processor auto-detect by magic."""
    base, ext = parse_media_type(mt)
    if base in (DOCKER_LAYER, DOCKER_LAYER_FOREIGN):
        return "" if ext else "unknown"
    if base in (DOCKER_LAYER_GZIP, DOCKER_LAYER_FOREIGN_GZIP):
        return "" if ext else "gzip"
    if base == DOCKER_LAYER_ZSTD:
        return "" if ext else "zstd"
    if base in (OCI_LAYER, OCI_LAYER_NONDIST):
        if ext and ext[-1] in ("gzip", "zstd"):
            return ext[-1]
        return ""
    raise MediaTypeError(mt)


# -- native EROFS predicates, one per era -------------------------------------------------------
def is_native_seed(mt: str) -> bool:
    """v2.1.0 isErofsMediaType: only '<x>.erofs+' (a '+' with nothing after it)."""
    base, plus, ext = mt.partition("+")
    if not plus or ext != "":
        return False
    return base.endswith(".erofs")


def is_native_erofs_suffix(mt: str) -> bool:
    """v2.1.1–v2.2.x isErofsMediaType: no '+' and the type ends with '.erofs'."""
    return "+" not in mt and mt.endswith(".erofs")


def is_native_layer_prefix(mt: str) -> bool:
    """v2.3.0+ erofsutils.IsErofsMediaType: prefix 'application/vnd.erofs.layer'."""
    return mt.startswith(EROFS_LAYER_PREFIX)


NATIVE_PREDICATES: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("native-mt-seed-inverted", is_native_seed),
    ("native-mt-erofs-suffix", is_native_erofs_suffix),
    ("native-mt-layer-prefix", is_native_layer_prefix),
)


def native_predicate(profile: HasSwitches) -> Callable[[str], bool] | None:
    chosen = [(n, f) for n, f in NATIVE_PREDICATES if profile.has(n)]
    if len(chosen) > 1:
        raise ValueError("a profile must have at most one native media-type switch, not "
                         + ", ".join(n for n, _ in chosen))
    return chosen[0][1] if chosen else None


def is_native(mt: str, profile: HasSwitches) -> bool:
    pred = native_predicate(profile)
    return bool(pred and pred(mt))


# -- classification ----------------------------------------------------------------------------
NATIVE_COPY = "native-copy"
NATIVE_ZSTD = "native-zstd"
TAR = "tar"
ERROR = "error"


@dataclass(frozen=True)
class ApplyPath:
    """Which way Apply goes for a media type under a profile.

    kind          native-copy | native-zstd | tar | error
    compression   DiffCompression of the type the stream processor sees ('' = raw pass-through;
                  'gzip'/'zstd'/'unknown' = DecompressStream, which detects by magic); None for
                  native-copy and errors
    base          native: the media type before the first '+' (returned by native-zstd)
    error         containerd's error text for kind == 'error'
    """

    media_type: str
    kind: str
    compression: str | None = None
    base: str | None = None
    error: str | None = None

    @property
    def decompress(self) -> bool:
        """True when the blob goes through DecompressStream (magic detection)."""
        return bool(self.compression)

    @property
    def outcome(self) -> str:
        """The compact form used by scenario tables: 'native-copy', 'native-zstd', 'tar'
        (pass-through), 'tar/gzip', 'tar/zstd', 'tar/unknown', or 'error: <text>'."""
        if self.kind == ERROR:
            return f"error: {self.error}"
        if self.kind == TAR and self.compression:
            return f"tar/{self.compression}"
        return self.kind


def unsupported_media_type_error(mt: str, profile: HasSwitches) -> str:
    if profile.has("error-text-currently-unsupported"):
        return f"currently unsupported media type: {mt}"
    return f"unsupported media type: {mt}"


def classify(mt: str, profile: HasSwitches) -> ApplyPath:
    """The media-type step of Apply, exactly as the profile's era does it."""
    if is_native(mt, profile):
        base, plus, ext = mt.partition("+")
        if not plus:
            return ApplyPath(mt, NATIVE_COPY, base=base)
        if profile.has("native-mt-layer-prefix"):
            # v2.3.0+: only '+zstd' is accepted; it becomes the pseudo type '<oci tar>+zstd'.
            if ext == "zstd" and profile.has("native-zstd"):
                return ApplyPath(mt, NATIVE_ZSTD, compression=diff_compression(OCI_LAYER_ZSTD),
                                 base=base)
            return ApplyPath(mt, ERROR, error=f"unsupported erofs layer suffix: {ext}")
        # The seed's '<x>.erofs+' (empty suffix) is copied as-is.
        return ApplyPath(mt, NATIVE_COPY, base=base)
    try:
        compression = diff_compression(mt)
    except MediaTypeError:
        return ApplyPath(mt, ERROR, error=unsupported_media_type_error(mt, profile))
    return ApplyPath(mt, TAR, compression=compression)
