"""Apply cases: the same blob applied by containerd's erofs differ (oracle) and by the reference,
compared on the returned descriptor, the error text and the layer.erofs bytes."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from . import mkfscheck
from .checks import meaning, writer
from .oracle import ContainerdError, OracleError, OracleTimeout
from .reference import apply as ref_apply
from .reference import erofs_superblock, mediatypes, profiles
from .report.worddiff import word_diff
from .result import Check, Outcome, Status
from .scenario.model import ApplyCase
from .verdict import descriptor_diff

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LAYER_PATH = re.compile(r"\S*/layer\.erofs")


def go_apply(oracle, blob_path: str, descriptor: dict):
    """(descriptor, layer.erofs bytes, error, ingested descriptor) from containerd's erofs differ
    Apply. OracleTimeout propagates (the oracle is dead then); no cleanup error hides it."""
    key = f"apply-{uuid.uuid4().hex[:10]}"
    try:
        ingested = oracle.ingest(blob_path, descriptor["mediaType"])
        desc = dict(ingested, **{k: v for k, v in descriptor.items() if k == "annotations"})
        oracle.prepare(key, "")
        try:
            resp = oracle.apply("erofs", desc, key)
        except ContainerdError as e:
            return None, None, str(e), desc
        image = Path(resp["layer"]).read_bytes() if resp.get("layer") else None
        return resp["descriptor"], image, None, desc
    finally:
        with contextlib.suppress(ContainerdError, OracleError):
            oracle.remove(key)


def reference_apply(blob: bytes, descriptor: dict, profile, case: ApplyCase,
                    timeout: float = ref_apply.DEFAULT_TIMEOUT):
    layer_dir = tempfile.mkdtemp(prefix="ref-apply-")
    try:
        out = ref_apply.apply(blob, descriptor, layer_dir, profile, case.mkfs_options,
                              tar_index=case.tar_index, timeout=timeout)
        image = None
        if out.layer_path and os.path.exists(out.layer_path) and out.error is None:
            image = Path(out.layer_path).read_bytes()
        return out.descriptor, image, out.error, out
    finally:
        shutil.rmtree(layer_dir, ignore_errors=True)


def cross_decode(session, outcomes) -> list[Check]:
    """containerd's Apply must accept the reference's compressed Compare blobs, and give back
    the reference's uncompressed digest as the diffID (the image itself is not looked at, so
    the session's default oracle serves)."""
    oracle = session.oracle()
    checks = []
    for o in outcomes:
        if not o.producer.startswith("ref@containerd") or o.error or o.blob is None \
                or not o.media_type.endswith(("+gzip", "+zstd")):
            continue
        path = os.path.join(session.base, f"refblob-{uuid.uuid4().hex[:8]}")
        Path(path).write_bytes(o.blob)
        try:
            desc, _, err, _ = go_apply(oracle, path, _descriptor(bytes(o.blob), o.media_type, ()))
        finally:
            os.unlink(path)
        want = o.labels.get("containerd.io/uncompressed")
        name = f"cross-decode {o.media_type}: go-erofs Apply of {o.producer}'s blob"
        if err:
            checks.append(Check(name, Status.FAIL, f"containerd refused the reference's blob: {err}"))
        elif desc.get("digest") != want:
            checks.append(Check(name, Status.FAIL, f"containerd decoded diffID {desc.get('digest')}, "
                                f"the reference's tar is {want}"))
        else:
            checks.append(Check(name, Status.PASS))
    return checks


def _descriptor(blob: bytes, media_type: str, annotations) -> dict:
    d = {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
         "size": len(blob)}
    if annotations:
        d["annotations"] = dict(annotations)
    return d


def compare_apply(name, case: ApplyCase, profile, go, ref, explain_images) -> Check:
    (gd, gimg, gerr, _), (rd, rimg, rerr, out) = go, ref
    problems = []
    era = mediatypes.era_of(profile)
    expected = dict(case.expect).get(era) or dict(case.expect).get("all")
    if expected and out.path is not None and out.path.outcome != expected:
        problems.append(f"route: the scenario expects {expected!r} in era {era}, the reference "
                        f"takes {out.path.outcome!r}")
    # The tar-index error quotes mkfs's argv, layer path included: each differ has its own.
    gerr, rerr = (LAYER_PATH.sub("<snapshot>/layer.erofs", e) if e else e for e in (gerr, rerr))
    if "error" in case.check and (gerr or rerr) and gerr != rerr:
        problems.append("error text differs:\n" + word_diff(gerr or "(none)", rerr or "(none)",
                                                             ("go-erofs", "ref")))
    if "descriptor" in case.check and not (gerr or rerr) and gd != rd:
        problems.append(descriptor_diff(gd, rd, ("go-erofs", "ref")))
    quirks = []
    if not problems and out.path is not None:
        # The route the intended behaviour takes; a difference must be a named quirk to pass.
        spec_route = mediatypes.classify(out.path.media_type, profiles.SPEC).outcome
        if spec_route != out.path.outcome:
            quirks = sorted(q for q in profile.quirks - profiles.SPEC.quirks
                            if profiles.QUIRKS_BY_NAME[q].scope == "apply"
                            and profiles.QUIRKS_BY_NAME[q].kind == "quirk"
                            and mediatypes.classify(out.path.media_type, profile.without(q)).outcome
                            != out.path.outcome)
    masked = ()
    if "image" in case.check and gimg is not None and rimg is not None:
        # Fields mkfs fills from the clock or at random unless told; everything else must match.
        uuid_given = profile.has("tar-index-uuid" if case.tar_index else "mkfs-uuid")
        masked = erofs_superblock.varying_fields(case.mkfs_options, uuid_given)
        if erofs_superblock.masked(gimg, masked) != erofs_superblock.masked(rimg, masked):
            note = ("\n(compared with these superblock fields masked:\n"
                    + erofs_superblock.describe(masked) + ")") if masked else ""
            problems.append("layer.erofs differs:\n" + explain_images(gimg, rimg) + note)
    elif "image" in case.check and (gimg is None) != (rimg is None) and not (gerr or rerr):
        problems.append(f"layer.erofs written by {'go-erofs' if gimg is not None else 'ref'} only")
    if problems:
        return Check(name, Status.FAIL, "\n".join(problems))
    if quirks:
        lines = [f"{q}: {profiles.QUIRKS_BY_NAME[q].description} ({profiles.QUIRKS_BY_NAME[q].reference})"
                 for q in quirks]
        return Check(name, Status.XFAIL, "known divergence from the spec:\n" + "\n".join(lines), quirks)
    if masked:
        return Check(name, Status.PASS, "layer.erofs identical outside the masked superblock fields:\n"
                     + erofs_superblock.describe(masked))
    return Check(name, Status.PASS)


def _explain_images(go: bytes, ref: bytes) -> str:
    try:
        from .report.explain import explain_erofs
    except ImportError:
        return f"{len(go)} vs {len(ref)} bytes"
    with tempfile.TemporaryDirectory(prefix="erofs-explain-") as d:
        gp, rp = os.path.join(d, "go.erofs"), os.path.join(d, "ref.erofs")
        Path(gp).write_bytes(go)
        Path(rp).write_bytes(ref)
        return explain_erofs(gp, rp, ("go-erofs", "ref"))


def apply_checks(case: ApplyCase, session, st=None, outcomes=(), record=None,
                 files=None) -> list[Check]:
    """Checks for one Apply case (several when the blob is each Compare output): agreement of
    containerd and the reference, then what the layer means (harness/checks/meaning.py). Go's
    results are appended to `record` as Outcomes (producer go-erofs-apply) for bisect and
    reports; `files` gets the artifacts of a failing case (images, tree listings)."""
    version = session.options.containerd
    profile = profiles.containerd_profile(version)
    jobs = []      # (label, blob path, blob bytes, descriptor)
    if case.from_compare:
        for o in outcomes:
            if o.producer == "go-erofs" and o.blob is not None and not o.error:
                blob = bytes(o.blob)
                path = os.path.join(session.base, f"blob-{uuid.uuid4().hex[:8]}")
                Path(path).write_bytes(blob)
                jobs.append((f"apply go-erofs Compare blob {o.media_type}", path, blob,
                             _descriptor(blob, case.media_type or o.media_type, case.annotations)))
    else:
        path = str(FIXTURES / case.fixture)
        blob = Path(path).read_bytes()
        label = case.name or f"{case.fixture} as {case.media_type!r}"
        jobs.append((f"apply {label}", path, blob, _descriptor(blob, case.media_type, case.annotations)))
    checks = []
    for label, path, blob, desc in jobs:
        # A fresh oracle when the last case killed it at its deadline.
        oracle = session.oracle(case.mkfs_options, case.tar_index)
        mark = mkfscheck.log_offset(oracle)
        try:
            go = go_apply(oracle, path, desc)
        except OracleTimeout as e:
            checks.append(meaning.hung(label, blob, desc, profile, e, session.environment))
            route = mediatypes.classify(desc.get("mediaType", ""), profile)
            if "go-erofs" in session.options.writers and route.kind == mediatypes.TAR:
                # the go-erofs writer does not depend on containerd's hung Apply
                checks.append(writer.check(label, blob, route, (None, None, str(e), desc),
                                           session, files))
            if record is not None:
                record.append(Outcome(producer="go-erofs-apply", media_type=label, error=str(e)))
            continue
        if record is not None:
            record.append(Outcome(producer="go-erofs-apply", media_type=label,
                                  descriptor=go[0], error=go[2]))
        try:
            ref = reference_apply(blob, desc, profile, case, timeout=session.timeout)
        except ref_apply.ApplyEngineError as e:
            checks.append(Check(label, Status.ERROR, f"the reference Apply could not run: {e}"))
            continue
        mine = [compare_apply(label, case, profile, go, ref, _explain_images)]
        mkfs = mkfscheck.check_apply_run(label, oracle, mark, ref[3])
        if mkfs is not None:
            mine.append(mkfs)
        route = ref[3].path
        tar_route = route is not None and route.kind == mediatypes.TAR
        if "meaning" in case.check and tar_route and "mkfs" in session.options.writers:
            mine.append(meaning.check(label, blob, go, oracle, session, route, files))
        if tar_route and "go-erofs" in session.options.writers:
            # every tar case: mkfs options and the case's own checks do not concern go-erofs
            mine.append(writer.check(label, blob, route, go, session, files))
        checks += mine
        if files is not None and any(c.status.failed for c in mine):
            # both images of a failing case, beside the meaning check's tree listings
            stem = meaning.file_stem(label)
            for who, image in (("go-erofs", go[1]), ("ref", ref[1])):
                if image is not None:
                    files[f"{stem}.{who}.layer.erofs"] = image
    return checks
