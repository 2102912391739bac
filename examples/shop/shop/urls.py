from django.urls import path

from shop import views

urlpatterns = [
    path("orders/", views.order_list),
    path("orders/fixed/", views.order_list_fixed),
    path("orders/<int:pk>/", views.order_detail),
    path("orders/<int:pk>/invoice/", views.invoice),
    path("catalogue/", views.catalogue),
    path("report/", views.report),
]
