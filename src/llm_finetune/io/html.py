"""A versioned HTML page that kedro-viz previews as rendered HTML (``HTMLPreview``)."""

from __future__ import annotations

from kedro_datasets._typing import HTMLPreview
from kedro_datasets.text import TextDataset


class HTMLDataset(TextDataset):
    """kedro-datasets' ``text.TextDataset`` (UTF-8 text, versioned) plus a rendered preview."""

    def preview(self) -> HTMLPreview:
        return HTMLPreview(self.load())
