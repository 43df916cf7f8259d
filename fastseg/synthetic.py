"""Seeded synthetic retail data: orders, customer profiles and engagement events.

One generator serves the tests, ``fastseg bench``, ``fastseg demo`` and ``scripts/gen_synthetic.py``.
It writes three Parquet files (``orders``, ``customers``, ``events``) whose shape resembles a real
retailer's history, and it is built for size: 100M orders stream to disk in row groups of
``chunk_rows`` rows while memory holds only the per-customer model and a few days of rows.

How the data is made
--------------------
The history covers ``round(years * 365.25)`` whole days ending at ``end`` (a fixed date by default,
so the output never depends on today's date). A per-customer model is drawn first:

* customers sign up over the history (a growing business, with weekly and holiday seasonality)
  or, for half of the repeat buyers and 30% of the prospects, before it (an existing base, whose
  first order in the history comes sooner the more often they buy); about 10% are prospects who
  never order. Customer ids are sequential in signup order with random gaps (they span about 1.3
  times the customer count);
* every other customer places a first order (new customers on signup or some days later), then
  repeat orders at a personal rate: most never come back, repeat buyers have lognormal rates, a
  few wholesale accounts buy hundreds of times. Two thirds of the buyers churn (stop buying)
  after an exponential lifetime;
* each customer has a basket level (lognormal basket values that differ by customer), a favourite
  category, a preferred channel, email/SMS opt-ins and an engagement level.

Rows are then made day by day, in time order. Each day's number of rows is fixed in advance (from
the seasonality and the mass of active customers) so that ``orders`` rows are written exactly. A
day's rows are: first orders of the customers acquired that day, refunds that fall due that day,
and repeat orders drawn from the customers active that day in proportion to their rates. Purchases
get a category, channel, quantity, discount (more of them on Black Friday week and December
sales) and amount. 3-8% of rows are refunds: same customer, same category and channel, dated 1-60
days after a purchase, a negative amount of at most that purchase's amount, a negative quantity,
and an ``order_id`` of their own. Order ids increase with row order (rows are sorted by time).

Events are made in the same day loop: email opens (only by opted-in customers, more by active
buyers) and clicks that follow opens; site visits and product views by active buyers and by
prospects who never buy; and funnels: part of the ``checkout_started``, ``add_to_cart``,
``product_view`` and ``site_visit`` events precede that day's web and app orders by minutes, the
rest are abandoned sessions.

Determinism
-----------
Every random draw comes from a generator seeded by ``(seed, stream, day or block)``, so the data
depends on the parameters and the seed only: not on ``chunk_rows``, not on whether customers or
events are written, and not on the machine. Draws are vectorised numpy over a day's rows; the only
Python loops run over days, customer blocks and chunks. A background thread builds and writes
the Parquet row groups while the next days are made.

``signup_ts`` of the existing base lies before the history; every ``order_ts`` and ``event_ts``
lies inside it. ``birth_date`` (7%) and ``gender`` (3%) have nulls, as real profiles do.

Contact details look like a real CRM's, mess included. ``first_name`` comes from the names of the
customer's language (English, German or French, accents and all; 3% null, a few lower-case,
upper-case or padded); ``email`` is built from the ASCII spelling of first and last name
(``anna.smith@gmail.com``, ``jsmith4821@web.de``, some ``+shop`` tags) at common and national
mail domains: 4.5% null or empty, 4% Title-Cased, 4% padded with spaces, 1.5% UPPER-CASE, 2%
not addresses at all (no ``@``, no top-level domain, a space, ``@@``, a trailing comma);
``phone`` is a number in service in the customer's country (area codes of the city, mobile
ranges), written in that country's national style (``(415) 555-2671``, ``020 7946 0958``,
``030/12345678``, ``06 12 34 56 78``) or internationally (``+44 20 7946 0958``,
``+493012345678``, ``0033 6 12 34 56 78``, ``+44 (0)20 ...``): 6.5% null or empty, 3% padded, 1%
with an extension, and about 1% not a usable number (words such as ``n/a``, or too short). The
draws come from their own stream (``_S_CONTACT``), so the other columns are as before.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from fastseg.errors import OutputError, ParameterError
from fastseg.schema import EVENT_TYPES

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "CATEGORIES",
    "CHANNELS",
    "DEFAULT_END",
    "EVENT_TYPES",
    "TAGS",
    "SyntheticDataset",
    "generate",
    "generate_frames",
]

DEFAULT_END = datetime.date(2026, 6, 30)
"""Last day of the generated history unless ``end`` is given (fixed, so output is reproducible)."""

CATEGORIES: tuple[str, ...] = (
    "Clothing",
    "Grocery",
    "Beauty & Personal Care",
    "Home & Kitchen",
    "Electronics",
    "Shoes",
    "Health & Household",
    "Toys & Games",
    "Sports & Outdoors",
    "Books",
    "Pet Supplies",
    "Baby",
    "Computers & Tablets",
    "Mobile Phones",
    "Furniture",
    "Garden & Outdoor",
    "Tools & Home Improvement",
    "Office Products",
    "Automotive",
    "Jewelry & Watches",
)
# share of orders, log price level relative to the customer's basket level, refund probability
_CATEGORY_WEIGHT = np.array(
    [12, 9, 8, 8, 6, 6, 6, 5, 5, 5, 4, 3.5, 3, 3, 2.5, 3, 3, 3, 2.5, 2.5], dtype=np.float64
)
# fmt: off
_CATEGORY_PRICE = np.array(
    [0.2, -0.4, -0.3, 0.3, 1.2, 0.5, -0.3, 0.0, 0.3, -0.6, -0.1, 0.1, 1.8, 1.7, 1.6, 0.4, 0.5,
     -0.2, 0.4, 1.0],
    dtype=np.float64,
)
_CATEGORY_REFUND = np.array(
    [0.12, 0.012, 0.03, 0.05, 0.07, 0.11, 0.02, 0.05, 0.05, 0.02, 0.02, 0.04, 0.07, 0.06, 0.06,
     0.04, 0.04, 0.03, 0.04, 0.07],
    dtype=np.float64,
)
# fmt: on

CHANNELS: tuple[str, ...] = ("web", "app", "store")
_CHANNEL_WEIGHT = np.array([0.5, 0.3, 0.2])
_STORE = 2

_EV_OPEN, _EV_CLICK, _EV_VISIT, _EV_VIEW, _EV_CART, _EV_CHECKOUT = range(6)
_EVENT_SHARE = np.array([0.24, 0.06, 0.22, 0.28, 0.12, 0.08])
# share of each funnel event type that precedes one of the day's web/app orders, and how many
# seconds before the order it happens (low, high)
_FUNNEL = (
    (_EV_CHECKOUT, 0.6, 30, 900),
    (_EV_CART, 0.5, 120, 2400),
    (_EV_VIEW, 0.3, 300, 3600),
    (_EV_VISIT, 0.2, 400, 5400),
)

TAGS: tuple[str, ...] = ("vip", "wholesale", "newsletter", "loyalty_member", "employee")
_GENDERS = ("female", "male", "other")

# (country, region, city, relative population of customers)
_LOCATIONS: tuple[tuple[str, str, str, float], ...] = (
    ("US", "California", "Los Angeles", 6.0),
    ("US", "California", "San Francisco", 3.5),
    ("US", "California", "San Diego", 2.5),
    ("US", "New York", "New York", 7.0),
    ("US", "New York", "Buffalo", 1.0),
    ("US", "Texas", "Houston", 3.5),
    ("US", "Texas", "Austin", 2.5),
    ("US", "Texas", "Dallas", 3.0),
    ("US", "Illinois", "Chicago", 4.5),
    ("US", "Florida", "Miami", 3.0),
    ("US", "Florida", "Orlando", 1.5),
    ("US", "Washington", "Seattle", 3.0),
    ("GB", "England", "London", 8.0),
    ("GB", "England", "Manchester", 2.5),
    ("GB", "England", "Birmingham", 2.5),
    ("GB", "England", "Leeds", 1.5),
    ("GB", "Scotland", "Edinburgh", 1.5),
    ("GB", "Scotland", "Glasgow", 1.5),
    ("GB", "Wales", "Cardiff", 1.0),
    ("DE", "Bayern", "München", 3.5),
    ("DE", "Bayern", "Nürnberg", 1.5),
    ("DE", "Berlin", "Berlin", 4.5),
    ("DE", "Hamburg", "Hamburg", 2.5),
    ("DE", "Nordrhein-Westfalen", "Köln", 2.0),
    ("DE", "Nordrhein-Westfalen", "Düsseldorf", 1.5),
    ("FR", "Île-de-France", "Paris", 6.0),
    ("FR", "Auvergne-Rhône-Alpes", "Lyon", 2.0),
    ("FR", "Auvergne-Rhône-Alpes", "Grenoble", 0.8),
    ("FR", "Provence-Alpes-Côte d'Azur", "Marseille", 1.8),
    ("FR", "Provence-Alpes-Côte d'Azur", "Nice", 1.0),
    ("FR", "Occitanie", "Toulouse", 1.4),
    ("CA", "Ontario", "Toronto", 4.0),
    ("CA", "Ontario", "Ottawa", 1.5),
    ("CA", "Quebec", "Montréal", 2.5),
    ("CA", "Quebec", "Quebec City", 0.8),
    ("CA", "British Columbia", "Vancouver", 2.2),
)

# relative activity by hour of day (0..23) for orders/browsing and for email opens
# fmt: off
_HOUR_WEIGHT = np.array(
    [0.15, 0.08, 0.05, 0.04, 0.05, 0.12, 0.35, 0.6, 0.85, 1.0, 1.1, 1.2, 1.35, 1.3, 1.15, 1.1,
     1.15, 1.25, 1.4, 1.6, 1.7, 1.5, 1.0, 0.5]
)
_EMAIL_HOUR_WEIGHT = np.array(
    [0.1, 0.05, 0.03, 0.03, 0.05, 0.2, 0.8, 1.6, 1.8, 1.5, 1.2, 1.1, 1.3, 1.1, 0.9, 0.9, 1.0, 1.2,
     1.4, 1.5, 1.4, 1.1, 0.6, 0.25]
)
# fmt: on
_STORE_OPEN, _STORE_HOURS = 9 * 3600, 11 * 3600  # stores open 09:00-20:00
_WEEKDAY = np.array([0.95, 0.93, 0.95, 0.98, 1.05, 1.12, 1.02])  # Monday .. Sunday
_MONTH = np.array([0.85, 0.88, 0.97, 0.97, 1.0, 0.97, 0.95, 0.98, 0.97, 1.0, 1.08, 1.35])

_DAY_US = 86_400_000_000
_ORDER_ID_BASE = 1_000_000
_CUSTOMER_ID_BASE = 100_000
_PROFILE_BLOCK = 1 << 16  # customers per profile block (fixed: chunk-size independence)

# customer tiers
_PROSPECT, _ONE_TIMER, _REPEATER, _VIP, _WHOLESALE = range(5)

# random streams: (seed, stream, day or block) -> one numpy Generator
_S_MODEL, _S_ORDERS, _S_EVENTS, _S_PROFILE, _S_CONTACT = range(5)

_MAX_ROWS = 10**11
_MAX_YEARS = 100.0

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SyntheticDataset:
    """What :func:`generate` wrote.

    Attributes
    ----------
    folder : Path
        The output folder.
    orders, customers, events : Path or None
        The Parquet files written (``customers`` / ``events`` are None when not requested).
    n_orders : int
        Rows written to ``orders`` (purchases and refunds; equals the ``orders`` argument).
    n_customers : int
        Customers in the generated population, prospects included (the rows of ``customers``
        when it is written).
    n_events : int
        Rows written to ``events`` (0 when events are not written).
    seed : int
        The seed used.
    seconds : float
        Wall time of the generation, writing included.
    """

    folder: Path
    orders: Path
    customers: Path | None
    events: Path | None
    n_orders: int
    n_customers: int
    n_events: int
    seed: int
    seconds: float


# --------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Params:
    orders: int
    customers: int
    events: int
    seed: int
    string_ids: bool
    end: datetime.date
    years: float
    with_customers: bool
    with_events: bool


def _int_param(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        msg = f"{name} must be an integer in [{low}, {high}]; got {value!r}"
        raise ParameterError(msg)
    if not low <= int(value) <= high:
        msg = f"{name} must be in [{low}, {high}]; got {value!r}"
        raise ParameterError(msg)
    return int(value)


def _bool_param(name: str, value: object) -> bool:
    if not isinstance(value, bool | np.bool_):
        msg = f"{name} must be True or False; got {value!r}"
        raise ParameterError(msg)
    return bool(value)


def _check_params(
    orders: object,
    customers: object,
    events: object,
    seed: object,
    string_ids: object,
    end: object,
    years: object,
    with_customers: object,
    with_events: object,
) -> _Params:
    n_orders = _int_param("orders", orders, 1, _MAX_ROWS)
    n_customers = (
        max(1, n_orders // 10)
        if customers is None
        else _int_param("customers", customers, 1, _MAX_ROWS)
    )
    n_events = n_orders if events is None else _int_param("events", events, 0, _MAX_ROWS)
    seed_ = _int_param("seed", seed, 0, 2**63 - 1)
    if isinstance(end, datetime.datetime):
        end = end.date()
    if not isinstance(end, datetime.date):
        msg = f"end must be a datetime.date (the last day of the history); got {end!r}"
        raise ParameterError(msg)
    if (
        isinstance(years, bool)
        or not isinstance(years, int | float | np.integer | np.floating)
        or not math.isfinite(float(years))
        or not 0.0 < float(years) <= _MAX_YEARS
    ):
        msg = f"years must be a number in (0, {_MAX_YEARS:g}]; got {years!r}"
        raise ParameterError(msg)
    n_days = max(1, round(float(years) * 365.25))
    if end.toordinal() - n_days + 1 < datetime.date(1900, 1, 1).toordinal():
        msg = f"end minus years must not be before 1900-01-01; got end={end}, years={years!r}"
        raise ParameterError(msg)
    return _Params(
        orders=n_orders,
        customers=n_customers,
        events=n_events,
        seed=seed_,
        string_ids=_bool_param("string_ids", string_ids),
        end=end,
        years=float(years),
        with_customers=_bool_param("with_customers", with_customers),
        with_events=_bool_param("with_events", with_events),
    )


# --------------------------------------------------------------------------------------------
# random helpers
# --------------------------------------------------------------------------------------------


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _cdf(weights: NDArray[np.float64]) -> NDArray[np.float64]:
    c = np.cumsum(weights, dtype=np.float64)
    return c / c[-1]


_CATEGORY_CDF = _cdf(_CATEGORY_WEIGHT)
_CHANNEL_CDF = _cdf(_CHANNEL_WEIGHT)
_HOUR_CDF = _cdf(_HOUR_WEIGHT)
_EMAIL_HOUR_CDF = _cdf(_EMAIL_HOUR_WEIGHT)
_LOCATION_CDF = _cdf(np.array([loc[3] for loc in _LOCATIONS]))


def _pick(rng: np.random.Generator, cdf: NDArray[np.float64], n: int) -> NDArray[np.int8]:
    """``n`` draws of codes 0..len(cdf)-1 with the probabilities of ``cdf`` (small tables)."""
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), cdf.size - 1).astype(
        np.int8
    )


def _seconds(rng: np.random.Generator, n: int, cdf: NDArray[np.float64] = _HOUR_CDF) -> NDArray:
    """Seconds of the day (0..86399) following an hour-of-day profile (piecewise uniform)."""
    knots = np.concatenate([[0.0], cdf])
    sec = np.interp(rng.random(n), knots, np.arange(25, dtype=np.float64) * 3600.0)
    return np.minimum(sec.astype(np.int64), 86_399)


def _time_order(sec: NDArray[np.int64]) -> NDArray[np.int64]:
    """Stable argsort of seconds of the day (a plain sort of ``sec << 32 | position``)."""
    if sec.size >= 1 << 32:
        return np.argsort(sec, kind="stable")
    key = (sec << 32) | np.arange(sec.size, dtype=np.int64)
    key.sort()
    return key & 0xFFFFFFFF


def _store_hours(sec: NDArray[np.int64]) -> NDArray[np.int64]:
    """Map seconds of the day monotonically into the store's opening hours."""
    return _STORE_OPEN + sec * _STORE_HOURS // 86_400


# --------------------------------------------------------------------------------------------
# calendar
# --------------------------------------------------------------------------------------------


def _black_friday(year: int) -> datetime.date:
    nov1 = datetime.date(year, 11, 1)
    thanksgiving = nov1 + datetime.timedelta(days=(3 - nov1.weekday()) % 7 + 21)
    return thanksgiving + datetime.timedelta(days=1)


def _calendar(start: datetime.date, n_days: int) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Daily demand multipliers (weekday, month, holidays) and promotion days."""
    d = np.datetime64(start, "D") + np.arange(n_days)
    epoch_days = d.astype(np.int64)
    weekday = (epoch_days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    month = d.astype("datetime64[M]").astype(np.int64) % 12
    # a gentle yearly wave on top of the month factors
    season = (
        _WEEKDAY[weekday] * _MONTH[month] * (1.0 + 0.03 * np.sin(2 * np.pi * epoch_days / 365.25))
    )
    promo = np.zeros(n_days, dtype=np.bool_)
    first = start.toordinal()

    def mark(day: datetime.date, factor: float, is_promo: bool = False) -> None:
        i = day.toordinal() - first
        if 0 <= i < n_days:
            season[i] *= factor
            promo[i] |= is_promo

    end = start + datetime.timedelta(days=n_days - 1)
    for year in range(start.year - 1, end.year + 1):  # a loop over years, not rows
        bf = _black_friday(year)
        for k, f in zip(range(-4, 0), (1.1, 1.15, 1.2, 0.85), strict=True):  # Mon..Thanksgiving
            mark(bf + datetime.timedelta(days=k), f, True)
        for k, f in ((0, 3.0), (1, 1.8), (2, 1.6), (3, 2.4)):  # Black Friday .. Cyber Monday
            mark(bf + datetime.timedelta(days=k), f, True)
        for dd, f in ((21, 1.2), (22, 1.25), (23, 1.2), (24, 0.7), (25, 0.3)):
            mark(datetime.date(year, 12, dd), f)
        for dd, f in ((26, 1.35), (27, 0.95), (28, 0.9), (29, 0.9), (30, 0.9), (31, 0.75)):
            mark(datetime.date(year, 12, dd), f, True)  # after-Christmas sales
        mark(datetime.date(year, 1, 1), 0.5, True)
        for dd in range(2, 8):
            mark(datetime.date(year, 1, dd), 1.05, True)
    return season, promo


# --------------------------------------------------------------------------------------------
# the customer model
# --------------------------------------------------------------------------------------------


@dataclass
class _Model:
    """Per-customer arrays (customers sorted by signup day) and the per-day plan."""

    n_days: int
    start: datetime.date
    day_us: NDArray[np.int64]  # midnight of each day, microseconds since the epoch
    promo: NDArray[np.bool_]
    ids: NDArray[np.int64]
    id_strings: pa.Array | None
    tier: NDArray[np.uint8]
    signup_day: NDArray[np.int32]  # days from the first day of the history (< 0: before it)
    first_day: NDArray[np.int32]  # n_days for prospects
    first_sec: NDArray[np.int32]
    end_day: NDArray[np.int32]  # last day the customer may buy (churn); n_days-1 if never
    basket_mu: NDArray[np.float32]
    fav_cat: NDArray[np.int8]
    main_chan: NDArray[np.int8]
    email_opt: NDArray[np.bool_]
    sms_opt: NDArray[np.bool_]
    rate: NDArray[np.float64]  # repeat-purchase rate (0 for prospects)
    browse_w: NDArray[np.float64]  # weight in the draws of browsing events
    email_w: NDArray[np.float64]  # weight in the draws of email opens (0 if not opted in)
    by_first: NDArray[np.int64]  # buyers sorted by first order day
    first_bounds: NDArray[np.int64]  # by_first[first_bounds[b]:first_bounds[b+1]] buy first on b
    signed_up: NDArray[np.int64]  # customers [0, signed_up[b]) signed up on or before day b
    repeat_slots: NDArray[np.int64]  # rows per day besides first orders (repeats + refunds)
    active_rate: NDArray[np.float64]  # sum of rates of the customers active on each day
    event_slots: NDArray[np.int64]
    browse_churned: NDArray[np.float64]  # browse_w of customers churned before each day
    email_churned: NDArray[np.float64]


_CHURNED_BROWSE = 0.15  # chance that a churned customer's drawn browse event is kept
_CHURNED_EMAIL = 0.4


def _build_model(p: _Params) -> _Model:
    rng = _rng(p.seed, _S_MODEL)
    n_days = max(1, round(p.years * 365.25))
    start = p.end - datetime.timedelta(days=n_days - 1)
    season, promo = _calendar(start, n_days)
    n = p.customers
    n_buyers = min(p.orders, max(1, round(0.9 * n)))

    # who orders, and how often: tiers and repeat-purchase rates (heavy tailed)
    buyer = np.ones(n, dtype=np.bool_)
    buyer[rng.choice(n, n - n_buyers, replace=False)] = False
    u = rng.random(n)
    z = rng.standard_normal(n)
    tier = np.full(n, _PROSPECT, dtype=np.uint8)
    tier[buyer & (u < 0.55)] = _ONE_TIMER
    tier[buyer & (u >= 0.55)] = _REPEATER
    tier[buyer & (u >= 0.55) & (z > 1.6)] = _VIP
    tier[buyer & (u >= 0.99)] = _WHOLESALE
    rate = np.select(
        [tier == _ONE_TIMER, (tier == _REPEATER) | (tier == _VIP), tier == _WHOLESALE],
        [0.004 * np.exp(0.5 * z), np.exp(1.3 * z), 6.0 * np.exp(0.8 * z)],
        0.0,
    )
    mean_rate = float(rate[buyer].mean())
    del u, z

    # when they arrive. New customers sign up during the history (a growing business) and
    # order on signup or some days later. Half of the repeat buyers (and 30% of prospects) are
    # an existing base who signed up before the history; their first order in the history
    # comes after a wait that is shorter the more often they buy.
    growth = 0.5 + np.arange(n_days) / n_days
    arrive = np.searchsorted(_cdf(growth * season), rng.random(n), side="right")
    arrive = np.minimum(arrive, n_days - 1)
    lag = np.where(rng.random(n) < 0.65, 0, rng.geometric(1 / 20, n))
    signup_day = np.where(buyer, np.maximum(arrive - lag, 0), arrive)
    existing = rng.random(n) < np.where(tier >= _REPEATER, 0.5, np.where(buyer, 0.0, 0.3))
    wait = 33.0 * mean_rate / np.maximum(rate, 1e-12)  # mean days to the next order
    cut = -np.expm1(-(n_days - 1) / wait)  # exponential wait truncated to the history
    first_wait = np.floor(-wait * np.log1p(-rng.random(n) * cut))
    first_day = np.where(existing, np.minimum(first_wait, n_days - 1), arrive)
    first_day = np.where(buyer, first_day, n_days).astype(np.int32)
    signup_day = np.where(existing, -rng.integers(1, 1096, n), signup_day).astype(np.int32)
    order = np.argsort(signup_day, kind="stable")
    buyer, tier, rate = buyer[order], tier[order], rate[order]
    signup_day, first_day = signup_day[order], first_day[order]
    del arrive, lag, existing, wait, cut, first_wait, order

    # churn: a third of buyers stay to the end, the others leave after an exponential lifetime
    life = rng.exponential(300.0, n)
    stays = rng.random(n) < 0.33
    end_day = np.where(buyer & ~stays, np.minimum(first_day + life, n_days - 1), n_days - 1).astype(
        np.int32
    )
    del life, stays

    first_sec = _seconds(rng, n)
    main_chan = _pick(rng, _CHANNEL_CDF, n)
    first_sec = np.where(main_chan == _STORE, _store_hours(first_sec), first_sec).astype(np.int32)
    fav_cat = _pick(rng, _CATEGORY_CDF, n)
    basket_mu = (
        np.log(30.0)
        + 0.45 * rng.standard_normal(n)
        + np.where(tier == _VIP, 0.3, 0.0)
        + np.where(tier == _WHOLESALE, 0.5, 0.0)
    ).astype(np.float32)
    engagement = np.exp(0.7 * rng.standard_normal(n))
    email_opt = rng.random(n) < np.where(buyer, 0.62, 0.45)
    sms_opt = rng.random(n) < np.where(email_opt, 0.35, 0.08)

    rel = np.minimum(rate / mean_rate, 20.0)
    browse_w = 0.4 * engagement * np.where(buyer, 1.0, 0.6) + 0.6 * rel
    email_w = np.where(email_opt, 0.5 * engagement + 0.3 * np.minimum(rel, 10.0), 0.0)
    del engagement

    # day plan: rows per day = first orders + slots for repeats and refunds
    signed_up = np.searchsorted(signup_day, np.arange(n_days), side="right").astype(np.int64)
    by_first = np.flatnonzero(buyer)
    by_first = by_first[np.argsort(first_day[by_first], kind="stable")]
    first_bounds = np.searchsorted(first_day[by_first], np.arange(n_days + 1), side="left")
    first_bounds = first_bounds.astype(np.int64)
    firsts_per_day = np.diff(first_bounds)

    def active(weights: NDArray[np.float64] | None) -> NDArray[np.float64]:
        """Sum of ``weights`` over buyers with first_day <= b <= end_day, for each day b."""
        fd, ed = first_day[buyer], end_day[buyer]
        w = None if weights is None else weights[buyer]
        diff = np.bincount(fd, weights=w, minlength=n_days + 1) - np.bincount(
            ed + 1, weights=w, minlength=n_days + 1
        )
        return np.maximum(np.cumsum(diff[:n_days]), 0.0)

    active_buyers = active(None)  # exact counts (float of integers)
    active_rate = np.where(active_buyers > 0.5, active(rate), 0.0)
    n_repeat = p.orders - n_buyers
    mass = active_rate * season
    if n_repeat > 0:
        repeat_slots = rng.multinomial(n_repeat, mass / mass.sum()).astype(np.int64)
    else:
        repeat_slots = np.zeros(n_days, dtype=np.int64)

    # events: spread like the day's rows, on days with at least one signed-up customer
    rows = (firsts_per_day + repeat_slots).astype(np.float64)
    event_weight = (rows + 0.25 * rows.mean()) * season * (signed_up > 0)
    event_slots = rng.multinomial(p.events, event_weight / event_weight.sum()).astype(np.int64)

    def churned(weights: NDArray[np.float64]) -> NDArray[np.float64]:
        """Sum of ``weights`` over customers whose end_day < b, for each day b."""
        return np.cumsum(np.bincount(end_day + 1, weights=weights, minlength=n_days + 1))[:n_days]

    gaps = 1 + rng.poisson(0.3, n)
    gaps[0] = 0
    ids = _CUSTOMER_ID_BASE + np.cumsum(gaps, dtype=np.int64)
    id_strings = None
    if p.string_ids:
        width = max(7, len(str(int(ids[-1]))))
        digits = pc.utf8_lpad(pc.cast(pa.array(ids), pa.string()), width=width, padding="0")
        id_strings = pc.binary_join_element_wise("C", digits, "")

    day_us = (
        np.int64(start.toordinal() - datetime.date(1970, 1, 1).toordinal())
        + np.arange(n_days, dtype=np.int64)
    ) * _DAY_US
    return _Model(
        n_days=n_days,
        start=start,
        day_us=day_us,
        promo=promo,
        ids=ids,
        id_strings=id_strings,
        tier=tier,
        signup_day=signup_day,
        first_day=first_day,
        first_sec=first_sec,
        end_day=end_day,
        basket_mu=basket_mu,
        fav_cat=fav_cat,
        main_chan=main_chan,
        email_opt=email_opt,
        sms_opt=sms_opt,
        rate=rate,
        browse_w=browse_w,
        email_w=email_w,
        by_first=by_first,
        first_bounds=first_bounds,
        signed_up=signed_up,
        repeat_slots=repeat_slots,
        active_rate=active_rate,
        event_slots=event_slots,
        browse_churned=churned(browse_w),
        email_churned=churned(email_w),
    )


_BLOCK = 64


@dataclass(frozen=True)
class _Cum:
    """Cumulative weights padded with +inf to whole blocks of 64, and each block's last value.

    ``search`` equals ``np.searchsorted(values, u, side="right")``, about twice as fast on
    arrays larger than the caches: a search in the small array of block ends, then six
    vectorised bisection steps inside one block (one or two cache lines per draw).
    """

    values: NDArray[np.float64]
    coarse: NDArray[np.float64]

    @classmethod
    def of(cls, weights: NDArray[np.float64]) -> _Cum:
        c = np.cumsum(weights, dtype=np.float64)
        values = np.concatenate([c, np.full(_BLOCK - c.size % _BLOCK, np.inf)])
        return cls(values, values[_BLOCK - 1 :: _BLOCK])

    def search(self, u: NDArray[np.float64]) -> NDArray[np.int64]:
        pos = np.searchsorted(self.coarse, u, side="right") * _BLOCK
        step = _BLOCK // 2
        while step:  # six steps, each vectorised over all draws
            pos += (self.values[pos + (step - 1)] <= u) * step
            step //= 2
        return pos


def _draw(
    rng: np.random.Generator,
    cum: _Cum,
    hi: int,
    need: int,
    keep: Callable[[NDArray[np.int64]], NDArray[np.bool_]],
    acceptance: float,
) -> NDArray[np.int64]:
    """``need`` customers from ``[0, hi)`` drawn with weights ``diff(cum.values)``, among those kept.

    Independent draws with replacement, in random order. Rejection sampling: draw from the whole
    prefix (sorted uniforms, so the binary searches stay in cache), drop those ``keep`` rejects,
    repeat until enough, then keep a random subset of ``need``. When the expected acceptance is
    tiny, draw among the kept customers directly.
    """
    if need <= 0 or hi <= 0:
        return np.empty(0, dtype=np.int64)
    prefix = cum.values[:hi]
    total = float(prefix[-1])
    parts: list[NDArray[np.int64]] = []
    got = 0
    if acceptance >= 0.02:
        for _ in range(50):
            u = np.sort(rng.random(int((need - got) / acceptance * 1.05) + 64))
            u *= total
            idx = cum.search(u)
            idx = idx[: np.searchsorted(idx, hi)]  # rounding can land one past the prefix
            idx = idx[keep(idx)]
            parts.append(idx)
            got += idx.size
            if got >= need:
                break
    if got < need:  # direct draw among the kept customers (O(hi); only near-empty active sets)
        weights = np.diff(prefix, prepend=0.0)
        cand = np.flatnonzero(keep(np.arange(hi, dtype=np.int64)) & (weights > 0))
        if cand.size == 0:  # nobody kept: draw from the whole prefix
            cand = np.flatnonzero(weights > 0)
        ccum = np.cumsum(weights[cand])
        pick = np.searchsorted(ccum, rng.random(need - got) * ccum[-1], side="right")
        parts.append(cand[np.minimum(pick, cand.size - 1)])
    drawn = np.concatenate(parts)
    return drawn[rng.permutation(drawn.size)[:need]]


_EPOCH_DAYS = 32  # the draw pools are rebuilt every this many days


@dataclass
class _Pools:
    """Customers the draws of one epoch of days can pick, with cumulative weights.

    Repeat orders draw from the buyers who can be active in the epoch (a few hundred thousand
    rows of a cache-friendly array instead of every customer). Events draw from everybody signed
    up by the epoch's end; customers who churned before it have their weights scaled down once
    here instead of being rejected on every draw.
    """

    start: int
    repeat_members: NDArray[np.int64]
    repeat_cum: _Cum
    browse_cum: _Cum | None
    email_cum: _Cum | None

    @classmethod
    def build(cls, m: _Model, t: int, with_events: bool) -> _Pools:
        last = min(t + _EPOCH_DAYS, m.n_days) - 1
        hi = int(m.signed_up[last])
        members = np.flatnonzero(
            (m.rate[:hi] > 0.0) & (m.first_day[:hi] <= last) & (m.end_day[:hi] >= t)
        )
        browse_cum = email_cum = None
        if with_events:
            gone = m.end_day[:hi] < t
            browse_cum = _Cum.of(np.where(gone, _CHURNED_BROWSE, 1.0) * m.browse_w[:hi])
            email_cum = _Cum.of(np.where(gone, _CHURNED_EMAIL, 1.0) * m.email_w[:hi])
        return cls(t, members, _Cum.of(m.rate[members]), browse_cum, email_cum)


def _draw_repeats(
    m: _Model, pools: _Pools, b: int, need: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """``need`` repeat buyers of day ``b``: active customers in proportion to their rates."""
    if need <= 0:
        return np.empty(0, dtype=np.int64)
    members = pools.repeat_members
    hb = int(np.searchsorted(members, m.signed_up[b]))
    fd, ed = m.first_day, m.end_day

    def keep(pos: NDArray[np.int64]) -> NDArray[np.bool_]:
        c = members[pos]
        return (fd[c] <= b) & (ed[c] >= b)

    acceptance = float(m.active_rate[b]) / float(pools.repeat_cum.values[hb - 1])
    return members[_draw(rng, pools.repeat_cum, hb, need, keep, acceptance)]


def _draw_engaged(
    m: _Model,
    pools: _Pools,
    b: int,
    need: int,
    rng: np.random.Generator,
    email: bool,
) -> NDArray[np.int64]:
    """``need`` customers for events of day ``b`` (email opens, or browsing sessions)."""
    cum = pools.email_cum if email else pools.browse_cum
    assert cum is not None
    q = _CHURNED_EMAIL if email else _CHURNED_BROWSE
    churned = m.email_churned if email else m.browse_churned
    hi = int(m.signed_up[b])
    t = pools.start
    ed = m.end_day

    def keep(i: NDArray[np.int64]) -> NDArray[np.bool_]:
        # those who churned during this epoch, before today, are kept with probability q
        return (ed[i] >= b) | (ed[i] < t) | (rng.random(i.size) < q)

    if need <= 0 or hi == 0:
        return np.empty(0, dtype=np.int64)
    total = float(cum.values[hi - 1])
    lost = (1.0 - q) * float(churned[b] - churned[t])
    acceptance = min(1.0, max(0.05, 1.0 - lost / total)) if total > 0 else 1.0
    return _draw(rng, cum, hi, need, keep, acceptance)


# --------------------------------------------------------------------------------------------
# one day of orders and events
# --------------------------------------------------------------------------------------------

_Cols = dict[str, NDArray[Any]]
_REFUND_KEYS = ("cust", "sec", "amount", "qty", "cat", "chan")


def _concat(parts: Sequence[_Cols]) -> _Cols:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


_QTY_CDF = _cdf(np.array([0.70, 0.21, 0.065, 0.018, 0.005, 0.002]))  # 1..6 items
_QTY_SIZE = np.arange(8, dtype=np.float64) ** 0.8  # basket size grows slower than item count
_MAX_DELAY = 60  # days from a purchase to its refund


class _Refunds:
    """Refund rows waiting for their day: per purchase day, rows sorted by due day.

    Rows are kept as one float64 matrix (columns ``_REFUND_KEYS``; every value is exact in
    float64), so a day's refunds are gathered with one concatenation.
    """

    def __init__(self) -> None:
        self._queue: deque[tuple[int, NDArray[np.int64], NDArray[np.float64]]] = deque()

    def add(self, day: int, due_day: NDArray[np.int64], rows: _Cols) -> None:
        order = np.argsort(due_day, kind="stable")
        bounds = np.searchsorted(due_day[order], np.arange(day + 1, day + _MAX_DELAY + 2))
        matrix = np.column_stack([rows[k][order].astype(np.float64) for k in _REFUND_KEYS])
        self._queue.append((day, bounds, matrix))

    def due(self, b: int) -> _Cols:
        """Refund rows dated day ``b`` (in the order of their purchases' days), and forget them."""
        while self._queue and self._queue[0][0] + _MAX_DELAY < b:
            self._queue.popleft()
        parts = []
        for day, bounds, matrix in self._queue:  # at most _MAX_DELAY purchase days
            j = b - day - 1
            if 0 <= j < _MAX_DELAY and bounds[j] < bounds[j + 1]:
                parts.append(matrix[bounds[j] : bounds[j + 1]])
        rows = np.concatenate(parts) if parts else np.empty((0, len(_REFUND_KEYS)))
        out = {k: rows[:, i].astype(np.int64) for i, k in enumerate(_REFUND_KEYS)}
        out["amount"] = rows[:, _REFUND_KEYS.index("amount")].copy()
        return out


def _orders_day(
    m: _Model, pools: _Pools, b: int, rng: np.random.Generator, pending: _Refunds
) -> tuple[_Cols, _Cols]:
    """Rows of day ``b`` sorted by time, and the day's web/app purchases (for the funnels)."""
    slots = int(m.repeat_slots[b])
    refunds = pending.due(b)
    if refunds["cust"].size > slots:  # never more rows than planned: drop the excess refunds
        refunds = {k: v[:slots] for k, v in refunds.items()}
    n_ref = refunds["cust"].size

    first = m.by_first[m.first_bounds[b] : m.first_bounds[b + 1]]
    fd = m.first_day
    rep = _draw_repeats(m, pools, b, slots - n_ref, rng)
    n_first = first.size
    cust = np.concatenate([first, rep])
    n = cust.size

    cat = m.fav_cat[cust]
    other = np.flatnonzero(rng.random(n) >= 0.45)  # 45% of purchases in the favourite category
    cat[other] = _pick(rng, _CATEGORY_CDF, other.size)
    chan = m.main_chan[cust]
    switch = n_first + np.flatnonzero(rng.random(n - n_first) < 0.2)  # first orders don't switch
    chan[switch] = _pick(rng, _CHANNEL_CDF, switch.size)
    sec = np.empty(n, dtype=np.int64)
    sec[:n_first] = m.first_sec[first]
    # repeats: the day's activity profile mapped into [lo, hi): store opening hours, and after
    # the first order when it was the same day (in a store closed by then: bought online)
    rs = _seconds(rng, n - n_first)
    rchan = chan[n_first:]
    after = np.where(fd[rep] == b, m.first_sec[rep].astype(np.int64), 0)
    rchan[(rchan == _STORE) & (after >= _STORE_OPEN + _STORE_HOURS)] = 0
    store = rchan == _STORE
    lo = np.maximum(np.where(store, _STORE_OPEN, 0), after)
    hi = np.where(store, _STORE_OPEN + _STORE_HOURS, 86_400)
    sec[n_first:] = lo + rs * (hi - lo) // 86_400

    qty = 1 + _pick(rng, _QTY_CDF, n).astype(np.int64)
    size = _QTY_SIZE[qty]
    wholesale = np.flatnonzero(m.tier[cust] == _WHOLESALE)
    qty[wholesale] += 3 + rng.poisson(14.0, wholesale.size)
    size[wholesale] = qty[wholesale] * 0.6
    gross = np.exp(m.basket_mu[cust] + _CATEGORY_PRICE[cat] + 0.5 * rng.standard_normal(n)) * size
    discount = np.zeros(n)
    disc = np.flatnonzero(rng.random(n) < (0.45 if m.promo[b] else 0.12))
    discount[disc] = np.round(gross[disc] * rng.integers(1, 7, disc.size) * 0.05, 2)  # 5%..30%
    amount = np.maximum(np.round(gross - discount, 2), 0.99)

    # some purchases are refunded later: the refund row is made now and written on its day
    r = np.flatnonzero(rng.random(n) < _CATEGORY_REFUND[cat])
    due_day = b + np.minimum(1 + rng.geometric(1 / 9, r.size), _MAX_DELAY)
    full = rng.random(r.size) < 0.65
    part = rng.uniform(0.15, 1.0, r.size)
    ref_sec = _seconds(rng, r.size)
    in_range = due_day < m.n_days
    if in_range.any():
        r, due_day, full, part, ref_sec = (a[in_range] for a in (r, due_day, full, part, ref_sec))
        new = {
            "cust": cust[r],
            "sec": np.where(chan[r] == _STORE, _store_hours(ref_sec), ref_sec),
            "amount": -np.where(full, amount[r], np.maximum(np.round(amount[r] * part, 2), 0.01)),
            "qty": -np.where(full, qty[r], np.maximum(np.round(qty[r] * part), 1)).astype(np.int64),
            "cat": cat[r],
            "chan": chan[r],
        }
        pending.add(b, due_day, new)

    all_sec = np.concatenate([sec, refunds["sec"]])
    o = _time_order(all_sec)
    rows: _Cols = {
        "cust": np.concatenate([cust, refunds["cust"]])[o],
        "ts": m.day_us[b] + all_sec[o] * 1_000_000,
        "amount": np.concatenate([amount, refunds["amount"]])[o],
        "qty": np.concatenate([qty, refunds["qty"]])[o],
        "cat": np.concatenate([cat, refunds["cat"].astype(np.int8)])[o],
        "chan": np.concatenate([chan, refunds["chan"].astype(np.int8)])[o],
        "disc": np.concatenate([discount, np.zeros(n_ref)])[o],
    }
    online = np.flatnonzero(chan != _STORE)
    return rows, {"cust": cust[online], "sec": sec[online]}


def _events_day(m: _Model, pools: _Pools, b: int, rng: np.random.Generator, buys: _Cols) -> _Cols:
    """Events of day ``b`` sorted by time (``buys``: the day's web/app purchases)."""
    counts = rng.multinomial(int(m.event_slots[b]), _EVENT_SHARE)
    hi = int(m.signed_up[b])
    assert pools.email_cum is not None
    if hi == 0 or pools.email_cum.values[hi - 1] <= 0.0:  # nobody to email yet: they visit instead
        counts[_EV_VISIT] += counts[_EV_OPEN] + counts[_EV_CLICK]
        counts[_EV_OPEN] = counts[_EV_CLICK] = 0

    opens = _draw_engaged(m, pools, b, int(counts[_EV_OPEN]), rng, email=True)
    open_sec = _seconds(rng, opens.size, _EMAIL_HOUR_CDF)
    n_click = min(int(counts[_EV_CLICK]), opens.size)
    counts[_EV_VISIT] += counts[_EV_CLICK] - n_click
    clicked = rng.choice(opens.size, n_click, replace=False)
    click_sec = np.minimum(open_sec[clicked] + rng.integers(5, 900, n_click), 86_399)

    # funnels: part of each funnel event type precedes one of the day's web/app orders
    n_buys = buys["cust"].size
    tied_cust: list[NDArray[np.int64]] = []
    tied_sec: list[NDArray[np.int64]] = []
    rest = np.zeros(len(_FUNNEL), dtype=np.int64)
    for j, (e, share, low, high) in enumerate(_FUNNEL):  # four event types, not rows
        tied = min(round(share * int(counts[e])), n_buys)
        pick = rng.choice(n_buys, tied, replace=False)
        tied_cust.append(buys["cust"][pick])
        tied_sec.append(np.maximum(buys["sec"][pick] - rng.integers(low, high, tied), 0))
        rest[j] = int(counts[e]) - tied
    # the other funnel events are sessions of browsing customers (most buy nothing that day)
    browse = _draw_engaged(m, pools, b, int(rest.sum()), rng, email=False)
    funnel_types = np.array([f[0] for f in _FUNNEL], dtype=np.int8)
    ev = np.concatenate(
        [
            np.full(opens.size, _EV_OPEN, dtype=np.int8),
            np.full(n_click, _EV_CLICK, dtype=np.int8),
            np.repeat(funnel_types, [t.size for t in tied_cust]),
            np.repeat(funnel_types, rest),
        ]
    )
    cust = np.concatenate([opens, opens[clicked], *tied_cust, browse])
    sec = np.concatenate([open_sec, click_sec, *tied_sec, _seconds(rng, browse.size)])
    o = _time_order(sec)
    return {"cust": cust[o], "ts": m.day_us[b] + sec[o] * 1_000_000, "ev": ev[o]}


# --------------------------------------------------------------------------------------------
# customer profiles, in fixed blocks
# --------------------------------------------------------------------------------------------


def _profile_block(m: _Model, seed: int, block: int, end: datetime.date) -> _Cols:
    lo = block * _PROFILE_BLOCK
    hi = min(lo + _PROFILE_BLOCK, m.ids.size)
    n = hi - lo
    rng = _rng(seed, _S_PROFILE, block)
    idx = np.arange(lo, hi, dtype=np.int64)
    tier = m.tier[lo:hi]
    signup_day = m.signup_day[lo:hi].astype(np.int64)
    first_sec = m.first_sec[lo:hi].astype(np.int64)
    before = np.maximum(first_sec - rng.integers(60, 1800, n), 0)  # signed up just before buying
    sec = np.where(signup_day == m.first_day[lo:hi], before, _seconds(rng, n))
    signup_ts = m.day_us[0] + signup_day * _DAY_US + sec * 1_000_000

    end_days = end.toordinal() - datetime.date(1970, 1, 1).toordinal()
    years_since_signup = (m.n_days - 1 - signup_day) / 365.25
    age = np.maximum(np.clip(rng.normal(41.0, 13.0, n), 18.0, 85.0), 18.0 + years_since_signup)
    birth = end_days - np.floor(age * 365.25).astype(np.int64) - rng.integers(0, 365, n)
    birth_null = rng.random(n) < 0.07
    gender = _pick(rng, _cdf(np.array([0.51, 0.47, 0.02])), n)
    gender_null = rng.random(n) < 0.03
    city = rng.random(n)
    city = np.minimum(np.searchsorted(_LOCATION_CDF, city, side="right"), len(_LOCATIONS) - 1)

    buyer = tier != _PROSPECT
    email_opt = m.email_opt[lo:hi]
    t = rng.random((n, len(TAGS)))
    tags = np.column_stack(
        [
            (tier == _VIP) & (t[:, 0] < 0.9),
            tier == _WHOLESALE,
            email_opt & (t[:, 2] < 0.6),
            buyer & (t[:, 3] < np.where(tier >= _REPEATER, 0.5, 0.15)),
            t[:, 4] < 0.004,
        ]
    )
    return {
        "cust": idx,
        "signup_ts": signup_ts,
        "birth": birth.astype(np.int32),
        "birth_null": birth_null,
        "gender": gender,
        "gender_null": gender_null,
        "city": city.astype(np.int16),
        "email_opt": email_opt,
        "sms_opt": m.sms_opt[lo:hi],
        "tags": tags,
        **_contact_codes(_rng(seed, _S_CONTACT, block), city.astype(np.int16)),
    }


# --------------------------------------------------------------------------------------------
# contact details: first name, email, phone (codes drawn per profile block, text made per chunk)
# --------------------------------------------------------------------------------------------

# first and last names by language; emails use their ASCII spelling (Zoë -> zoe, Müller -> mueller)
# fmt: off
_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "en": (
        ("James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
         "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas",
         "Sarah", "Daniel", "Karen", "Matthew", "Emily", "Oliver", "Amelia", "George", "Isla",
         "Harry", "Olivia", "Jack", "Sophie", "Noah", "Ava", "Liam", "Grace", "Zoë", "Renée",
         "Siobhán", "Seán", "Chloë", "Niamh", "Aoife", "José", "Mohammed", "Priya", "Wei"),
        ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Wilson",
         "Anderson", "Taylor", "Thomas", "Moore", "Jackson", "Martin", "Lee", "Thompson", "White",
         "Harris", "Clark", "Lewis", "Walker", "Hall", "Young", "King", "Wright", "Evans",
         "Roberts", "Murphy", "O'Brien", "Patel", "Nguyen", "Kim", "Singh", "Campbell", "Hughes",
         "Edwards", "Green", "Baker", "Kelly"),
    ),
    "de": (
        ("Lukas", "Leon", "Finn", "Jonas", "Paul", "Felix", "Maximilian", "Jürgen", "Günter",
         "Jörg", "Björn", "Uwe", "Klaus", "Stefan", "Sören", "Anna", "Lea", "Lena", "Hannah",
         "Sophie", "Marie", "Käthe", "Ursula", "Gisela", "Brigitte", "Sabine", "Katrin", "Heike",
         "Mia", "Emma"),
        ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
         "Schulz", "Hoffmann", "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder",
         "Neumann", "Schwarz", "Zimmermann", "Braun", "Krüger", "Hartmann", "Lange", "Werner",
         "Krause", "Meier", "Lehmann", "Weiß", "Groß"),
    ),
    "fr": (
        ("Jean", "Pierre", "Michel", "André", "Philippe", "François", "Étienne", "Jérôme",
         "Hélène", "Chloé", "Léa", "Camille", "Manon", "Inès", "Océane", "Maëlle", "Élodie",
         "Amélie", "Théo", "Hugo", "Lucas", "Louis", "Gabriel", "Raphaël", "Noé", "Zoé", "Gaëlle",
         "Céline", "Sébastien", "Benoît"),
        ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy",
         "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David", "Bertrand", "Roux",
         "Vincent", "Fournier", "Morel", "Girard", "André", "Lefebvre", "Mercier", "Dupont",
         "Lambert", "Bonnet", "Tremblay", "Gagnon"),
    ),
}
# fmt: on
_LANGS = tuple(_NAMES)


def _ascii(name: str) -> str:
    """The name as an email local part would spell it: lower case ASCII letters only."""
    import unicodedata

    text = name.lower().translate(str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"}))
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if "a" <= ch <= "z")


def _table(kind: int) -> tuple[tuple[str, ...], NDArray[np.int64], NDArray[np.int64]]:
    """All names of one kind (0 first, 1 last), with each language's offset and count."""
    names = [_NAMES[lang][kind] for lang in _LANGS]
    sizes = np.array([len(x) for x in names], dtype=np.int64)
    return tuple(n for group in names for n in group), np.cumsum(sizes) - sizes, sizes


_FIRST, _FIRST_AT, _FIRST_N = _table(0)
_LAST, _LAST_AT, _LAST_N = _table(1)
_FIRST_ASCII = tuple(_ascii(x) for x in _FIRST)
_LAST_ASCII = tuple(_ascii(x) for x in _LAST)


def _lang(country: str, region: str) -> int:
    if country == "DE":
        return _LANGS.index("de")
    return _LANGS.index("fr" if country == "FR" or region == "Quebec" else "en")


_LOC_LANG = np.array([_lang(c, r) for c, r, _, _ in _LOCATIONS], dtype=np.int64)

# email domains: common everywhere (with their weights), then each country's own
_MAIL_COMMON = (
    ("gmail.com", 40.0),
    ("yahoo.com", 9.0),
    ("outlook.com", 7.0),
    ("hotmail.com", 6.0),
    ("icloud.com", 5.0),
    ("aol.com", 1.5),
    ("proton.me", 1.0),
)
_MAIL_LOCAL: dict[str, tuple[str, ...]] = {
    "US": ("comcast.net", "att.net", "verizon.net", "sbcglobal.net"),
    "GB": ("hotmail.co.uk", "btinternet.com", "yahoo.co.uk", "sky.com", "googlemail.com"),
    "DE": ("web.de", "gmx.de", "t-online.de", "googlemail.com", "freenet.de"),
    "FR": ("orange.fr", "free.fr", "laposte.net", "sfr.fr", "wanadoo.fr"),
    "CA": ("rogers.com", "shaw.ca", "videotron.ca", "sympatico.ca", "bell.net"),
}
_COUNTRIES = tuple(_MAIL_LOCAL)
_DOMAINS = tuple(d for d, _ in _MAIL_COMMON) + tuple(d for c in _COUNTRIES for d in _MAIL_LOCAL[c])
_MAIL_COMMON_CDF = _cdf(np.array([w for _, w in _MAIL_COMMON]))
_MAIL_LOCAL_AT = len(_MAIL_COMMON) + np.cumsum([0, *[len(_MAIL_LOCAL[c]) for c in _COUNTRIES]])
_LOC_COUNTRY = np.array([_COUNTRIES.index(loc[0]) for loc in _LOCATIONS], dtype=np.int64)

# phone numbers: country calling code, trunk prefix and how national numbers are grouped
_DIAL = {"US": ("1", "", "nanp"), "CA": ("1", "", "nanp"), "GB": ("44", "0", "halves"),
         "DE": ("49", "0", "halves"), "FR": ("33", "0", "pairs")}  # fmt: skip
# per country its mobile ranges, per city its area codes: the leading digits of the national
# significant number, how many digits follow, and the range [low, high) those digits lie in
# (ranges in service, so that numbers written well are valid)
_Range = tuple[str, int, int, int]
_MOBILE: dict[str, tuple[_Range, ...]] = {
    "US": (),  # NANP mobiles share the area codes of their city
    "CA": (),
    "GB": tuple((lead, 6, 0, 10**6) for lead in ("7400", "7450", "7500", "7520", "7800")),
    "DE": (("151", 8, 0, 10**8), ("160", 7, 0, 10**7), ("170", 7, 0, 10**7),
           ("171", 8, 0, 10**8), ("176", 8, 0, 10**8)),
    "FR": (("6", 8, 0, 10**7), ("7", 8, 50_000_000, 10**8)),
}  # fmt: skip
_NANP = (2_000_000, 10**7)  # seven digits after the area code, the exchange not from 0 or 1
_AREA: dict[str, tuple[_Range, ...]] = {
    **{
        city: tuple((code, 7, *_NANP) for code in codes.split())
        for city, codes in (
            ("Los Angeles", "213 310 323"),
            ("San Francisco", "415 628"),
            ("San Diego", "619 858"),
            ("New York", "212 646 718 917"),
            ("Buffalo", "716"),
            ("Houston", "713 832"),
            ("Austin", "512 737"),
            ("Dallas", "214 469 972"),
            ("Chicago", "312 773"),
            ("Miami", "305 786"),
            ("Orlando", "407 321"),
            ("Seattle", "206"),
            ("Toronto", "416 647 437"),
            ("Ottawa", "613 343"),
            ("Montréal", "514 438"),
            ("Quebec City", "418 581"),
            ("Vancouver", "604 778"),
        )
    },
    "London": (("20", 8, 70_000_000, 90_000_000),),
    "Manchester": (("161", 7, 2_000_000, 10**7),),
    "Birmingham": (("121", 7, 2_000_000, 8_000_000),),
    "Leeds": (("113", 7, 2_000_000, 5_000_000),),
    "Edinburgh": (("131", 7, 2_000_000, 7_000_000),),
    "Glasgow": (("141", 7, 2_000_000, 10**7),),
    "Cardiff": (("29", 8, 20_000_000, 21_000_000),),
    "München": (("89", 8, 10_000_000, 10**8),),
    "Nürnberg": (("911", 7, 2_000_000, 10**7),),
    "Berlin": (("30", 8, 20_000_000, 10**8),),
    "Hamburg": (("40", 8, 20_000_000, 10**8),),
    "Köln": (("221", 7, 2_000_000, 10**7),),
    "Düsseldorf": (("211", 7, 2_000_000, 10**7),),
    "Paris": (("1", 8, 40_000_000, 10**8),),
    "Lyon": (("4", 8, 72_000_000, 73_000_000),),
    "Grenoble": (("4", 8, 76_000_000, 77_000_000),),
    "Marseille": (("4", 8, 91_000_000, 92_000_000),),
    "Nice": (("4", 8, 93_000_000, 94_000_000),),
    "Toulouse": (("5", 8, 61_000_000, 62_000_000),),
}


def _phone_plans() -> tuple[
    tuple[tuple[str, str, int, int, int], ...],
    NDArray[np.int64],
    NDArray[np.int64],
    NDArray[np.int64],
]:
    """Every number range once: ``(country, leading digits, digits after, low, high)``; and per
    location the offset and count of its ranges (its mobiles first, then its area codes) in
    one index array, and how many of them are mobile ranges."""
    plans: list[tuple[str, str, int, int, int]] = []
    index: list[int] = []
    at, count, mobile = [], [], []
    for country, _region, city, _w in _LOCATIONS:
        own = [(country, *m) for m in _MOBILE[country]] + [(country, *a) for a in _AREA[city]]
        at.append(len(index))
        count.append(len(own))
        mobile.append(len(_MOBILE[country]))
        for plan in own:
            if plan not in plans:
                plans.append(plan)
            index.append(plans.index(plan))
    return (
        tuple(plans),
        np.array(index, dtype=np.int64),
        np.array(at, dtype=np.int64),
        np.stack([np.array(count), np.array(mobile)]).astype(np.int64),
    )


_PLANS, _PLAN_INDEX, _PLAN_AT, _PLAN_COUNTS = _phone_plans()
_PLAN_DIGITS = np.array([p[2] for p in _PLANS], dtype=np.int64)
_PLAN_LOW = np.array([p[3] for p in _PLANS], dtype=np.int64)
_PLAN_HIGH = np.array([p[4] for p in _PLANS], dtype=np.int64)

# how a value is written: shares of each code (the text is made in _contact_text)
_FIRST_MESS = _cdf(np.array([0.92, 0.03, 0.02, 0.01, 0.02]))  # as is, null, lower, UPPER, padded
_EMAIL_STYLE = _cdf(np.array([0.30, 0.16, 0.12, 0.10, 0.05, 0.15, 0.12]))
# as is, null, empty, UPPER, Title, padded, and five ways to be invalid
_EMAIL_MESS = _cdf(np.array([0.84, 0.04, 0.005, 0.015, 0.04, 0.04, 0.004, 0.004, 0.004, 0.004, 0.004]))  # fmt: skip
# national: spaced, compact, other separator; international: +CC spaced, +CC compact, 00CC,
# +CC (0)
_PHONE_STYLE = _cdf(np.array([0.34, 0.10, 0.10, 0.20, 0.10, 0.09, 0.07]))
# as is, null, empty, padded, with an extension, letters, too short
_PHONE_MESS = _cdf(np.array([0.885, 0.06, 0.005, 0.03, 0.008, 0.006, 0.006]))


def _contact_codes(rng: np.random.Generator, city: NDArray[np.int16]) -> _Cols:
    """The draws behind one profile block's first names, emails and phone numbers (numbers
    only: the text is made by :func:`_contact_text`)."""
    n = city.size
    loc = city.astype(np.int64)
    lang = _LOC_LANG[loc]
    first = _FIRST_AT[lang] + (rng.random(n) * _FIRST_N[lang]).astype(np.int64)
    last = _LAST_AT[lang] + (rng.random(n) * _LAST_N[lang]).astype(np.int64)
    country = _LOC_COUNTRY[loc]
    local_at = _MAIL_LOCAL_AT[country]
    local_n = _MAIL_LOCAL_AT[country + 1] - local_at
    common = np.minimum(np.searchsorted(_MAIL_COMMON_CDF, rng.random(n), side="right"), len(_MAIL_COMMON) - 1)  # fmt: skip
    own = local_at + (rng.random(n) * local_n).astype(np.int64)
    domain = np.where(rng.random(n) < 0.7, common, own)
    counts, mobiles = _PLAN_COUNTS[0][loc], _PLAN_COUNTS[1][loc]
    # NANP: one range list per city; elsewhere 60% mobiles
    u = rng.random(n)
    pick_mobile = (mobiles > 0) & (rng.random(n) < 0.6)
    k = np.where(
        pick_mobile,
        (u * np.maximum(mobiles, 1)).astype(np.int64),
        mobiles + (u * (counts - mobiles)).astype(np.int64),
    )
    plan = _PLAN_INDEX[_PLAN_AT[loc] + k]
    low = _PLAN_LOW[plan]
    rest = low + (rng.random(n) * (_PLAN_HIGH[plan] - low)).astype(np.int64)
    return {
        "first": first.astype(np.int16),
        "last": last.astype(np.int16),
        "first_mess": _pick(rng, _FIRST_MESS, n),
        "mail_style": _pick(rng, _EMAIL_STYLE, n),
        "mail_num": rng.integers(1, 10_000, n).astype(np.int16),
        "mail_domain": domain.astype(np.int16),
        "mail_mess": _pick(rng, _EMAIL_MESS, n),
        "phone_plan": plan.astype(np.int16),
        "phone_rest": rest,
        "phone_style": _pick(rng, _PHONE_STYLE, n),
        "phone_mess": _pick(rng, _PHONE_MESS, n),
    }


def _contact_text(c: _Cols) -> tuple[pa.Array, pa.Array, pa.Array]:
    """``first_name``, ``email`` and ``phone`` as text from the codes of :func:`_contact_codes`."""
    import polars as pl

    cc = [_DIAL[p[0]][0] for p in _PLANS]
    trunk = [_DIAL[p[0]][1] for p in _PLANS]
    grouping = [_DIAL[p[0]][2] for p in _PLANS]
    df = pl.DataFrame(
        {
            "first": pl.Series(_FIRST).gather(c["first"].astype(np.int64)),
            "first_ascii": pl.Series(_FIRST_ASCII).gather(c["first"].astype(np.int64)),
            "last_ascii": pl.Series(_LAST_ASCII).gather(c["last"].astype(np.int64)),
            "fmess": c["first_mess"],
            "style": c["mail_style"],
            "num": c["mail_num"],
            "domain": pl.Series(_DOMAINS).gather(c["mail_domain"].astype(np.int64)),
            "mmess": c["mail_mess"],
            "cc": pl.Series(cc).gather(c["phone_plan"].astype(np.int64)),
            "trunk": pl.Series(trunk).gather(c["phone_plan"].astype(np.int64)),
            "grouping": pl.Series(grouping).gather(c["phone_plan"].astype(np.int64)),
            "lead": pl.Series([p[1] for p in _PLANS]).gather(c["phone_plan"].astype(np.int64)),
            "rest": pl.Series(c["phone_rest"])
            .cast(pl.String)
            .str.zfill(pl.Series(_PLAN_DIGITS).gather(c["phone_plan"].astype(np.int64))),
            "pstyle": c["phone_style"],
            "pmess": c["phone_mess"],
        }
    )
    return _first_names(df), _emails(df), _phones(df)


def _text(expr: pl.Expr, df: pl.DataFrame) -> pa.Array:
    return df.select(expr.alias("x")).to_series().to_arrow().cast(pa.string())


def _first_names(df: pl.DataFrame) -> pa.Array:
    import polars as pl

    name, mess = pl.col("first"), pl.col("fmess")
    expr = (
        pl.when(mess == 1)
        .then(pl.lit(None, dtype=pl.String))
        .when(mess == 2)
        .then(name.str.to_lowercase())
        .when(mess == 3)
        .then(name.str.to_uppercase())
        .when(mess == 4)
        .then(pl.concat_str(pl.lit(" "), name, pl.lit("  ")))
        .otherwise(name)
    )
    return _text(expr, df)


def _emails(df: pl.DataFrame) -> pa.Array:
    import polars as pl

    first, last, num = pl.col("first_ascii"), pl.col("last_ascii"), pl.col("num").cast(pl.String)
    style, mess, domain = pl.col("style"), pl.col("mmess"), pl.col("domain")
    # most people add a number: the plain names are taken
    maybe = pl.when(pl.col("num") >= 3000).then(num).otherwise(pl.lit(""))
    local = (
        pl.when(style == 0).then(pl.concat_str(first, pl.lit("."), last, maybe))
        .when(style == 1).then(pl.concat_str(first, last, num))
        .when(style == 2).then(pl.concat_str(first.str.slice(0, 1), last, maybe))
        .when(style == 3).then(pl.concat_str(first, pl.lit("_"), last, num))
        .when(style == 4).then(pl.concat_str(first, pl.lit("."), last, maybe, pl.lit("+shop")))
        .when(style == 5).then(pl.concat_str(first, num))
        .otherwise(pl.concat_str(last, pl.lit("."), first, maybe))
    )  # fmt: skip
    df = df.with_columns(local.alias("local"))
    local = pl.col("local")
    df = df.with_columns(pl.concat_str(local, pl.lit("@"), domain).alias("address"))
    address = pl.col("address")
    expr = (
        pl.when(mess == 0).then(address)
        .when(mess == 1).then(pl.lit(None, dtype=pl.String))
        .when(mess == 2).then(pl.lit(""))
        .when(mess == 3).then(address.str.to_uppercase())
        .when(mess == 4).then(address.str.to_titlecase())
        .when(mess == 5).then(pl.concat_str(pl.lit("  "), address, pl.lit(" ")))
        .when(mess == 6).then(pl.concat_str(local, domain))  # no @
        .when(mess == 7).then(pl.concat_str(local, pl.lit("@"), domain.str.split(".").list.first()))
        .when(mess == 8).then(pl.concat_str(first, pl.lit(" "), last, pl.lit("@"), domain))
        .when(mess == 9).then(pl.concat_str(local, pl.lit("@@"), domain))
        .otherwise(pl.concat_str(address, pl.lit(",")))
    )  # fmt: skip
    return _text(expr, df)


def _phones(df: pl.DataFrame) -> pa.Array:
    import polars as pl

    lead, rest, cc, trunk = pl.col("lead"), pl.col("rest"), pl.col("cc"), pl.col("trunk")
    nanp, pairs = pl.col("grouping") == "nanp", pl.col("grouping") == "pairs"
    df = df.with_columns(
        pl.concat_str(lead, rest).alias("nsn"), (rest.str.len_chars() // 2).alias("half")
    )
    nsn, half = pl.col("nsn"), pl.col("half")
    df = df.with_columns(
        nsn.str.slice(0, 3).alias("a"),
        nsn.str.slice(3, 3).alias("e"),
        nsn.str.slice(6, 4).alias("n4"),
        *(rest.str.slice(i, 2).alias(f"two{i}") for i in range(0, 8, 2)),
    )
    a, e, n4 = pl.col("a"), pl.col("e"), pl.col("n4")
    two = [pl.col(f"two{i}") for i in range(0, 8, 2)]
    # the national significant number grouped as people write it, and with another separator
    grouped = (
        pl.when(nanp).then(pl.concat_str(a, pl.lit("-"), e, pl.lit("-"), n4))
        .when(pairs).then(pl.concat_str(lead, pl.lit(" "), pl.concat_str(two, separator=" ")))
        .otherwise(pl.concat_str(lead, pl.lit(" "), rest.str.slice(0, half), pl.lit(" "), rest.str.slice(half)))
    )  # fmt: skip
    df = df.with_columns(grouped.alias("grouped"))
    grouped = pl.col("grouped")
    national = (
        pl.when(nanp).then(pl.concat_str(pl.lit("("), a, pl.lit(") "), e, pl.lit("-"), n4))
        .otherwise(pl.concat_str(trunk, grouped))
    )  # fmt: skip
    other = (
        pl.when(nanp).then(pl.concat_str(a, pl.lit("."), e, pl.lit("."), n4))
        .when(pairs).then(pl.concat_str(trunk, lead, pl.lit("."), pl.concat_str(two, separator=".")))
        .otherwise(pl.concat_str(trunk, lead, pl.lit("/"), rest))
    )  # fmt: skip
    df = df.with_columns(national.alias("national"), other.alias("other"))
    national, plus, style = pl.col("national"), pl.concat_str(pl.lit("+"), cc), pl.col("pstyle")
    number = (
        pl.when(style == 0).then(national)
        .when(style == 1).then(pl.concat_str(trunk, nsn))
        .when(style == 2).then(pl.col("other"))
        .when(style == 3).then(pl.concat_str(plus, pl.lit(" "), grouped))
        .when(style == 4).then(pl.concat_str(plus, nsn))
        .when(style == 5).then(pl.concat_str(pl.lit("00"), cc, pl.lit(" "), grouped))
        .when(nanp).then(pl.concat_str(pl.lit("1 "), national))
        .otherwise(pl.concat_str(plus, pl.lit(" (0)"), grouped))
    )  # fmt: skip
    df = df.with_columns(number.alias("number"))
    number, mess, num = pl.col("number"), pl.col("pmess"), pl.col("num")
    words = pl.Series(["n/a", "unknown", "see notes", "no phone"])
    expr = (
        pl.when(mess == 0).then(number)
        .when(mess == 1).then(pl.lit(None, dtype=pl.String))
        .when(mess == 2).then(pl.lit(""))
        .when(mess == 3).then(pl.concat_str(pl.lit(" "), number, pl.lit("  ")))
        .when(mess == 4).then(pl.concat_str(number, pl.lit(" ext. "), (num % 1000).cast(pl.String)))
        .when(mess == 5).then(pl.lit(words).gather(num % 4))
        .otherwise(pl.concat_str(rest.str.slice(0, 3), pl.lit("-"), rest.str.slice(3, 2)))
    )  # fmt: skip
    return _text(expr, df)


# --------------------------------------------------------------------------------------------
# arrow tables
# --------------------------------------------------------------------------------------------

_CATEGORY_ARR = pa.array(CATEGORIES, type=pa.string())
_CHANNEL_ARR = pa.array(CHANNELS, type=pa.string())
_EVENT_ARR = pa.array(EVENT_TYPES, type=pa.string())
_TAG_ARR = pa.array(TAGS, type=pa.string())
_GENDER_ARR = pa.array(_GENDERS, type=pa.string())
_COUNTRY_ARR = pa.array([loc[0] for loc in _LOCATIONS], type=pa.string())
_REGION_ARR = pa.array([loc[1] for loc in _LOCATIONS], type=pa.string())
_CITY_ARR = pa.array([loc[2] for loc in _LOCATIONS], type=pa.string())
_TS = pa.timestamp("us")


def _schemas(string_ids: bool) -> dict[str, pa.Schema]:
    cid = pa.string() if string_ids else pa.int64()
    return {
        "orders": pa.schema(
            [
                ("order_id", pa.int64()),
                ("customer_id", cid),
                ("order_ts", _TS),
                ("amount", pa.float64()),
                ("quantity", pa.int64()),
                ("category", pa.string()),
                ("channel", pa.string()),
                ("discount", pa.float64()),
            ]
        ),
        "customers": pa.schema(
            [
                ("customer_id", cid),
                ("first_name", pa.string()),
                ("email", pa.string()),
                ("phone", pa.string()),
                ("signup_ts", _TS),
                ("birth_date", pa.date32()),
                ("gender", pa.string()),
                ("country", pa.string()),
                ("region", pa.string()),
                ("city", pa.string()),
                ("email_opt_in", pa.bool_()),
                ("sms_opt_in", pa.bool_()),
                ("tags", pa.list_(pa.string())),
            ]
        ),
        "events": pa.schema([("customer_id", cid), ("event_ts", _TS), ("event", pa.string())]),
    }


class _Tables:
    """Turns buffered numpy columns into Arrow tables of the public schemas."""

    def __init__(self, m: _Model, string_ids: bool) -> None:
        self.m = m
        self.schemas = _schemas(string_ids)

    def _ids(self, cust: NDArray[np.int64]) -> pa.Array:
        if self.m.id_strings is not None:
            return self.m.id_strings.take(pa.array(cust))
        return pa.array(self.m.ids[cust])

    def orders(self, c: _Cols, row0: int) -> pa.Table:
        n = c["cust"].size
        order_id = np.arange(row0, row0 + n, dtype=np.int64) + _ORDER_ID_BASE
        return pa.Table.from_arrays(
            [
                pa.array(order_id),
                self._ids(c["cust"]),
                pa.array(c["ts"], type=_TS),
                pa.array(c["amount"]),
                pa.array(c["qty"]),
                _CATEGORY_ARR.take(pa.array(c["cat"])),
                _CHANNEL_ARR.take(pa.array(c["chan"])),
                pa.array(c["disc"]),
            ],
            schema=self.schemas["orders"],
        )

    def events(self, c: _Cols, row0: int) -> pa.Table:
        return pa.Table.from_arrays(
            [self._ids(c["cust"]), pa.array(c["ts"], type=_TS), _EVENT_ARR.take(pa.array(c["ev"]))],
            schema=self.schemas["events"],
        )

    def customers(self, c: _Cols, row0: int) -> pa.Table:
        tags = c["tags"]
        offsets = np.zeros(tags.shape[0] + 1, dtype=np.int32)
        np.cumsum(tags.sum(axis=1), out=offsets[1:])
        values = _TAG_ARR.take(pa.array(np.nonzero(tags)[1].astype(np.int8)))
        city = pa.array(c["city"])
        first_name, email, phone = _contact_text(c)
        return pa.Table.from_arrays(
            [
                self._ids(c["cust"]),
                first_name,
                email,
                phone,
                pa.array(c["signup_ts"], type=_TS),
                pa.array(c["birth"], type=pa.date32(), mask=c["birth_null"]),
                _GENDER_ARR.take(pa.array(c["gender"], mask=c["gender_null"])),
                _COUNTRY_ARR.take(city),
                _REGION_ARR.take(city),
                _CITY_ARR.take(city),
                pa.array(c["email_opt"]),
                pa.array(c["sms_opt"]),
                pa.ListArray.from_arrays(pa.array(offsets), values),
            ],
            schema=self.schemas["customers"],
        )


class _Sink:
    """Buffers rows and emits tables of exactly ``chunk_rows`` rows (the last may be shorter)."""

    def __init__(
        self,
        chunk_rows: int,
        emit: Callable[[_Cols, int], None],
        on_rows: Callable[[int], None],
    ) -> None:
        self._chunk = chunk_rows
        self._emit_cols = emit  # (columns of one chunk, index of its first row)
        self._on_rows = on_rows
        self._parts: list[_Cols] = []
        self._buffered = 0
        self.rows = 0

    def add(self, cols: _Cols) -> None:
        n = next(iter(cols.values())).shape[0]
        if n == 0:
            return
        self._parts.append(cols)
        self._buffered += n
        if self._buffered >= self._chunk:
            merged = _concat(self._parts)
            at = 0
            while self._buffered - at >= self._chunk:
                self._emit({k: v[at : at + self._chunk] for k, v in merged.items()})
                at += self._chunk
            rest = {k: v[at:] for k, v in merged.items()}
            self._buffered -= at
            self._parts = [rest] if self._buffered else []

    def finish(self) -> None:
        if self._buffered:
            self._emit(_concat(self._parts))
            self._parts, self._buffered = [], 0

    def _emit(self, cols: _Cols) -> None:
        n = next(iter(cols.values())).shape[0]
        self._emit_cols(cols, self.rows)
        self.rows += n
        self._on_rows(n)


# --------------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------------


def _run(
    p: _Params,
    make_sink: Callable[[str, Callable[[_Cols, int], pa.Table]], _Sink],
) -> tuple[_Model, dict[str, _Sink]]:
    m = _build_model(p)
    tables = _Tables(m, p.string_ids)
    sinks = {"orders": make_sink("orders", tables.orders)}
    if p.with_events:
        sinks["events"] = make_sink("events", tables.events)
    pending = _Refunds()
    pools = _Pools.build(m, 0, p.with_events)
    for b in range(m.n_days):  # one iteration per day; rows within a day are vectorised
        if b % _EPOCH_DAYS == 0 and b:
            pools = _Pools.build(m, b, p.with_events)
        rows, buys = _orders_day(m, pools, b, _rng(p.seed, _S_ORDERS, b), pending)
        sinks["orders"].add(rows)
        if p.with_events:
            sinks["events"].add(_events_day(m, pools, b, _rng(p.seed, _S_EVENTS, b), buys))
    for sink in sinks.values():
        sink.finish()
    if p.with_customers:
        sinks["customers"] = make_sink("customers", tables.customers)
        for block in range(-(-m.ids.size // _PROFILE_BLOCK)):
            sinks["customers"].add(_profile_block(m, p.seed, block, p.end))
        sinks["customers"].finish()
    return m, sinks


def generate(
    out_dir: str | os.PathLike[str],
    *,
    orders: int = 1_000_000,
    customers: int | None = None,
    events: int | None = None,
    seed: int = 0,
    string_ids: bool = False,
    end: datetime.date = DEFAULT_END,
    years: float = 3.0,
    chunk_rows: int = 1_000_000,
    with_customers: bool = True,
    with_events: bool = True,
    progress: Progress | None = None,
) -> SyntheticDataset:
    """Write a synthetic retail history to ``out_dir`` as Parquet.

    Parameters
    ----------
    out_dir : str or PathLike
        Folder to write ``orders.parquet``, ``customers.parquet`` and ``events.parquet`` into;
        created if missing. Existing files of those names are replaced (atomically, each file
        appears complete or not at all); other files are left alone.
    orders : int, default 1_000_000
        Rows of ``orders``, refunds included (exactly this many are written). At least 1.
    customers : int, optional
        Customers, prospects included (default ``max(1, orders // 10)``). About 10% are
        prospects without an order; more when there are more customers than orders.
    events : int, optional
        Rows of ``events`` (default: as many as ``orders``). At least 0.
    seed : int, default 0
        Seed; the same parameters and seed give identical files.
    string_ids : bool, default False
        Customer ids as strings ``"C0123456"`` instead of int64.
    end : datetime.date, default DEFAULT_END (2026-06-30)
        Last day of the history (a datetime is cut to its date).
    years : float, default 3.0
        Length of the history: ``round(years * 365.25)`` days ending at ``end``. In (0, 100].
    chunk_rows : int, default 1_000_000
        Rows per Parquet row group, and the unit of memory use and progress; does not change the
        data.
    with_customers, with_events : bool, default True
        Write ``customers.parquet`` / ``events.parquet``. Orders are the same either way.
    progress : callable, optional
        Called as ``progress(done_rows, total_rows)`` after each row group written, counting the
        rows of every file written.

    Returns
    -------
    SyntheticDataset
        The paths written and the row counts.

    Raises
    ------
    ParameterError
        A parameter is outside its allowed range, or ``out_dir`` is an existing file.

    Examples
    --------
    >>> ds = generate("data/demo", orders=100_000, seed=1)  # doctest: +SKIP
    >>> ds.n_orders, ds.n_customers  # doctest: +SKIP
    (100000, 10000)
    """
    t0 = time.perf_counter()
    p = _check_params(
        orders, customers, events, seed, string_ids, end, years, with_customers, with_events
    )
    chunk = _int_param("chunk_rows", chunk_rows, 1, _MAX_ROWS)
    if progress is not None and not callable(progress):
        msg = f"progress must be a callable (done_rows, total_rows) or None; got {progress!r}"
        raise ParameterError(msg)
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        msg = f"out_dir {str(folder)!r} is a file, not a folder; choose a folder to write into"
        raise ParameterError(msg)

    total = p.orders + (p.customers if p.with_customers else 0) + (p.events if p.with_events else 0)
    done = 0

    def on_rows(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    from fastseg.outputs import OutputSet

    outs = OutputSet()  # the files appear together, complete, or not at all
    kinds = (
        ["orders"]
        + (["customers"] if p.with_customers else [])
        + (["events"] if p.with_events else [])
    )
    try:
        finals = {kind: outs.add_file(folder / f"{kind}.parquet", "out_dir") for kind in kinds}
    except BaseException:
        outs.abort()  # the temporaries of the targets declared before the one that failed
        raise
    writers: dict[str, pq.ParquetWriter] = {}
    temps: dict[str, Path] = {}
    # One background thread builds the Arrow tables and writes them (in submission order, so
    # row groups keep their order) while the main thread makes the next rows. At most two
    # chunks wait, which bounds memory.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastseg-gen")
    inflight: deque[Future[None]] = deque()

    def make_sink(kind: str, build: Callable[[_Cols, int], pa.Table]) -> _Sink:
        tmp = outs.path(finals[kind])
        temps[kind] = tmp
        schema = _schemas(p.string_ids)[kind]
        writer = pq.ParquetWriter(tmp, schema, compression="zstd", compression_level=1)
        writers[kind] = writer

        def write(cols: _Cols, row0: int) -> None:
            table = build(cols, row0)
            writer.write_table(table, row_group_size=table.num_rows)

        def emit(cols: _Cols, row0: int) -> None:
            while len(inflight) >= 2:
                inflight.popleft().result()  # re-raises a failed write here
            inflight.append(pool.submit(write, cols, row0))

        return _Sink(chunk, emit, on_rows)

    try:
        m, _ = _run(p, make_sink)
        while inflight:
            inflight.popleft().result()
        for w in writers.values():
            w.close()
        outs.commit()
    except BaseException as exc:
        pool.shutdown(wait=True, cancel_futures=True)
        for w in writers.values():
            with contextlib.suppress(Exception):  # already failing: the original error matters
                w.close()
        outs.abort()
        if isinstance(exc, OSError):
            msg = f"cannot write the synthetic data into '{folder}': {exc.strerror or exc}"
            raise OutputError(msg) from None
        raise
    finally:
        pool.shutdown(wait=True)
    return SyntheticDataset(
        folder=folder,
        orders=finals["orders"],
        customers=finals.get("customers"),
        events=finals.get("events"),
        n_orders=p.orders,
        n_customers=int(m.ids.size),
        n_events=p.events if p.with_events else 0,
        seed=p.seed,
        seconds=time.perf_counter() - t0,
    )


def generate_frames(
    *,
    orders: int = 1_000_000,
    customers: int | None = None,
    events: int | None = None,
    seed: int = 0,
    string_ids: bool = False,
    end: datetime.date = DEFAULT_END,
    years: float = 3.0,
    with_customers: bool = True,
    with_events: bool = True,
) -> dict[str, pl.DataFrame]:
    """The data :func:`generate` writes, as Polars frames in memory.

    Takes the parameters of :func:`generate` (without the output folder, chunking and progress)
    and returns ``{"orders": ..., "customers": ..., "events": ...}`` (keys only for the tables
    requested), equal to reading the files :func:`generate` writes with ``pl.read_parquet``.

    Examples
    --------
    >>> frames = generate_frames(orders=10_000, seed=3)  # doctest: +SKIP
    >>> frames["orders"].height  # doctest: +SKIP
    10000
    """
    import polars as pl

    p = _check_params(
        orders, customers, events, seed, string_ids, end, years, with_customers, with_events
    )
    collected: dict[str, list[pa.Table]] = {}

    def make_sink(kind: str, build: Callable[[_Cols, int], pa.Table]) -> _Sink:
        tables = collected.setdefault(kind, [])
        return _Sink(_MAX_ROWS, lambda cols, row0: tables.append(build(cols, row0)), lambda n: None)

    _run(p, make_sink)
    schemas = _schemas(p.string_ids)
    out: dict[str, pl.DataFrame] = {}
    for kind in ("orders", "customers", "events"):
        if kind in collected:
            table = (
                pa.concat_tables(collected[kind])
                if collected[kind]
                else schemas[kind].empty_table()
            )
            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            out[kind] = frame
    return out
