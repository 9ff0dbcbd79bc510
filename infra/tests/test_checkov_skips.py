"""Every checkov skip names a check and says why."""

import re

from conftest import INFRA

SKIP = re.compile(r"#\s*checkov:skip=([^:\s]*)(?::(.*))?")


def test_every_skip_is_justified():
    skips = []
    for tf in sorted(INFRA.rglob("*.tf")):
        for n, line in enumerate(tf.read_text().splitlines(), 1):
            m = SKIP.search(line)
            if m:
                check, reason = m.group(1), (m.group(2) or "").strip()
                where = f"{tf.relative_to(INFRA)}:{n}"
                assert re.fullmatch(r"CKV2?_[A-Z]+_\d+", check), f"{where}: bad check id {check!r}"
                assert len(reason) >= 40, f"{where}: skip of {check} needs a reason"
                skips.append(check)
    assert skips, "expected the documented skips"


def test_no_blanket_skips():
    for tf in INFRA.rglob("*.tf"):
        text = tf.read_text()
        assert "skip-check" not in text and "checkov:skip=all" not in text.lower(), tf
