"""``python -m pipeline.settings_doc > docs/pipeline-settings.md``: every pipeline setting.

The table comes from the declarations in :mod:`pipeline.config`; a unit test
fails when the file in ``docs/`` is stale.
"""

from __future__ import annotations

import sys

from pipeline.config import markdown

if __name__ == "__main__":
    sys.stdout.write(markdown())
