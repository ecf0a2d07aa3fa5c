"""Scenarios for `layerconf compare` and `layerconf apply`: built from paths on the command line,
written as an ordinary scenario file (the runner only runs files), with paths relative to it.
Pure: paths and flags in, YAML text out; only `kind_of` looks at the filesystem."""
from __future__ import annotations

import os
import re

import yaml


class OneShotError(ValueError):
    pass


def kind_of(path: str) -> str:
    """'oci' (an OCI image layout: its layers), 'dir' or 'tar' (any other file: a layer tar or
    compressed blob)."""
    from .scenario.ocilayout import is_layout
    if is_layout(path):
        return "oci"
    if os.path.isdir(path):
        return "dir"
    if os.path.isfile(path):
        return "tar"
    raise OneShotError(f"{path}: no such file or directory (give a directory, a layer tar/blob or "
                       "an OCI image layout)")


def _rel(path: str, folder: str | None) -> str:
    """Relative to the scenario file's folder; absolute when there is none to keep."""
    if folder is None:
        return os.path.abspath(path)
    return os.path.relpath(os.path.abspath(path), os.path.abspath(folder))


def slug(*paths: str) -> str:
    names = [re.sub(r"(\.(tar|tgz|gz|zst|zstd|blob))+$", "", os.path.basename(os.path.abspath(p)))
             for p in paths]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(names)).strip("_") or "layer"


def compare_scenario(lower: str, upper: str, lower_kind: str, upper_kind: str, folder: str, *,
                     media_types=(), source_date_epoch=None) -> dict:
    """LOWER (dir or tar: one lower layer; oci: the image's layers) as the lower; UPPER a dir =
    the merged tree wanted (synced into the merged view), a tar = a layer applied on top by
    containerd's applier."""
    if upper_kind == "oci":
        raise OneShotError(f"{upper}: UPPER is an OCI image layout; give the merged tree wanted (a "
                           "directory) or a layer tar/blob on top (e.g. one of its blobs/sha256/*)")
    lower_layer = {lower_kind: _rel(lower, folder)}
    op = ({"op": "sync", "from": _rel(upper, folder)} if upper_kind == "dir"
          else {"op": "apply", "tar": _rel(upper, folder)})
    data = {"description": f"Compare: {os.path.basename(os.path.abspath(upper))} over "
                           f"{os.path.basename(os.path.abspath(lower))} (layerconf compare)",
            "tags": ["compare", "one-shot"], "lowers": [lower_layer], "upper": [op]}
    compare = {}
    if media_types:
        compare["media_types"] = list(media_types)
    if source_date_epoch is not None:
        compare["source_date_epoch"] = int(source_date_epoch)
    if compare:
        data["compare"] = compare
    return data


def apply_scenario(blob: str, media_type: str, folder: str, mkfs_options=()) -> dict:
    case = {"media_type": media_type, "blob": {"file": _rel(blob, folder)}}
    if mkfs_options:
        case["mkfs_options"] = list(mkfs_options)
    return {"description": f"Apply: {os.path.basename(os.path.abspath(blob))} as {media_type} "
                           "(layerconf apply)",
            "tags": ["apply", "one-shot"], "apply": case}


def to_yaml(data: dict, command: str) -> str:
    head = f"# Made by: {command}\n"
    return head + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
