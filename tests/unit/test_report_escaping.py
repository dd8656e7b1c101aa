"""Reports carry data someone else wrote: Evidently's HTML must not let a string value end its inline script."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from include.mlops.monitoring import script_safe_html

PAYLOAD = "</script><script>window.__xss = 1</script><!--"


@pytest.fixture(scope="module")
def evidently_html() -> str:
    """A real Evidently 0.7 drift report whose category column holds the payload (as a validated source value
    with only a not-null check can)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(size=200), "c": rng.choice(["a", "b"], size=200)})
    cur = pd.DataFrame({"x": rng.normal(1, 1, size=200), "c": rng.choice(["a", PAYLOAD], size=200)})
    dd = DataDefinition(numerical_columns=["x"], categorical_columns=["c"])
    snap = Report([DataDriftPreset()]).run(Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, dd))
    return snap.get_html_str(as_iframe=False)


def test_evidently_writes_the_value_raw(evidently_html):
    assert PAYLOAD in evidently_html  # what the escaping is for: without it the element ends here


def test_the_inline_data_carries_no_markup_and_the_same_values(evidently_html):
    safe = script_safe_html(evidently_html)
    assert PAYLOAD not in safe
    block = safe[safe.index("<script>\n    var ") : safe.index("\n</script>", safe.index("<script>\n    var "))]
    assert "<" not in block.removeprefix("<script>")
    assert "</script" not in block
    first = re.search(r"var (\w+) = (.*);\n", block)
    data = json.loads(first.group(2))  # still the report's JSON, the payload intact as a string value
    assert PAYLOAD in json.dumps(data, ensure_ascii=False)
    outside = safe.replace(block, "")
    assert outside == evidently_html.replace(
        evidently_html[
            evidently_html.index("<script>\n    var ") : evidently_html.index(
                "\n</script>", evidently_html.index("<script>\n    var ")
            )
        ],
        "",
    )  # nothing else of the page changed


def test_an_unknown_layout_is_refused_not_written_raw():
    with pytest.raises(RuntimeError, match="no inline data block"):
        script_safe_html("<html><script>var x = 1</script></html>")
