"""Lower layers from an OCI image layout (image-spec image-layout.md): `{oci: PATH, ref?, platform?}`.

The layout's index.json names manifests (or image indexes, which name manifests per platform);
the chosen manifest's `layers` are the image's layer blobs, bottom first, each at
`blobs/<algorithm>/<hex>`. `select_manifest` is pure (JSON in, descriptor out); `layers` reads
the files. Errors are one sentence naming what is missing and what to give instead.
"""
from __future__ import annotations

import json
import os

REF_ANNOTATIONS = ("org.opencontainers.image.ref.name", "io.containerd.image.name")
INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}
MANIFEST_TYPES = {"application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json"}
DEFAULT_PLATFORM = "linux/amd64"


class OCILayoutError(ValueError):
    pass


def is_layout(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "oci-layout"))


def _platform_of(desc: dict) -> str:
    p = desc.get("platform") or {}
    parts = [p.get("os", ""), p.get("architecture", "")]
    if p.get("variant"):
        parts.append(p["variant"])
    return "/".join(parts)


def _refs(desc: dict) -> set[str]:
    ann = desc.get("annotations") or {}
    return {ann[k] for k in REF_ANNOTATIONS if k in ann}


def select_manifest(index: dict, ref: str | None, platform: str | None, read_blob) -> dict:
    """The manifest descriptor for `ref` (a ref-name annotation; may be omitted when the index
    names one image) and `platform` (os/arch[/variant]; linux/amd64 by default, used only where
    an image index lists several). read_blob(descriptor) -> the parsed JSON of a nested index."""
    descs = list(index.get("manifests") or [])
    if ref is not None:
        descs = [d for d in descs if ref in _refs(d)]
        if not descs:
            known = sorted(r for d in index.get("manifests") or [] for r in _refs(d))
            raise OCILayoutError(f"no image named {ref!r} in index.json (names: "
                                 f"{', '.join(known) or 'none'})")
    if len(descs) > 1 and len({d.get("digest") for d in descs}) > 1:
        names = sorted(r for d in descs for r in _refs(d)) or [d.get("digest", "?") for d in descs]
        if all(d.get("platform") for d in descs):
            descs = [_by_platform(descs, platform)]
        else:
            raise OCILayoutError(f"index.json names {len(descs)} images; choose one with ref: "
                                 f"({', '.join(names)})")
    if not descs:
        raise OCILayoutError("index.json names no image")
    desc = descs[0]
    for _ in range(8):                         # nested indexes: a few levels, never a cycle
        mt = desc.get("mediaType", "")
        if mt in MANIFEST_TYPES:
            return desc
        if mt not in INDEX_TYPES:
            raise OCILayoutError(f"{desc.get('digest')}: media type {mt!r} is neither an image "
                                 "manifest nor an image index")
        desc = _by_platform(read_blob(desc).get("manifests") or [], platform)
    raise OCILayoutError("image indexes nested more than 8 deep")


def _by_platform(descs: list[dict], platform: str | None) -> dict:
    want = platform or DEFAULT_PLATFORM
    for d in descs:
        have = _platform_of(d)
        if have == want or (want.count("/") == 1 and have.rsplit("/", 1)[0] == want
                            and have.count("/") == 2):
            return d
    known = sorted({_platform_of(d) for d in descs})
    raise OCILayoutError(f"no manifest for platform {want} (platforms: {', '.join(known)}); "
                         "choose one with platform:")


def blob_path(root: str, digest: str) -> str:
    alg, sep, hexpart = str(digest).partition(":")
    if not sep or not alg.isalnum() or not hexpart.isalnum():
        raise OCILayoutError(f"bad digest {digest!r}")
    return os.path.join(root, "blobs", alg, hexpart)


def layers(root: str, ref: str | None = None, platform: str | None = None) -> list[tuple[str, str]]:
    """(blob path, media type) of each layer of the chosen image, bottom layer first."""
    def read_json(path: str) -> dict:
        try:
            with open(path, "rb") as f:
                return json.load(f)
        except FileNotFoundError:
            raise OCILayoutError(f"{path} is missing") from None
        except (OSError, ValueError) as e:
            raise OCILayoutError(f"{path} is not readable JSON: {e}") from None

    if not is_layout(root):
        raise OCILayoutError(f"{root} is not an OCI image layout (no oci-layout file)")
    index = read_json(os.path.join(root, "index.json"))
    manifest_desc = select_manifest(index, ref, platform,
                                    lambda d: read_json(blob_path(root, d.get("digest", ""))))
    manifest = read_json(blob_path(root, manifest_desc.get("digest", "")))
    out = []
    for i, layer in enumerate(manifest.get("layers") or []):
        path = blob_path(root, layer.get("digest", ""))
        if not os.path.isfile(path):
            raise OCILayoutError(f"layer {i} ({layer.get('digest')}) is not in the layout: "
                                 f"{path} is missing")
        out.append((path, layer.get("mediaType") or ""))
    if not out:
        raise OCILayoutError(f"the image {manifest_desc.get('digest')} has no layers")
    return out
