"""What a scenario run produces: outcomes of each producer, a verdict, and its explanation.

Plain data only; the runner fills it, the reports read it.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Status(str, enum.Enum):
    PASS = "pass"      # the differs agree (or every difference is an expected, named quirk)
    FAIL = "fail"      # a conformance difference
    ERROR = "error"    # the engine failed (VM, oracle, tool, timeout); never a conformance result
    SKIP = "skip"      # a required capability is missing
    XFAIL = "xfail"    # a known divergence, with its quirk and upstream link
    XPASS = "xpass"    # a known divergence did not show: the registry is stale (counts as failure)

    @property
    def failed(self) -> bool:
        return self in (Status.FAIL, Status.ERROR, Status.XPASS)


@dataclass
class Outcome:
    """One producer's answer for one operation (Compare or Apply) and media type."""

    producer: str                      # "go-erofs", "go-walking", "ref@containerd-v2.4.2", "ref@spec"
    media_type: str
    descriptor: dict | None = None     # {"mediaType", "digest", "size"}
    labels: dict = field(default_factory=dict)
    blob: bytes | None = None          # the blob as stored (compressed for +gzip/+zstd)
    tar: bytes | None = None           # the decompressed layer tar
    error: str | None = None           # the producer's error text, verbatim


@dataclass
class Check:
    """One comparison inside a scenario, e.g. 'tar: go-erofs vs ref@containerd (tar+gzip)'."""

    name: str
    status: Status
    explanation: str = ""              # one screen, readable without the source
    quirks: list[str] = field(default_factory=list)
    info: bool = False                 # information only: never the scenario's headline


@dataclass
class ScenarioResult:
    scenario: str                      # scenario name, e.g. "whiteout/root-file"
    path: str                          # scenario file
    status: Status
    checks: list[Check] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    message: str = ""                  # summary line (or the error paragraph)
    duration: float = 0.0
    environment: dict = field(default_factory=dict)   # containerd, mkfs, kernel, backend, capabilities
    artifacts: str | None = None       # folder with inputs/outputs/explanations when kept
    files: dict = field(default_factory=dict)   # extra artifacts: name -> bytes or text (logs,
                                                # images, tree listings); written when kept
    phases: dict = field(default_factory=dict)  # seconds per phase (harness/phases.py)

    @staticmethod
    def worst(statuses) -> Status:
        order = [Status.ERROR, Status.XPASS, Status.FAIL, Status.XFAIL, Status.PASS, Status.SKIP]
        present = set(statuses)
        for s in order:
            if s in present:
                return s
        return Status.PASS
