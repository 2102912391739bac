"""Views for counting round trips: a model formset, ORM blocks under Django's own count, and
psycopg 3's AsyncConnection in an async view."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.forms import modelformset_factory
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template import engines
from django.test.utils import CaptureQueriesContext

from zencountapp.blocks import BLOCKS
from zencountapp.models import Product

ProductFormSet = modelformset_factory(Product, fields=("name", "price"), extra=1)
_PAGE = engines["django"].from_string("<form method='post'>{{ formset }}</form>")


def products(request: HttpRequest, shop: int) -> HttpResponse:
    queryset = Product.objects.filter(shop_id=shop).order_by("pk")
    if request.method == "POST":
        formset = ProductFormSet(request.POST, queryset=queryset)
        if formset.is_valid():
            for product in formset.save(commit=False):
                product.shop_id = shop
                product.save()
            return HttpResponse("saved")
        return HttpResponse(str(formset.errors), status=400)
    return HttpResponse(_PAGE.render({"formset": ProductFormSet(queryset=queryset)}, request))


def block(request: HttpRequest, name: str) -> JsonResponse:
    """Run one of ``blocks.BLOCKS`` inside Django's ``CaptureQueriesContext``; return what
    Django captured."""
    with CaptureQueriesContext(connection) as captured:
        BLOCKS[name]()
    return JsonResponse({"django": [query["sql"] for query in captured.captured_queries]})


async def raw_async(request: HttpRequest, n: int) -> JsonResponse:
    """psycopg 3's ``AsyncConnection`` in an async view: n statements, a transaction
    (BEGIN, SELECT, COMMIT), a server-side cursor over 5 rows (DECLARE, FETCH of 3, FETCH of
    the rest, CLOSE): n + 7 round trips."""
    import psycopg

    database = settings.DATABASES["default"]
    async with await psycopg.AsyncConnection.connect(
        host=database["HOST"], user=database["USER"], dbname=database["NAME"], autocommit=True
    ) as conn:
        factory = conn.cursor_factory
        for i in range(n):
            await conn.execute("SELECT %s", [i])
        async with conn.transaction():
            await conn.execute("SELECT 1")
        async with conn.cursor(name="zen_async", withhold=True) as cursor:
            await cursor.execute("SELECT generate_series(1, 5)")
            rows = await cursor.fetchmany(3)
            rows += await cursor.fetchall()
    return JsonResponse({"rows": len(rows), "factory": factory.__qualname__})
