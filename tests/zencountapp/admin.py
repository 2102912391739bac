from django.contrib import admin

from zencountapp.models import Product, Shop


class ProductInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Product
    extra = 1


@admin.register(Shop)
class ShopAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("name",)
    search_fields = ("name",)
    inlines = (ProductInline,)
