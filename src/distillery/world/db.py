"""The world's small shop database: products, stock per city, and orders.

It is generated once from a fixed seed, so every process (the tools, the task generator, the
expert, a test) sees the same rows. The task seed only decides which questions are asked, never
what the shop contains.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from functools import lru_cache

DB_SEED = 1729

ADJECTIVES = [
    "Nova", "Ember", "Polar", "Cedar", "Lunar", "Atlas", "Coral", "Delta",
    "Falcon", "Harbor", "Ivory", "Juniper", "Kestrel", "Maple", "Onyx", "Quartz",
]
NOUNS = ["Lamp", "Kettle", "Backpack", "Blender", "Chair", "Drill", "Tent", "Speaker", "Scale", "Heater"]
CATEGORIES = {
    "Lamp": "lighting", "Kettle": "kitchen", "Backpack": "outdoor", "Blender": "kitchen", "Chair": "furniture",
    "Drill": "tools", "Tent": "outdoor", "Speaker": "audio", "Scale": "kitchen", "Heater": "home",
}
CITIES = ["Berlin", "Paris", "Tokyo", "Madrid", "Oslo", "Lima", "Cairo", "Dublin"]
STATUSES = ["pending", "shipped", "delivered", "cancelled"]
N_PRODUCTS = 60
N_ORDERS = 400


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    category: str
    price: float  # US dollars
    weight_kg: float


@dataclass(frozen=True)
class Order:
    order_id: str
    sku: str
    quantity: int
    city: str
    date: str  # ISO date the order was placed
    status: str


class ShopDB:
    """Products, stock per (sku, city) and orders, with the lookups the tools need."""

    def __init__(self, products: tuple[Product, ...], stock: dict[tuple[str, str], int], orders: tuple[Order, ...]):
        self.products = products
        self.stock = stock
        self.orders = orders
        self._by_sku = {p.sku: p for p in products}
        self._by_name = {p.name.lower(): p for p in products}
        self._by_order = {o.order_id: o for o in orders}

    def product_by_sku(self, sku: str) -> Product | None:
        return self._by_sku.get(sku.strip().upper())

    def product_by_name(self, name: str) -> Product | None:
        return self._by_name.get(" ".join(name.lower().split()))

    def order(self, order_id: str) -> Order | None:
        return self._by_order.get(order_id.strip().upper())


@lru_cache(maxsize=1)
def get_db() -> ShopDB:
    """The world's database (always the same rows: generated from `DB_SEED`)."""
    rng = random.Random(DB_SEED)
    names = [f"{a} {n}" for a in ADJECTIVES for n in NOUNS]
    rng.shuffle(names)
    skus = rng.sample(range(1000, 10000), N_PRODUCTS)
    products = tuple(
        Product(
            sku=f"SKU-{sku}",
            name=name,
            category=CATEGORIES[name.split()[1]],
            price=round(rng.uniform(5, 400), 2),
            weight_kg=round(rng.uniform(0.2, 30), 2),
        )
        for name, sku in zip(names[:N_PRODUCTS], skus)
    )
    stock = {(p.sku, city): rng.randint(0, 250) for p in products for city in CITIES}
    start = dt.date(2024, 1, 1)
    order_ids = rng.sample(range(10000, 100000), N_ORDERS)
    orders = tuple(
        Order(
            order_id=f"ORD-{oid}",
            sku=rng.choice(products).sku,
            quantity=rng.randint(1, 12),
            city=rng.choice(CITIES),
            date=(start + dt.timedelta(days=rng.randint(0, 700))).isoformat(),
            status=rng.choice(STATUSES),
        )
        for oid in order_ids
    )
    return ShopDB(products=products, stock=stock, orders=orders)
