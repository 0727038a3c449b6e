"""A baseline read off the TALLRec prompt itself: the share of liked items in the history it lists."""

from __future__ import annotations

import polars as pl


def history_prior(samples: pl.DataFrame, interactions: pl.DataFrame, like_threshold: float) -> list[float]:
    """Per sample, the share of its history's items the user liked (rating > like_threshold), the
    same rule that splits the prompt's liked and disliked lists; 0.5 for an empty history."""
    rows = samples.select(item_id=pl.col("history_item_ids"), user_id="user_id").with_row_index("at")
    shares = (
        rows.explode("item_id")
        .join(interactions.select("user_id", "item_id", "rating"), on=["user_id", "item_id"], how="left")
        .group_by("at")
        .agg(share=(pl.col("rating") > like_threshold).mean())
    )
    return rows.join(shares, on="at", how="left").sort("at")["share"].fill_null(0.5).to_list()
