"""zenmetry's count against Django's own: for a block of ORM work, ``zen.db.queries`` is the
number of statements Django's ``CaptureQueriesContext`` captures on the same connection, but
for the round trips Django makes without logging them (named in the README and tested here).

In this process on psycopg 3; ``test_psycopg2.py`` runs this module again on psycopg2.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import django
import pytest
from django.test import Client
from django.test.utils import CaptureQueriesContext

from support import libpq
from support.harness import Harness

# A bulk_create of one batch: Django 6 runs it alone, Django 5.2 in a transaction of its own.
BULK_CREATE = ("INSERT",) if django.VERSION >= (6,) else ("BEGIN", "INSERT", "COMMIT")

# block of zencountapp/blocks.py -> the statements Django captures, in order (first words).
AGREED = {
    "atomic": ["BEGIN", "INSERT", "COMMIT"],
    "rollback": ["BEGIN", "INSERT", "ROLLBACK"],
    "savepoints": [
        "BEGIN",
        "INSERT",
        "SAVEPOINT",
        "INSERT",
        "ROLLBACK",  # ROLLBACK TO SAVEPOINT
        "RELEASE",
        "SAVEPOINT",
        "UPDATE",
        "RELEASE",
        "COMMIT",
    ],
    "select_related": ["INSERT", "INSERT", "INSERT", "SELECT"],
    "prefetch_related": ["INSERT", "INSERT", "INSERT", "INSERT", "SELECT", "SELECT", "SELECT"],
    "bulk_create": ["INSERT", *BULK_CREATE],
    "update_or_create": [
        *("BEGIN", "SELECT", "SAVEPOINT", "INSERT", "RELEASE", "COMMIT"),  # created
        *("BEGIN", "SELECT", "UPDATE", "COMMIT"),  # updated
    ],
    "cascade_delete": [
        *["INSERT"] * 8,  # a shop, 2 products, 4 lines, a tag
        "SELECT",  # the collector: the products (lines and tags go by fast deletes)
        *("BEGIN", "DELETE", "DELETE", "DELETE", "DELETE", "COMMIT"),
    ],
    "inheritance": [
        *("BEGIN", "INSERT", "INSERT", "COMMIT"),  # the place, then the restaurant
        *("SELECT", "SELECT", "SELECT"),  # the restaurant; the place; its restaurant
        *("BEGIN", "DELETE", "DELETE", "COMMIT"),
    ],
    "transactions": ["BEGIN", "SELECT", "COMMIT"] * 6,
    "generic": [
        *("INSERT", "INSERT", "INSERT"),
        *("SELECT", "SELECT", "SELECT"),  # the tags; the first tag; its shop
        *("BEGIN", "DELETE", "COMMIT"),
    ],
}


ON_PSYCOPG2 = os.environ.get("ZEN_TEST_PG_DRIVER") == "psycopg2"
BLOCKS = (
    *AGREED,
    *("empty_atomic", "iterator", "iterator_in_atomic", "long_iterator", "select_for_update"),
)
NEW_CONNECTION = ("new_connection", "created_receiver")
"""Blocks that open a connection of their own (no trace of the one open before them)."""


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=True)


@pytest.fixture(autouse=True)
def _content_types_cached(harness: Harness) -> None:
    """The content types a block uses are looked up once per process: before, not inside it."""
    from django.contrib.contenttypes.models import ContentType

    from zencountapp.models import Shop

    ContentType.objects.get_for_model(Shop)


def _first_words(statements: list[str]) -> list[str]:
    return [statement.split()[0] for statement in statements]


def _unit_statements(zen: Harness) -> list[str]:
    trace_id = zen.unit().context.trace_id
    return [str(span.attributes["db.statement"]) for span in zen.db_spans() if span.context.trace_id == trace_id]


def _django_and_sent(client: Client, name: str) -> tuple[list[str], list[str]]:
    """Run block ``name`` in a request: what Django captured, and the round trips libpq sent on
    Django's connection during the whole request."""
    from django.db import connection

    connection.ensure_connection()
    with libpq.traced(connection.connection) as sent:
        captured = client.get(f"/count/block/{name}/").json()["django"]
    return captured, sent


class TestBlocks:
    @pytest.mark.parametrize("name", sorted(AGREED))
    def test_a_block_counts_what_django_captures(self, zen: Harness, client: Client, name: str) -> None:
        """The request's zen.db.queries is Django's count, and its DB spans are Django's
        statements, in Django's order."""
        captured = client.get(f"/count/block/{name}/").json()["django"]
        assert _first_words(captured) == AGREED[name]
        assert zen.unit().attributes["zen.db.queries"] == len(AGREED[name])
        assert _first_words(_unit_statements(zen)) == AGREED[name]

    @pytest.mark.parametrize("name", sorted(BLOCKS))
    def test_queries_are_djangos_and_round_trips_what_libpq_sent(self, zen: Harness, client: Client, name: str) -> None:
        """For every block, zen.db.queries is the number of statements Django captured, and
        zen.db.round_trips the number of exchanges libpq's own trace shows."""
        captured, sent = _django_and_sent(client, name)
        attributes = zen.unit().attributes
        assert (attributes["zen.db.queries"], attributes["zen.db.round_trips"]) == (len(captured), len(sent))

    @pytest.mark.parametrize("name", NEW_CONNECTION)
    def test_a_new_connections_queries_are_djangos(self, zen: Harness, client: Client, name: str) -> None:
        """On a connection the block opens, the set-up Django sends through the raw driver is
        no query, what a ``connection_created`` receiver executes through Django's cursor is."""
        captured = client.get(f"/count/block/{name}/").json()["django"]
        assert zen.unit().attributes["zen.db.queries"] == len(captured)

    def test_a_server_side_cursor_is_one_query_of_many_round_trips(self, zen: Harness, client: Client) -> None:
        """``iterator()`` is one statement for Django, and one query for zenmetry; for the driver it
        is DECLARE, a FETCH per chunk (2, 2, 1, then 0 rows) and CLOSE (and on psycopg 3 the
        cursor's DESCRIBE): round trips."""
        captured, sent = _django_and_sent(client, "iterator")
        assert _first_words(captured) == ["INSERT", *BULK_CREATE, "DECLARE"]
        # psycopg 3 declares with the extended protocol, then describes the cursor: two Syncs
        declared = ["DECLARE"] if ON_PSYCOPG2 else ["Sync", "Sync"]
        assert sent == ["INSERT", *BULK_CREATE, *declared, "FETCH", "FETCH", "FETCH", "FETCH", "CLOSE"]
        unit = zen.unit()
        assert (unit.attributes["zen.db.queries"], unit.attributes["zen.db.round_trips"]) == (
            2 + len(BULK_CREATE),
            len(sent),
        )
        assert _first_words(_unit_statements(zen)) == [
            *("INSERT", *BULK_CREATE),
            *("SELECT", "FETCH", "FETCH", "FETCH", "FETCH", "CLOSE"),
        ]

    def test_transactions_and_fetches_are_no_repeated_statement(self, zen: Harness, client: Client) -> None:
        """Six transactions (BEGIN and COMMIT six times each) and a cursor read in 7 chunks: no
        statement ran more than once, no repeated-query event."""
        client.get("/count/block/transactions/")
        client.get("/count/block/long_iterator/")
        transactions, iterated = zen.units()
        assert (transactions.attributes["zen.db.queries"], transactions.attributes["zen.db.round_trips"]) == (18, 18)
        described = 0 if ON_PSYCOPG2 else 1
        assert (iterated.attributes["zen.db.queries"], iterated.attributes["zen.db.round_trips"]) == (
            1 + len(BULK_CREATE) + 1,
            1 + len(BULK_CREATE) + 1 + described + 7 + 1,
        )
        for unit in (transactions, iterated):
            assert unit.attributes["zen.db.repeated_max"] == 1
            assert "zen.budget.breached" not in unit.attributes
            assert [event.name for event in unit.events] == []

    def test_a_new_connection_sets_its_time_zone_without_django_logging_it(self, zen: Harness, client: Client) -> None:
        """A connection opened in the block, its session in another zone than ``TIME_ZONE``:
        Django sends ``set_config('TimeZone', ...)`` through the raw driver and logs only the
        ORM's statement; zenmetry counts one query and both round trips."""
        captured = client.get("/count/block/new_connection/").json()["django"]
        assert _first_words(captured) == ["SELECT"]
        assert (zen.unit().attributes["zen.db.queries"], zen.unit().attributes["zen.db.round_trips"]) == (1, 2)
        assert _unit_statements(zen)[0] == "SELECT set_config('TimeZone', %s, false)"

    def test_an_empty_transaction_is_two_queries_and_no_round_trip(self, zen: Harness, client: Client) -> None:
        """``atomic()`` around nothing: Django logs BEGIN and COMMIT, and zenmetry counts them as
        Django does; the driver sends neither (it begins a transaction with its first
        statement): no round trip, no DB span."""
        captured, sent = _django_and_sent(client, "empty_atomic")
        assert (captured, sent) == (["BEGIN", "COMMIT"], [])
        assert (zen.unit().attributes["zen.db.queries"], zen.unit().attributes["zen.db.round_trips"]) == (2, 0)
        assert zen.db_spans() == []


class TestBackOffice:
    @pytest.fixture
    def shop(self, harness: Harness) -> Iterator[int]:
        from zencountapp.models import Product, Shop

        shop = Shop.objects.create(name="back office")
        Product.objects.bulk_create([Product(shop=shop, name=f"p{i}", price=i) for i in range(3)])
        yield shop.pk
        shop.delete()

    @pytest.fixture
    def admin(self, client: Client, harness: Harness) -> Iterator[Client]:
        from django.contrib.auth.models import User

        user = User.objects.create_superuser("zen-admin", password="unused")
        client.force_login(user)
        yield client
        user.delete()

    def _counted(self, zen: Harness, request: object) -> tuple[int, int, int]:
        """(Django's count, zenmetry's, the unit's DB spans) for one request, measured alone."""
        from django.db import connection

        zen.exporter.clear()
        with CaptureQueriesContext(connection) as captured:
            response = request() if callable(request) else request
        assert response.status_code in (200, 302), response.content[:500]
        spans = _unit_statements(zen)
        return len(captured.captured_queries), zen.unit().attributes["zen.db.queries"], len(spans)

    def test_the_admin_changelist(self, zen: Harness, admin: Client, shop: int) -> None:
        """The changelist, searched (session, user, 2 counts, the page): Django's count is zenmetry's."""
        django, zenmetry, spans = self._counted(zen, lambda: admin.get("/count/admin/zencountapp/shop/?q=back"))
        assert (zenmetry, spans) == (django, django)
        assert django == 5

    def test_the_admin_change_form_shown_and_saved(self, zen: Harness, admin: Client, shop: int) -> None:
        """The change form with its inline, shown, then posted (in a transaction: the shop, the
        inline's products, their updates, the admin log): the counts agree each time."""
        url = f"/count/admin/zencountapp/shop/{shop}/change/"
        django, zenmetry, spans = self._counted(zen, lambda: admin.get(url))
        assert (zenmetry, spans) == (django, django)
        assert django == 4  # session, user, shop, its products
        from zencountapp.models import Product

        products = list(Product.objects.filter(shop_id=shop).order_by("pk"))
        form = {
            "name": "back office, renamed",
            "_save": "Save",
            "product_set-TOTAL_FORMS": "3",
            "product_set-INITIAL_FORMS": "3",
            "product_set-MIN_NUM_FORMS": "0",
            "product_set-MAX_NUM_FORMS": "1000",
        }
        for i, product in enumerate(products):
            form |= {
                f"product_set-{i}-id": str(product.pk),
                f"product_set-{i}-shop": str(shop),
                f"product_set-{i}-name": f"{product.name}!",
                f"product_set-{i}-price": str(product.price + 1),
            }
        django, zenmetry, spans = self._counted(zen, lambda: admin.post(url, form))
        assert (zenmetry, spans) == (django, django)
        assert django == 14  # session, user, BEGIN, shop, 4 for the inline, 4 UPDATEs, the log, COMMIT
        from zencountapp.models import Shop

        assert Shop.objects.get(pk=shop).name == "back office, renamed"

    def test_a_model_formset_shown_and_saved(self, zen: Harness, client: Client, shop: int) -> None:
        """A model formset of 3 products and an extra form, shown, then posted with 2 changed
        and one added: the counts agree each time."""
        url = f"/count/products/{shop}/"
        django, zenmetry, spans = self._counted(zen, lambda: client.get(url))
        assert (zenmetry, spans) == (django, django)
        assert django == 1
        from zencountapp.models import Product

        products = list(Product.objects.filter(shop_id=shop).order_by("pk"))
        form = {
            "form-TOTAL_FORMS": "4",
            "form-INITIAL_FORMS": "3",
            "form-MIN_NUM_FORMS": "0",
            "form-MAX_NUM_FORMS": "1000",
        }
        for i, product in enumerate(products):
            changed = "!" if i < 2 else ""
            form |= {
                f"form-{i}-id": str(product.pk),
                f"form-{i}-name": product.name + changed,
                f"form-{i}-price": str(product.price),
            }
        form |= {"form-3-id": "", "form-3-name": "new", "form-3-price": "7"}
        django, zenmetry, spans = self._counted(zen, lambda: client.post(url, form))
        assert (zenmetry, spans) == (django, django)
        assert django == 7  # the products, one per form's id, 2 UPDATEs, an INSERT
        assert Product.objects.filter(shop_id=shop).count() == 4
