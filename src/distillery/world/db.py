"""The world's shop database: products, stock per city, and orders, each in one fixed split.

It is generated once from a fixed seed, so every process (the tools, the task generator, the
expert, a test) sees the same rows. The task seed only decides which questions are asked, never
what the shop contains.

**Splits are a property of the rows.** Every product and every order belongs to exactly one of
train / validation / test (80% / 10% / 10%), and an order only ever holds a product of its own
split. Order dates are split too: each calendar day belongs to one split, and a split's orders are
placed on its own days, so the date arithmetic a task does on an order (`add_days`) never repeats
another split's. Product prices and weights are unique across the catalogue, and no total order
weight of one split equals a product weight or total weight of another, so the unit conversions
one split's tasks run never reveal another split's rows. `ShopDB.view(split)` is the shop as
seen from one split: lookups of another split's rows find nothing (`world.tools.toolbox(split)`).

`split_of(key)` is the split of a task's canonical key (`canonical_key`). It lives here, below
the task families (`world/families.py`) and the task generator (`world/tasks.py`) that both use it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from dataclasses import dataclass
from functools import lru_cache

DB_SEED = 1729
SPLITS: tuple[str, ...] = ("train", "validation", "test")
SPLIT_SHARES = {"train": 0.8, "validation": 0.1, "test": 0.1}

ADJECTIVES = [
    "Nova", "Ember", "Polar", "Cedar", "Lunar", "Atlas", "Coral", "Delta", "Falcon", "Harbor",
    "Ivory", "Juniper", "Kestrel", "Maple", "Onyx", "Quartz", "Aspen", "Birch", "Cobalt", "Dune",
    "Echo", "Fjord", "Granite", "Hazel", "Indigo", "Jasper", "Lotus", "Meadow", "Nimbus", "Orbit",
    "Pebble", "Raven", "Sierra", "Summit", "Tundra", "Umber", "Velvet", "Willow", "Zephyr", "Saffron",
]
CATEGORIES = {
    "Lamp": "lighting", "Kettle": "kitchen", "Backpack": "outdoor", "Blender": "kitchen", "Chair": "furniture",
    "Drill": "tools", "Tent": "outdoor", "Speaker": "audio", "Scale": "kitchen", "Heater": "home",
    "Toaster": "kitchen", "Jacket": "outdoor", "Helmet": "outdoor", "Camera": "electronics", "Monitor": "electronics",
    "Keyboard": "electronics", "Mixer": "kitchen", "Fan": "home", "Desk": "furniture", "Sofa": "furniture",
    "Grill": "outdoor", "Router": "electronics", "Watch": "electronics", "Bottle": "kitchen", "Cooler": "outdoor",
}
NOUNS = list(CATEGORIES)
CITIES = [
    "Berlin", "Paris", "Tokyo", "Madrid", "Oslo", "Lima", "Cairo", "Dublin", "Vienna", "Prague", "Lisbon", "Athens",
    "Warsaw", "Seoul", "Nairobi", "Toronto", "Denver", "Austin", "Sydney", "Manila", "Quito", "Dakar", "Helsinki",
    "Boston",
]
STATUSES = ["pending", "shipped", "delivered", "cancelled"]
N_PRODUCTS = 800  # of the 1,000 adjective-noun names; the other 200 are names the shop does not carry
N_ORDERS = 2400
FIRST_DAY = dt.date(2024, 1, 1)
N_DAYS = 1000  # calendar days with a split: order dates use the first 700, date questions all of them
ORDER_DAYS = 700
MAX_QUANTITY = 12


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    category: str
    price: float  # US dollars
    weight_kg: float
    split: str


@dataclass(frozen=True)
class Order:
    order_id: str
    sku: str
    quantity: int
    city: str
    date: str  # ISO date the order was placed
    status: str
    split: str


def _counts(n: int) -> dict[str, int]:
    """Exact per-split counts for `n` rows: validation and test the same size, train the rest."""
    held_out = round(n * SPLIT_SHARES["test"])
    return {"train": n - 2 * held_out, "validation": held_out, "test": held_out}


def _assign(items: list, rng: random.Random) -> dict:
    """Each item to one split, in the exact shares (shuffled with `rng`)."""
    order = list(items)
    rng.shuffle(order)
    counts = _counts(len(order))
    out, start = {}, 0
    for split in ("test", "validation", "train"):
        for item in order[start : start + counts[split]]:
            out[item] = split
        start += counts[split]
    return out


def total_weight_kg(weight_kg: float, quantity: int) -> float:
    """An order's weight as the `calculate` tool gives it (2 decimals)."""
    return round(weight_kg * quantity, 2)


class ShopDB:
    """Products, stock per (sku, city) and orders, with the lookups the tools need.

    A view (`view(split)`) holds the same rows but finds only its own split's products, orders and
    unknown-product names; the full database (`split=None`) finds everything.
    """

    def __init__(self, products: tuple[Product, ...], stock: dict[tuple[str, str], int], orders: tuple[Order, ...],
                 missing: dict[str, str], day_split: dict[str, str], split: str | None = None):
        self.products = products
        self.stock = stock
        self.orders = orders
        self.missing = missing  # product names the shop does not carry -> split of the questions about them
        self.day_split = day_split  # ISO date -> split
        self.split = split
        self._by_sku = {p.sku: p for p in products}
        self._by_name = {p.name.lower(): p for p in products}
        self._by_order = {o.order_id: o for o in orders}
        self._missing_lower = {name.lower(): s for name, s in missing.items()}

    def view(self, split: str | None) -> ShopDB:
        """The shop as one split sees it (None: everything)."""
        if split is None:
            return self
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return _view(split)

    def _visible(self, row):
        return row if row is not None and (self.split is None or row.split == self.split) else None

    def product_by_sku(self, sku: str) -> Product | None:
        return self._visible(self._by_sku.get(sku.strip().upper()))

    def product_by_name(self, name: str) -> Product | None:
        return self._visible(self._by_name.get(" ".join(name.lower().split())))

    def order(self, order_id: str) -> Order | None:
        return self._visible(self._by_order.get(order_id.strip().upper()))

    def products_in(self, split: str) -> list[Product]:
        return [p for p in self.products if p.split == split]

    def orders_in(self, split: str) -> list[Order]:
        return [o for o in self.orders if o.split == split]

    def missing_in(self, split: str) -> list[str]:
        return sorted(name for name, s in self.missing.items() if s == split)

    def days_in(self, split: str, *, orders_only: bool = False) -> list[str]:
        days = [d for d, s in self.day_split.items() if s == split]
        if orders_only:
            last = (FIRST_DAY + dt.timedelta(days=ORDER_DAYS - 1)).isoformat()
            days = [d for d in days if d <= last]
        return sorted(days)

    def split_of_entity(self, text: str) -> str | None:
        """The split of a SKU, an order id, a product name or an unknown-product name; None if none."""
        key = " ".join(str(text).split())
        row = self._by_sku.get(key.upper()) or self._by_order.get(key.upper()) or self._by_name.get(key.lower())
        if row is not None:
            return row.split
        return self._missing_lower.get(key.lower())

    def bound_conversions(self) -> dict[tuple, str]:
        """The kg -> lb conversions the tasks on each product and order run, by split."""
        return _bound_conversions()


def canonical_number(value: float | int | str) -> float | int:
    """One spelling per number: 266, 266.0 and "266.00" are all 266; 2.50 is 2.5."""
    number = float(value)
    return int(number) if number.is_integer() else number


def stable_hash(text: str) -> int:
    """A hash that is the same on every machine and in every process (unlike `hash`)."""
    return int(hashlib.sha1(text.encode()).hexdigest(), 16)


@lru_cache(maxsize=1)
def get_db() -> ShopDB:
    """The world's database (always the same rows: generated from `DB_SEED`)."""
    rng = random.Random(DB_SEED)
    names = [f"{a} {n}" for a in ADJECTIVES for n in NOUNS]
    rng.shuffle(names)
    product_names, missing_names = names[:N_PRODUCTS], names[N_PRODUCTS:]
    product_split = _assign(product_names, rng)
    missing = _assign(missing_names, rng)
    skus = rng.sample(range(1000, 10000), N_PRODUCTS)

    prices: set[float] = set()
    weights: set[float] = set()

    def unique(low: float, high: float, taken: set[float]) -> float:
        while True:
            value = round(rng.uniform(low, high), 2)
            if value not in taken:
                taken.add(value)
                return value

    products = tuple(
        Product(sku=f"SKU-{sku}", name=name, category=CATEGORIES[name.split()[1]], price=unique(5, 400, prices),
                weight_kg=unique(0.2, 30, weights), split=product_split[name])
        for name, sku in zip(product_names, skus)
    )
    stock = {(p.sku, city): rng.randint(0, 250) for p in products for city in CITIES}

    days = [(FIRST_DAY + dt.timedelta(days=i)).isoformat() for i in range(N_DAYS)]
    day_split = {**_assign(days[:ORDER_DAYS], rng), **_assign(days[ORDER_DAYS:], rng)}

    # kg amounts that a split's tasks convert to lb: each product's weight, each order's total weight.
    kg_split: dict[float, str] = {p.weight_kg: p.split for p in products}
    by_split = {s: [p for p in products if p.split == s] for s in SPLITS}
    order_days = {s: [d for d in days[:ORDER_DAYS] if day_split[d] == s] for s in SPLITS}
    counts = _counts(N_ORDERS)
    order_splits = [s for s in SPLITS for _ in range(counts[s])]
    rng.shuffle(order_splits)
    order_ids = rng.sample(range(10000, 100000), N_ORDERS)
    orders = []
    for oid, split in zip(order_ids, order_splits):
        while True:  # an order whose total weight another split already converts is drawn again
            product, quantity = rng.choice(by_split[split]), rng.randint(1, MAX_QUANTITY)
            total = total_weight_kg(product.weight_kg, quantity)
            if kg_split.setdefault(total, split) == split:
                break
        orders.append(Order(order_id=f"ORD-{oid}", sku=product.sku, quantity=quantity, city=rng.choice(CITIES),
                            date=rng.choice(order_days[split]), status=rng.choice(STATUSES), split=split))
    return ShopDB(products=products, stock=stock, orders=tuple(orders), missing=missing, day_split=day_split)


@lru_cache(maxsize=None)
def _view(split: str) -> ShopDB:
    db = get_db()
    return ShopDB(db.products, db.stock, db.orders, db.missing, db.day_split, split=split)


@lru_cache(maxsize=1)
def _bound_conversions() -> dict[tuple, str]:
    db = get_db()
    bound: dict[tuple, str] = {}
    for p in db.products:
        bound[("convert_units", canonical_number(p.weight_kg), "kg", "lb")] = p.split
    for o in db.orders:
        weight = db._by_sku[o.sku].weight_kg
        bound[("convert_units", canonical_number(total_weight_kg(weight, o.quantity)), "kg", "lb")] = o.split
    return bound


# ---- canonical keys and the split of a key -----------------------------------------------------


def canonical_key(key: tuple) -> tuple:
    """One spelling per key: numbers normalised (266, 266.0 and "266.0" as a number are all 266),
    strings stripped of surrounding and repeated spaces."""
    out = []
    for part in key:
        if isinstance(part, bool) or part is None:
            out.append(part)
        elif isinstance(part, (int, float)):
            out.append(canonical_number(part))
        elif isinstance(part, str):
            out.append(" ".join(part.split()))
        elif isinstance(part, tuple):
            out.append(canonical_key(part))
        else:
            out.append(part)
    return tuple(out)


def _hash_split(key: tuple) -> str:
    bucket = stable_hash(repr(key)) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def split_of(key: tuple) -> str:
    """The split a task key belongs to, identical on every machine.

    Entity keys (a SKU, order id, product name or unknown-product name anywhere in the key) follow
    the entity; `("convert_units", value, from, to)` follows the product or order whose weight it
    converts, else its hash; `("add_days", date, days)` follows the day; anything else hashes.
    """
    key = canonical_key(key)
    db = get_db()
    if key and key[0] == "convert_units":
        return db.bound_conversions().get(key) or _hash_split(key)
    if key and key[0] == "add_days":
        return db.day_split.get(key[1]) or _hash_split(key)
    splits = {db.split_of_entity(part) for part in key if isinstance(part, str)} - {None}
    if len(splits) > 1:
        raise ValueError(f"key {key!r} mixes entities of splits {sorted(splits)}")
    return splits.pop() if splits else _hash_split(key)
