"""Blocks of ORM work, each run by the view ``count/block/<name>/`` inside Django's own
``CaptureQueriesContext``: what Django counts, against what zenmetry counts for the request."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from django.db import transaction

from zencountapp.models import Line, Place, Product, Restaurant, Shop, Tag


class Undone(Exception):
    """Raised inside a block to roll a transaction back."""


def _shop(products: int = 2, lines: int = 1) -> Shop:
    shop = Shop.objects.create(name=f"shop-{uuid.uuid4().hex[:8]}")  # 1
    for i in range(products):
        product = Product.objects.create(shop=shop, name=f"p{i}", price=i)  # 1 each
        for _ in range(lines):
            Line.objects.create(product=product)  # 1 each
    return shop


def atomic() -> None:
    """BEGIN, INSERT, COMMIT."""
    with transaction.atomic():
        Shop.objects.create(name="atomic")


def rollback() -> None:
    """BEGIN, INSERT, ROLLBACK."""
    try:
        with transaction.atomic():
            Shop.objects.create(name="rolled back")
            raise Undone
    except Undone:
        pass


def savepoints() -> None:
    """BEGIN, INSERT, SAVEPOINT, INSERT, ROLLBACK TO SAVEPOINT, RELEASE SAVEPOINT, SAVEPOINT,
    UPDATE, RELEASE SAVEPOINT, COMMIT."""
    with transaction.atomic():
        shop = Shop.objects.create(name="outer")
        try:
            with transaction.atomic():
                Shop.objects.create(name="inner, undone")
                raise Undone
        except Undone:
            pass
        with transaction.atomic():
            Shop.objects.filter(pk=shop.pk).update(name="outer, renamed")


def empty_atomic() -> None:
    """No statement: the driver sends nothing, Django logs BEGIN and COMMIT."""
    with transaction.atomic():
        pass


def select_related() -> None:
    """3 INSERTs (a shop, 2 products), then 1 SELECT with a join."""
    shop = _shop(lines=0)
    for product in Product.objects.select_related("shop").filter(shop=shop):
        assert product.shop.name == shop.name


def prefetch_related() -> None:
    """3 INSERTs, a tag's INSERT (its content type is looked up once per process), then 3
    SELECTs: the shops, their products, their tags."""
    shop = _shop(lines=0)
    shop.tags.create(label="t")
    for found in Shop.objects.filter(pk=shop.pk).prefetch_related("product_set", "tags"):
        assert len(found.product_set.all()) == 2
        assert len(found.tags.all()) == 1


def bulk_create() -> None:
    """1 INSERT for the shop, then BEGIN, one INSERT of 5 rows, COMMIT."""
    shop = Shop.objects.create(name="bulk")
    Product.objects.bulk_create([Product(shop=shop, name=f"b{i}") for i in range(5)])


def update_or_create() -> None:
    """Created (BEGIN, SELECT ... FOR UPDATE, SAVEPOINT, INSERT, RELEASE, COMMIT), then
    updated (BEGIN, SELECT ... FOR UPDATE, UPDATE, COMMIT)."""
    name = f"uoc-{uuid.uuid4().hex[:8]}"
    Shop.objects.update_or_create(name=name, defaults={"name": name})
    Shop.objects.update_or_create(name=name, defaults={"name": name + "!"})


def cascade_delete() -> None:
    """A shop, 2 products with 2 lines each and a tag, deleted: the collector's SELECTs, then the
    DELETEs of lines, tags, products and the shop in one transaction."""
    shop = _shop(products=2, lines=2)
    shop.tags.create(label="t")
    shop.delete()


def inheritance() -> None:
    """A restaurant is a place: 2 INSERTs in a transaction; read back with its join; deleted
    with its parent row."""
    restaurant = Restaurant.objects.create(name="r", serves_pizza=True)
    assert Restaurant.objects.get(pk=restaurant.pk).name == "r"
    assert Place.objects.get(pk=restaurant.pk).restaurant.serves_pizza
    restaurant.delete()


def generic() -> None:
    """Tags on a shop through a generic relation: created, read both ways, deleted."""
    shop = Shop.objects.create(name="tagged")
    shop.tags.create(label="a")
    shop.tags.create(label="b")
    assert sorted(tag.label for tag in shop.tags.all()) == ["a", "b"]
    tag = Tag.objects.filter(object_id=shop.pk).order_by("pk").first()
    assert tag is not None
    assert tag.content_object == shop
    shop.tags.all().delete()


def transactions() -> None:
    """Six transactions of one SELECT each, all different: 18 round trips, each statement once.
    BEGIN and COMMIT repeat by design: not a repeated statement."""
    for model, lookup in (
        (Shop, {"name": "x"}),
        (Place, {"name": "x"}),
        (Product, {"name": "x"}),
        (Line, {"quantity": 0}),
        (Tag, {"label": "x"}),
        (Restaurant, {"serves_pizza": True}),
    ):
        with transaction.atomic():
            model.objects.filter(**lookup).exists()  # type: ignore[attr-defined]


def long_iterator() -> None:
    """12 rows read 2 at a time: 7 FETCH of one cursor are one query read in chunks, not a
    repeated statement."""
    shop = Shop.objects.create(name="long")
    Product.objects.bulk_create([Product(shop=shop, name=f"l{i}") for i in range(12)])
    assert len(list(Product.objects.filter(shop=shop).iterator(chunk_size=2))) == 12


def new_connection() -> None:
    """A new connection whose session time zone is not ``TIME_ZONE``: Django sets it through the
    raw driver (not logged), then runs the ORM's statement (logged)."""
    from django.db import connection

    options = connection.settings_dict["OPTIONS"]
    configured = options["options"]
    options["options"] = "-c TimeZone=Europe/Paris"
    try:
        connection.close()
        Shop.objects.exists()
    finally:
        options["options"] = configured
        connection.close()  # the next use connects as configured


def iterator() -> None:
    """A server-side cursor over 5 rows, 2 at a time: one statement for Django; DECLARE, 4
    FETCH (2, 2, 1 and 0 rows: the ORM reads until a fetch comes back empty) and CLOSE for the
    driver."""
    shop = Shop.objects.create(name="iterated")  # 1
    Product.objects.bulk_create([Product(shop=shop, name=f"i{i}") for i in range(5)])  # BEGIN, INSERT, COMMIT
    assert len(list(Product.objects.filter(shop=shop).iterator(chunk_size=2))) == 5


def created_receiver() -> None:
    """A new connection whose ``connection_created`` receiver sets the session up through
    Django's cursor (logged by Django, so a query), then the ORM's statement."""
    from django.db import connection
    from django.db.backends.signals import connection_created

    def set_up(sender: object, connection: object, **kwargs: object) -> None:
        with connection.cursor() as cursor:  # type: ignore[attr-defined]
            cursor.execute("SET search_path TO public")

    connection_created.connect(set_up, dispatch_uid="zen-count-created")
    try:
        connection.close()
        Shop.objects.exists()
    finally:
        connection_created.disconnect(dispatch_uid="zen-count-created")
        connection.close()  # the next use connects as usual


def iterator_in_atomic() -> None:
    """The same inside ``atomic()``: BEGIN, the shop, the products, DECLARE (a cursor without
    hold), then COMMIT; 4 FETCH and a CLOSE for the driver."""
    with transaction.atomic():
        iterator()


def select_for_update() -> None:
    """BEGIN, SELECT ... FOR UPDATE, UPDATE, COMMIT."""
    shop = Shop.objects.create(name="locked")
    with transaction.atomic():
        locked = Shop.objects.select_for_update().get(pk=shop.pk)
        Shop.objects.filter(pk=locked.pk).update(name="locked!")


BLOCKS: dict[str, Callable[[], None]] = {
    block.__name__: block
    for block in (
        atomic,
        rollback,
        savepoints,
        empty_atomic,
        select_related,
        prefetch_related,
        bulk_create,
        update_or_create,
        cascade_delete,
        inheritance,
        generic,
        transactions,
        long_iterator,
        new_connection,
        iterator,
        created_receiver,
        iterator_in_atomic,
        select_for_update,
    )
}
