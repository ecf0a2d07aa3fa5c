"""JUnit XML for CI, in the dialect pytest writes (``--junitxml``):

- PASS  -> a plain <testcase>.
- FAIL  -> <failure message="first line">the explanations</failure>.
- XPASS -> <failure type="xpass" message="[XPASS(strict)] ...">, as pytest writes a strict
           xpass: the known divergence did not show, so the quirk registry is stale.
- ERROR -> <error message="first line">the error paragraph</error>.
- SKIP  -> <skipped type="pytest.skip" message="reason">.
- XFAIL -> <skipped type="pytest.xfail" message="xfail: quirk ...">, pytest's convention for
           xfail (CI tools then count it as skipped, not failed); the full explanation goes to
           <system-out>.

Suite-level <properties> carry the environment (containerd, erofs-utils, kernel, backend, ...).
classname is the scenario's folder ("whiteout" for "whiteout/root-file"), name its leaf.
"""
from __future__ import annotations

import datetime
import os
import platform
import re
import xml.etree.ElementTree as ET

from ..result import ScenarioResult, Status
from . import counts, scenario_class, short_reason

_ILLEGAL = re.compile("[^\u0009\u000a\u000d\u0020-\u007e\u0080-\ud7ff\ue000-\ufffd"
                      "\U00010000-\U0010ffff]")


def xml_text(s: object) -> str:
    """pytest's bin_xml_escape: characters XML cannot hold shown as #xNN."""
    return _ILLEGAL.sub(lambda m: f"#x{ord(m.group()):02X}", str(s))


def _explanation(r: ScenarioResult) -> str:
    shown = [c for c in r.checks if c.status != Status.PASS]
    firsts = {c.explanation.strip().splitlines()[0] for c in shown if c.explanation.strip()}
    parts = [r.message] if r.message and r.message.strip() not in firsts else []
    parts += [f"[{c.status.value}] {c.name}\n{c.explanation}".rstrip() for c in shown]
    return "\n\n".join(parts)


def testcase(r: ScenarioResult, suite_name: str) -> ET.Element:
    classname, name = scenario_class(r.scenario, suite_name)
    tc = ET.Element("testcase", classname=xml_text(classname), name=xml_text(name),
                    file=xml_text(r.path), time=f"{r.duration:.3f}")
    reason = xml_text(short_reason(r))
    if r.status == Status.FAIL:
        el = ET.SubElement(tc, "failure", message=reason or "conformance difference")
        el.text = xml_text(_explanation(r))
    elif r.status == Status.XPASS:
        el = ET.SubElement(tc, "failure", type="xpass", message="[XPASS(strict)] " + reason)
        el.text = xml_text(_explanation(r))
    elif r.status == Status.ERROR:
        el = ET.SubElement(tc, "error", message=reason or "error")
        el.text = xml_text(_explanation(r))
    elif r.status == Status.SKIP:
        ET.SubElement(tc, "skipped", type="pytest.skip", message=reason or "skipped")
    elif r.status == Status.XFAIL:
        quirks = sorted({q for c in r.checks for q in c.quirks})
        msg = "xfail: quirk " + ", ".join(quirks) if quirks else "xfail: " + reason
        ET.SubElement(tc, "skipped", type="pytest.xfail", message=xml_text(msg))
        out = ET.SubElement(tc, "system-out")
        out.text = xml_text(_explanation(r))
    if r.artifacts:
        props = ET.Element("properties")
        ET.SubElement(props, "property", name="artifacts", value=xml_text(r.artifacts))
        tc.insert(0, props)
    return tc


def build_junit(results: list[ScenarioResult], properties: dict | None = None,
                suite_name: str = "layerconf", timestamp: str | None = None) -> ET.Element:
    c = counts(results)
    suite = ET.Element(
        "testsuite", name=suite_name,
        errors=str(c[Status.ERROR]),
        failures=str(c[Status.FAIL] + c[Status.XPASS]),
        skipped=str(c[Status.SKIP] + c[Status.XFAIL]),
        tests=str(len(results)),
        time=f"{sum(r.duration for r in results):.3f}",
        timestamp=timestamp or datetime.datetime.now(datetime.timezone.utc).isoformat(),
        hostname=platform.node(),
    )
    if properties:
        props = ET.SubElement(suite, "properties")
        for k, v in properties.items():
            ET.SubElement(props, "property", name=xml_text(k),
                          value=xml_text(v if isinstance(v, str) else _flat(v)))
    for r in results:
        suite.append(testcase(r, suite_name))
    root = ET.Element("testsuites", name=suite_name)
    root.append(suite)
    return root


def _flat(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_flat(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple, set)):
        return ", ".join(_flat(x) for x in v)
    return str(v)


def write_junit(results: list[ScenarioResult], path: str, properties: dict | None = None,
                suite_name: str = "layerconf") -> str:
    root = build_junit(results, properties, suite_name)
    ET.indent(root)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b'<?xml version="1.0" encoding="utf-8"?>\n')
        f.write(ET.tostring(root, encoding="utf-8"))
    return path
