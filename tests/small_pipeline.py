"""A pipeline file at test scale: real HAM10000 images at 32 px, 20 per class, for the tests
that need a pipeline's store (reuse, the notebook, the browser)."""

import textwrap

HEADER = """\
settings:
  data.path: {data}
  data.image_size: 32
  data.per_class_limit: 20
steps:
"""


def write_pipeline(tmp_path, body, *, data="none", name="p.yaml"):
    """tmp_path/name holding HEADER and `body` (the steps, as written at any indent)."""
    path = tmp_path / name
    path.write_text(HEADER.format(data=data) + textwrap.indent(textwrap.dedent(body), "  "))
    return path
