"""``manage.py seed``: the shop's data (and its MongoDB catalogue when MONGO_URL is set)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pymongo
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from shop.models import Category, Customer, Order, OrderLine, Product


class Command(BaseCommand):
    help = "Create the example shop's customers, products and orders."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        if Order.objects.exists():
            self.stdout.write("already seeded")
            return
        categories = [Category.objects.create(name=name) for name in ("tea", "coffee", "cups")]
        products = [
            Product.objects.create(
                sku=f"SKU-{i:03}", name=f"product {i}", price=Decimal("4.50"), category=categories[i % 3]
            )
            for i in range(12)
        ]
        for i in range(12):
            customer = Customer.objects.create(name=f"customer {i}", email=f"c{i}@example.com")
            order = Order.objects.create(customer=customer)
            OrderLine.objects.bulk_create(
                [OrderLine(order=order, product=products[(i + k) % 12], quantity=k + 1) for k in range(2)]
            )
        if settings.MONGO_URL:
            with pymongo.MongoClient(settings.MONGO_URL, serverSelectionTimeoutMS=2000) as client:
                client.shop.products.insert_many(
                    [{"sku": p.sku, "name": p.name, "category": p.category_id} for p in products]
                )
        self.stdout.write("seeded 12 customers, 12 products, 12 orders")
