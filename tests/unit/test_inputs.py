"""Inputs that once made a traceback (found by tests/unit/test_fuzz.py): each is now loaded or
refused with a TopologyError that names the file, the document or line, the object and the field.
"""
from __future__ import annotations

import pytest

from testbed import model
from testbed.errors import TopologyError

FILE = "in.yaml"


def refused(text: str) -> TopologyError:
    with pytest.raises(TopologyError) as ei:
        model.load_text(text, file=FILE)
    e = ei.value
    assert e.file == FILE and str(e).startswith(f"{FILE}: "), str(e)
    return e


@pytest.mark.parametrize("text", [
    "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: " + "9" * 5000 + "}]}\n",
    '{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"port": '
    + "9" * 5000 + "}]}}",
])
def test_an_integer_longer_than_python_reads_is_refused_at_its_line(text):
    e = refused(text)
    assert e.obj and e.obj.startswith("line "), str(e)
    assert "at most 4300 digits" in str(e)
