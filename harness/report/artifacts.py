"""Keep what a person needs to look at a scenario after the run, in one folder:

    <outdir>/<scenario-name with '/' as '__'>/
        scenario.yaml                     copy of the scenario file
        <producer>__<mt>.tar              each outcome's decompressed tar
        <producer>__<mt>.tar.gz|.tar.zst  the blob as stored, when compressed
        <producer>__<mt>.error.txt        the producer's error, when it failed
        entries-<producer>.txt            `tar tv`-style listing (one per producer; another
                                          per media type only when its tar differs)
        explanation.txt                   every check, then the full (unclipped) tar diffs
        result.json                       the result (blobs as sha256/size)
        repro.sh                          <python> -m harness.cli repro <scenario-path>
        <name>                            extra files of the run (result.files): oracle logs,
                                          Apply images, tree listings of an Apply case

keep() never raises on bad data: a failure to write one artifact is noted in errors.txt.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import traceback
from pathlib import Path

from ..result import ScenarioResult
from ..spool import bytes_equal
from . import short_media_type
from .explain import explain_tar, list_entries


def folder_name(scenario: str) -> str:
    name = scenario.strip("/").replace("/", "__")
    return re.sub(r"[^A-Za-z0-9._@+=,-]", "_", name) or "scenario"


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@+=,-]", "_", s)


def result_dict(r: ScenarioResult) -> dict:
    """JSON-safe: bytes (or mmaps of large layers) become sha256 + size."""
    blobs = [(o.blob, o.tar) for o in r.outcomes]
    light = dataclasses.replace(r, outcomes=[dataclasses.replace(o, blob=None, tar=None)
                                              for o in r.outcomes], files={})
    d = dataclasses.asdict(light)
    d["files"] = sorted(r.files)
    d["status"] = r.status.value
    for c in d["checks"]:
        c["status"] = getattr(c["status"], "value", c["status"])
    for o, (blob, tar) in zip(d["outcomes"], blobs):
        for key, b in (("blob", blob), ("tar", tar)):
            o.pop(key)
            o[key + "_sha256"] = None if b is None else hashlib.sha256(b).hexdigest()
            o[key + "_size"] = None if b is None else len(b)
    return d


def _blob_ext(mt: str) -> str:
    if mt.endswith("+gzip"):
        return ".tar.gz"
    if mt.endswith("+zstd"):
        return ".tar.zst"
    return ".blob"


def explanation_text(result: ScenarioResult) -> str:
    out = [f"scenario: {result.scenario}", f"file: {result.path}",
           f"status: {result.status.value}"]
    if result.message:
        out += ["", result.message]
    for c in result.checks:
        out += ["", f"== [{c.status.value}] {c.name}"]
        if c.quirks:
            out.append("quirks: " + ", ".join(c.quirks))
        if c.explanation:
            out.append(c.explanation)
    # the check texts are one screen; here the whole difference for every Go/reference pair
    by_mt: dict[str, list] = {}
    for o in result.outcomes:
        by_mt.setdefault(o.media_type, []).append(o)
    full = []
    for mt, outs in by_mt.items():
        gos = [o for o in outs if o.producer.startswith("go-") and o.tar is not None]
        refs = [o for o in outs if not o.producer.startswith("go-") and o.tar is not None]
        for g in gos:
            for r in refs:
                if not bytes_equal(g.tar, r.tar):
                    full += ["", f"== full tar difference ({short_media_type(mt)}): "
                                 f"{g.producer} vs {r.producer}",
                             explain_tar(g.tar, r.tar, (g.producer, r.producer), max_lines=None)]
    if full:
        out += ["", "-" * 72] + full
    if result.environment:
        out += ["", "environment: " + json.dumps(result.environment, sort_keys=True, default=str)]
    return "\n".join(out) + "\n"


REPO = Path(__file__).resolve().parents[2]


def repro_script(scenario_path: str) -> str:
    """A script that reruns the scenario with the interpreter and checkout that ran it (no
    reliance on `layerconf` being on PATH); extra arguments go to `layerconf repro`."""
    path = shlex.quote(os.path.abspath(str(scenario_path)))
    return ("#!/bin/sh\n# Re-run this scenario with its artifacts kept (layerconf repro).\n"
            f"PYTHONPATH={shlex.quote(str(REPO))}${{PYTHONPATH:+:$PYTHONPATH}} exec "
            f"{shlex.quote(sys.executable)} -m harness.cli repro {path} \"$@\"\n")


def keep(result: ScenarioResult, scenario_path, outdir) -> str:
    """Write the scenario's artifacts; returns the folder."""
    folder = os.path.join(str(outdir), folder_name(result.scenario))
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)
    errors: list[str] = []

    def put(name: str, data, mode: int | None = None) -> None:
        try:
            p = os.path.join(folder, name)
            with open(p, "wb") as f:
                # str, or bytes-like: bytes, and mmaps of spooled blobs and tars
                f.write(data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data)
            if mode is not None:
                os.chmod(p, mode)
        except Exception:  # keep going: one bad artifact must not lose the others
            errors.append(f"{name}: {traceback.format_exc(limit=2)}")

    try:
        src = str(scenario_path)
        ext = os.path.splitext(src)[1] or ".yaml"
        shutil.copyfile(src, os.path.join(folder, "scenario" + ext))
    except Exception as e:
        errors.append(f"scenario file {scenario_path}: {e}")

    listed: dict[str, bytes] = {}
    for o in result.outcomes:
        base = f"{_safe(o.producer)}__{_safe(short_media_type(o.media_type))}"
        if o.tar is not None:
            put(base + ".tar", o.tar)
        if o.blob is not None and not bytes_equal(o.blob, o.tar):
            put(base + _blob_ext(o.media_type), o.blob)
        if o.error:
            put(base + ".error.txt", o.error + "\n")
        if o.tar is None:
            continue
        prod = _safe(o.producer)
        if prod not in listed:
            listed[prod] = o.tar
            name = f"entries-{prod}.txt"
        elif not bytes_equal(listed[prod], o.tar):
            name = f"entries-{prod}__{_safe(short_media_type(o.media_type))}.txt"
        else:
            continue
        try:
            put(name, "\n".join(list_entries(o.tar)) + "\n")
        except Exception:
            errors.append(f"{name}: {traceback.format_exc(limit=2)}")

    for name, data in result.files.items():
        put(_safe(name), data)

    try:
        put("explanation.txt", explanation_text(result))
    except Exception:
        errors.append(f"explanation.txt: {traceback.format_exc(limit=3)}")
    snapshot = dataclasses.replace(result, artifacts=folder)
    try:
        put("result.json", json.dumps(result_dict(snapshot), indent=2, sort_keys=True,
                                      default=str) + "\n")
    except Exception:
        errors.append(f"result.json: {traceback.format_exc(limit=3)}")
    put("repro.sh", repro_script(scenario_path), 0o755)
    if errors:
        put("errors.txt", "\n".join(errors) + "\n")
    return folder
