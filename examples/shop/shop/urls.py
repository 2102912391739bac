from django.urls import path

from shop import views

urlpatterns = [
    path("orders/", views.order_list),
    path("orders/fixed/", views.order_list_fixed),
    path("orders/<int:pk>/", views.order_detail),
    path("orders/<int:pk>/invoice/", views.invoice),
    path("invoices/", views.invoices),
    path("catalogue/", views.catalogue),
    path("checkout/<int:pk>/", views.checkout),
    path("checkout/<int:pk>/background/", views.checkout_background),
    path("orders/<int:pk>/receipt/", views.receipt),
    path("stats/rebuild/", views.rebuild_stats),
    path("stock/sync/", views.sync_stock),
    path("report/", views.report),
    path("search/", views.search),
]
