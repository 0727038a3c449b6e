"""The `textualize` section: how items and users are written as text."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from recpipe.params.core import Strict


class TextualizeParams(Strict):
    article_first: bool = Field(
        True,
        description='Move a trailing article to the front of titles: "Usual Suspects, The" becomes "The Usual Suspects".',
    )


Textualize = Annotated[
    TextualizeParams, Field(default_factory=TextualizeParams, description="How items and users are written as text.")
]
